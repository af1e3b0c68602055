"""LAION-CLAP's own checkpoints (``630k-fusion-best.pt``, ...) -> a transformers ``ClapModel`` folder.

The published ``.pt`` files hold LAION-CLAP's HTSAT audio tower and RoBERTa text tower, the
architecture transformers' ``ClapModel`` implements layer for layer (transformers' CLAP checkpoints
were converted from these files). :func:`convert_laion_clap` reads a file with
``torch.load(weights_only=True)`` (tensors only), renames every key by the rules below, refuses any
key it does not know and any the model lacks, checks the file's frozen mel filter bank against the
front end it writes, and saves a folder that ``clap:DIR`` loads. Sizes (HTSAT-tiny or -base, fused
or not, projection width) are read off the tensors' shapes.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cmcr.errors import CheckpointError, ConfigError
from cmcr.data.weights import bounded
from cmcr.data.weights import read_torch_state
from cmcr.spaces.base import load_pretrained, quiet_transformers, require_transformers
from cmcr.spaces.clap import LAION_INT16_AUDIO
from cmcr.data.weights import check_finite
from cmcr.data.atomic import file_sha256

# The audio settings of every LAION-CLAP HTSAT model (its model_configs/HTSAT-*.json "audio_cfg"):
# 48 kHz, hop 480, 10 s clips, 64 mel bins from 50 to 14000 Hz. The window length is read off the
# checkpoint's STFT kernel; the mel bins and frequencies are checked against its filter bank.
SAMPLE_RATE, HOP_LENGTH, CLIP_SECONDS, FREQUENCY_MIN, FREQUENCY_MAX = 48000, 480, 10, 50, 14000
SPEC_SIZE = 256  # HTSAT's square input (laion_clap's create_htsat_model, every size)
# RoBERTa as laion_clap builds it (roberta-base's config): 64-wide heads, these ids and epsilon
ROBERTA_HEAD_WIDTH = 64
ROBERTA_TEXT = {"layer_norm_eps": 1e-5, "hidden_act": "gelu", "pad_token_id": 1,
                "bos_token_id": 0, "eos_token_id": 2}
SOURCE_FILE = "laion_clap_source.json"

# Keys the embeddings do not use: the STFT and mel kernels (the feature extractor computes the
# same, checked by check_filter_bank), HTSAT's tagging head, the training-only MLPs, buffers
# that transformers recomputes (shifted-window masks, position ids).
DROPPED = (r"audio_branch\.spectrogram_extractor\.stft\.conv_(real|imag)\.weight",
           r"audio_branch\.logmel_extractor\.melW",
           r"audio_branch\.(tscam_conv|head)\.(weight|bias)",
           r"(audio|text)_transform\.sequential\.\d+\.(weight|bias)",
           r"audio_branch\.layers\.\d+\.blocks\.\d+\.attn_mask",
           r"text_branch\.embeddings\.position_ids")
# LAION name -> transformers name, applied in order to each key (an HTSAT block's fused qkv is
# split into query, key, value after renaming)
RENAMES = ((r"^text_branch\.", "text_model."),
           (r"^(audio|text)_projection\.0\.", r"\1_projection.linear1."),
           (r"^(audio|text)_projection\.2\.", r"\1_projection.linear2."),
           (r"^audio_branch\.bn0\.", "audio_model.audio_encoder.batch_norm."),
           (r"^audio_branch\.", "audio_model.audio_encoder."),
           (r"(\.blocks\.\d+)\.norm1\.", r"\1.layernorm_before."),
           (r"(\.blocks\.\d+)\.norm2\.", r"\1.layernorm_after."),
           (r"(\.blocks\.\d+)\.attn\.qkv\.", r"\1.attention.self.qkv."),
           (r"(\.blocks\.\d+)\.attn\.proj\.", r"\1.attention.output.dense."),
           (r"(\.blocks\.\d+)\.attn\.relative_position_", r"\1.attention.self.relative_position_"),
           (r"(\.blocks\.\d+)\.mlp\.fc1\.", r"\1.intermediate.dense."),
           (r"(\.blocks\.\d+)\.mlp\.fc2\.", r"\1.output.dense."))
QKV_ORDER = ("query", "key", "value")  # the rows of HTSAT's fused qkv projection, in order
RECOMPUTED = ("text_model.embeddings.position_ids", "text_model.embeddings.token_type_ids")


@dataclass(frozen=True)
class LaionLayout:
    """What a LAION-CLAP state dict says about its model, read off tensor shapes."""

    fused: bool
    window_length: int  # STFT window (n_fft)
    config: dict[str, Any]  # ClapConfig keyword arguments


def _tensor(state: dict[str, torch.Tensor], key: str, source: Path) -> torch.Tensor:
    if key not in state:
        raise CheckpointError(f"{source}: no '{key}': not a LAION-CLAP HTSAT + RoBERTa checkpoint "
                              f"(its keys: {bounded(sorted(state), 4)})")
    return state[key]


def _count(state: dict[str, torch.Tensor], pattern: str) -> int:
    """How many distinct indices ``pattern``'s group takes among the keys."""
    return len({match.group(1) for key in state if (match := re.match(pattern, key))})


