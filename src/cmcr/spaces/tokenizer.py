"""Byte-level BPE tokenizer files for the toy spaces, with whole-word merges for a known vocabulary.

transformers' ``CLIPTokenizer`` and ``RobertaTokenizer`` read a ``vocab.json`` + ``merges.txt``.
With the 256 byte symbols every string can be encoded; merge chains for the world's words make
each known word one token (CLIP style: ``bell</w>``; RoBERTa style: ``Ġbell``), so the toy text
towers see words, as real ones do, and learn in minutes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

CLIP_SPECIALS = ["<|startoftext|>", "<|endoftext|>"]
ROBERTA_SPECIALS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]


def byte_symbols() -> list[str]:
    """GPT-2's reversible byte -> printable character table: the 256 base BPE symbols."""
    printable = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
                 + list(range(ord("®"), ord("ÿ") + 1)))
    codes, extra = [], 0
    for byte in range(256):
        if byte in printable:
            codes.append(byte)
        else:
            codes.append(256 + extra)
            extra += 1
    return [chr(code) for code in codes]


def _word_symbols(word: str, style: str) -> list[str]:
    if style == "clip":
        return list(word[:-1]) + [word[-1] + "</w>"]
    return list(word)


def word_merges(words: Iterable[str], style: str) -> tuple[list[str], list[str]]:
    """Left-to-right merge chains turning each word into one symbol: (merges, new symbols)."""
    merges: list[str] = []
    symbols: list[str] = []
    seen: set[tuple[str, str]] = set()
    variants = [w for word in words for w in ([word] if style == "clip" else [word, "Ġ" + word])]
    for word in variants:
        parts = ["Ġ"] + list(word[1:]) if word.startswith("Ġ") else _word_symbols(word, style)
        current = parts[0]
        for part in parts[1:]:
            if (current, part) not in seen:
                seen.add((current, part))
                merges.append(f"{current} {part}")
                symbols.append(current + part)
            current += part
    return merges, symbols


def write_bpe_files(directory: str | Path, words: Iterable[str] = (), style: str = "clip") -> Path:
    """Write ``vocab.json`` and ``merges.txt`` (``style`` "clip" or "roberta") to ``directory``."""
    if style not in ("clip", "roberta"):
        raise ValueError(f"style must be 'clip' or 'roberta', got {style!r}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    base = byte_symbols()
    merges, merged = word_merges(sorted({w.lower() for w in words if w}), style)
    if style == "clip":
        vocab = base + [s + "</w>" for s in base] + merged + CLIP_SPECIALS
    else:
        vocab = ROBERTA_SPECIALS + base + merged
    unique = list(dict.fromkeys(vocab))
    (directory / "vocab.json").write_text(json.dumps({s: i for i, s in enumerate(unique)}),
                                          encoding="utf-8")
    (directory / "merges.txt").write_text("#version: 0.2\n" + "".join(m + "\n" for m in merges),
                                          encoding="utf-8")
    return directory
