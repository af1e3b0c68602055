"""Atomic file writes: a file appears whole under its name, or not at all; append-only logs
read back without the last line an interrupted write cut short."""

from __future__ import annotations

import hashlib
import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Any, Iterator


@contextlib.contextmanager
def atomic_file(path: Path, temporary: Path | None = None) -> Iterator[Path]:
    """Yield a temporary name to write (``PATH.tmp`` unless given); it replaces ``path`` when
    the block ends, and is removed when the write fails (a full disk leaves no partial file)."""
    tmp = temporary if temporary is not None else path.with_name(path.name + ".tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    with atomic_file(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def read_json_records(path: Path, error: type[Exception], fix: str) -> list[dict[str, Any]]:
    """The JSON object on each non-blank line of an append-only log. A last line cut short (a
    kill or a full disk mid-write: no newline after it) is dropped with a warning, as its
    record was never complete; a bad line before it raises ``error`` naming the file, the line
    and ``fix``."""
    lines = path.read_bytes().split(b"\n")
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except (ValueError, RecursionError):  # ValueError: bad JSON or not UTF-8
            record = None
        if isinstance(record, dict):
            records.append(record)
        elif number == len(lines):  # no newline after it: an unfinished last write
            print(f"cmcr: warning: {path}, line {number}: dropped a last line cut short (an "
                  "interrupted write)", file=sys.stderr)
        else:
            raise error(f"{path}, line {number}: not a JSON record; {fix}")
    return records


def file_sha256(path: str | Path) -> str:
    """The sha256 of a file, read in 1 MiB blocks (OSError when it cannot be read)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