def audio_layout(state: dict[str, torch.Tensor], source: Path) -> dict[str, Any]:
    """ClapAudioConfig arguments: widths, depths, heads and window size from the HTSAT tensors."""
    proj = _tensor(state, "audio_branch.patch_embed.proj.weight", source)
    stages = _count(state, r"audio_branch\.layers\.(\d+)\.blocks\.")
    depths = [_count(state, rf"audio_branch\.layers\.{i}\.blocks\.(\d+)\.") for i in range(stages)]
    tables = [_tensor(state, f"audio_branch.layers.{i}.blocks.0.attn.relative_position_bias_table",
                      source) for i in range(stages)]
    window = (math.isqrt(tables[0].shape[0]) + 1) // 2  # the table has (2w - 1)^2 rows
    embed = int(proj.shape[0])
    fusion = "audio_branch.patch_embed.fusion_model.local_att.0.weight"
    layout = {"patch_embeds_hidden_size": embed, "patch_size": int(proj.shape[-1]),
              "patch_stride": [int(proj.shape[-1])] * 2, "depths": depths,
              "num_attention_heads": [int(table.shape[1]) for table in tables],
              "window_size": window, "spec_size": SPEC_SIZE,
              "num_mel_bins": int(_tensor(state, "audio_branch.bn0.weight", source).shape[0]),
              "hidden_size": int(_tensor(state, "audio_branch.norm.weight", source).shape[0]),
              "mlp_ratio": _tensor(state, "audio_branch.layers.0.blocks.0.mlp.fc1.weight",
                                   source).shape[0] / embed,
              "enable_fusion": "audio_branch.patch_embed.mel_conv2d.weight" in state}
    if layout["enable_fusion"]:
        layout["aff_block_r"] = embed // int(_tensor(state, fusion, source).shape[0])
    return layout


def text_layout(state: dict[str, torch.Tensor], source: Path) -> dict[str, Any]:
    """ClapTextConfig arguments for the RoBERTa tower (heads: RoBERTa's 64-wide ones)."""
    words = _tensor(state, "text_branch.embeddings.word_embeddings.weight", source)
    hidden = int(words.shape[1])
    if hidden % ROBERTA_HEAD_WIDTH:
        raise CheckpointError(f"{source}: text width {hidden} is not a multiple of RoBERTa's "
                              f"{ROBERTA_HEAD_WIDTH}-wide heads: not a RoBERTa text tower")
    positions = _tensor(state, "text_branch.embeddings.position_embeddings.weight", source)
    types = _tensor(state, "text_branch.embeddings.token_type_embeddings.weight", source)
    inner = _tensor(state, "text_branch.encoder.layer.0.intermediate.dense.weight", source)
    return dict(vocab_size=int(words.shape[0]), hidden_size=hidden,
                num_attention_heads=hidden // ROBERTA_HEAD_WIDTH,
                num_hidden_layers=_count(state, r"text_branch\.encoder\.layer\.(\d+)\."),
                intermediate_size=int(inner.shape[0]),
                max_position_embeddings=int(positions.shape[0]),
                type_vocab_size=int(types.shape[0]), **ROBERTA_TEXT)


def read_layout(state: dict[str, torch.Tensor], source: Path) -> LaionLayout:
    """The model a LAION-CLAP state dict describes."""
    audio, text = audio_layout(state, source), text_layout(state, source)
    projection = int(_tensor(state, "audio_projection.2.weight", source).shape[0])
    stft = _tensor(state, "audio_branch.spectrogram_extractor.stft.conv_real.weight", source)
    return LaionLayout(fused=audio["enable_fusion"], window_length=int(stft.shape[-1]),
                       config={"audio_config": {**audio, "projection_dim": projection},
                               "text_config": {**text, "projection_dim": projection},
                               "projection_dim": projection})


def rename_key(key: str) -> str:
    for pattern, replacement in RENAMES:
        key = re.sub(pattern, replacement, key)
    return key


def to_transformers(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(transformers state dict, transformers name -> LAION name): every kept key renamed, each
    fused ``qkv`` split in three (query, key, value rows, in that order, as HTSAT splits it)."""
    mapped: dict[str, torch.Tensor] = {}
    origin: dict[str, str] = {}
    for key, value in state.items():
        if any(re.fullmatch(pattern, key) for pattern in DROPPED):
            continue
        name = rename_key(key)
        parts = {name: value}
        if ".attention.self.qkv." in name:
            parts = {name.replace(".qkv.", f".{part}."): rows.clone()
                     for part, rows in zip(QKV_ORDER, value.chunk(3, dim=0))}
        mapped.update(parts)
        origin.update(dict.fromkeys(parts, key))
    return mapped, origin


def check_keys(mapped: dict[str, torch.Tensor], origin: dict[str, str],
               expected: dict[str, torch.Tensor], source: Path) -> None:
    """Refuse keys the model lacks, missing tensors and wrong shapes, naming them."""
    unexpected = sorted({origin[key] for key in mapped if key not in expected})
    if unexpected:
        raise CheckpointError(f"{source}: unexpected key(s) {bounded(unexpected)}: not part of a "
                              "LAION-CLAP HTSAT + RoBERTa model as cmcr converts it")
    missing = sorted(set(expected) - set(mapped) - set(RECOMPUTED))
    if missing:
        raise CheckpointError(f"{source}: missing tensor(s) for {bounded(missing)} "
                              "(transformers names): an incomplete LAION-CLAP checkpoint")
    for key in sorted(mapped):
        if mapped[key].shape != expected[key].shape:
            raise CheckpointError(f"{source}: '{origin[key]}' has shape "
                                  f"{tuple(mapped[key].shape)}, the model expects "
                                  f"{tuple(expected[key].shape)} for '{key}'")


def feature_extractor(layout: LaionLayout) -> Any:
    """transformers' CLAP front end with LAION-CLAP's settings (fusion input for fused models)."""
    audio = layout.config["audio_config"]
    return require_transformers().ClapFeatureExtractor(
        feature_size=audio["num_mel_bins"], sampling_rate=SAMPLE_RATE, hop_length=HOP_LENGTH,
        max_length_s=CLIP_SECONDS, fft_window_size=layout.window_length,
        frequency_min=FREQUENCY_MIN, frequency_max=FREQUENCY_MAX, padding="repeatpad",
        truncation="fusion" if layout.fused else "rand_trunc")


def check_filter_bank(state: dict[str, torch.Tensor], extractor: Any, source: Path) -> None:
    """The file's frozen mel filter bank must be the one the front end computes: it pins the
    sample rate, window, mel bins and frequency range the model was trained with."""
    stored = _tensor(state, "audio_branch.logmel_extractor.melW", source).double().numpy()
    computed = np.asarray(extractor.mel_filters_slaney, dtype=np.float64)
    if stored.shape != computed.shape or not np.allclose(stored, computed, rtol=1e-4, atol=1e-7):
        raise CheckpointError(
            f"{source}: 'audio_branch.logmel_extractor.melW' is not the filter bank of "
            f"LAION-CLAP's published front end ({SAMPLE_RATE} Hz, {extractor.fft_window_size}-"
            f"sample window, {extractor.feature_size} mel bins, {FREQUENCY_MIN}-{FREQUENCY_MAX} "
            "Hz): a model trained with other audio settings, which cmcr does not convert")


def build_model(state: dict[str, torch.Tensor], layout: LaionLayout, source: Path) -> Any:
    """A transformers ClapModel holding the checkpoint's weights, in eval mode."""
    transformers = require_transformers()
    config = transformers.ClapConfig(**layout.config, **{LAION_INT16_AUDIO: True})
    with quiet_transformers():
        model = transformers.ClapModel(config)
    mapped, origin = to_transformers(state)
    check_keys(mapped, origin, model.state_dict(), source)
    model.load_state_dict(mapped, strict=False)  # only RECOMPUTED buffers are left as built
    return model.eval()




def convert_laion_clap(checkpoint: str | Path, out: str | Path, tokenizer: str = "roberta-base",
                       overwrite: bool = False) -> Path:
    """Write ``out``: a ClapModel folder (config, safetensors, processor) for ``clap:OUT``.

    ``tokenizer``: where RoBERTa's tokenizer files are (a hub id, cached or reachable, or a
    folder); LAION-CLAP tokenizes with ``roberta-base``'s and the ``.pt`` file holds none.
    """
    source, out = Path(checkpoint), Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise ConfigError(f"{out}: already exists and is not empty (pass --overwrite to replace)")
    state = read_torch_state(source)
    check_finite(state, source)
    layout = read_layout(state, source)
    extractor = feature_extractor(layout)
    check_filter_bank(state, extractor, source)
    model = build_model(state, layout, source)
    transformers = require_transformers()
    words = load_pretrained(transformers.RobertaTokenizer, tokenizer, "RoBERTa's tokenizer")
    if len(words) != layout.config["text_config"]["vocab_size"]:
        raise ConfigError(f"tokenizer '{tokenizer}' has {len(words)} tokens, the checkpoint's "
                          f"text tower {layout.config['text_config']['vocab_size']}: pass the "
                          "one it was trained with (LAION-CLAP: roberta-base's), as a folder "
                          "with its vocab.json and merges.txt or a hub id that is cached or "
                          "reachable (transformers gives an empty tokenizer for any other)")
    record = {"checkpoint": source.name, "sha256": file_sha256(source), "fused": layout.fused,
              "tokenizer": tokenizer}
    staging = out.with_name(f".{out.name}.{os.getpid()}.partial")  # OUT appears complete or not
    shutil.rmtree(staging, ignore_errors=True)
    try:
        with quiet_transformers():
            model.save_pretrained(staging)
            transformers.ClapProcessor(feature_extractor=extractor,
                                       tokenizer=words).save_pretrained(staging)
        (staging / SOURCE_FILE).write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
        shutil.rmtree(out, ignore_errors=True)
        os.replace(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out
