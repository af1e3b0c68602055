"""Checks on a local transformers checkpoint directory, before transformers reads it.

transformers turns a negative size into a tensor error and a truncated weights file into a deep
traceback; these checks name the file and what is wrong instead (as CheckpointError).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from cmcr.errors import CheckpointError
from cmcr.data.weights import check_finite, check_safetensors_file

CONFIG_FILE = "config.json"

# Keys of a CLIP/CLAP config.json (top level, or a tower's sub-config) that are sizes: each must be
# a positive integer, or a list of them (CLAP's per-stage depths and heads).
SIZE_KEYS = ("projection_dim", "hidden_size", "intermediate_size", "num_hidden_layers",
             "num_attention_heads", "vocab_size", "max_position_embeddings", "image_size",
             "patch_size", "num_mel_bins", "spec_size", "patch_embeds_hidden_size", "window_size",
             "depths")


def local_directory(name_or_path: str) -> Path | None:
    """The checkpoint's directory when it is local (None for a hub id)."""
    path = Path(name_or_path).expanduser()
    return path if path.is_dir() else None


def is_size(value: Any) -> bool:
    """A positive integer (not a bool), or a non-empty list of them."""
    if isinstance(value, list):
        return bool(value) and all(is_size(item) for item in value)
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def check_config_file(directory: Path, sub_configs: Sequence[str]) -> None:
    """Refuse a config.json that is not a JSON object or whose sizes are not positive integers."""
    path = directory / CONFIG_FILE
    if not path.is_file():
        return  # transformers says what is missing
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path}: not a readable JSON file ({err})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object, got {type(data).__name__}")
    scopes: dict[str, Mapping[str, Any]] = {"": data}
    scopes.update({f"{name}.": data[name] for name in sub_configs
                   if isinstance(data.get(name), dict)})
    for prefix, scope in scopes.items():
        for key in SIZE_KEYS:
            if key in scope and not is_size(scope[key]):
                raise CheckpointError(f"{path}: '{prefix}{key}' must be a positive integer, "
                                      f"got {scope[key]!r:.40}")


def check_weight_files(directory: Path) -> None:
    """Refuse a truncated or damaged ``*.safetensors`` file in ``directory``."""
    for path in sorted(directory.glob("*.safetensors")):
        check_safetensors_file(path)


def weights_label(name_or_path: str, suffix: str = ".safetensors") -> str:
    """The weights file to name in a message: the only ``*suffix`` file of a local directory,
    else the checkpoint's name."""
    directory = local_directory(name_or_path)
    files = sorted(directory.glob(f"*{suffix}")) if directory else []
    return str(files[0]) if len(files) == 1 else name_or_path


def check_parameters_finite(model: torch.nn.Module, name_or_path: str) -> None:
    """Refuse a loaded tower with NaN/inf parameters (buffers may hold masks), naming the file."""
    check_finite(dict(model.named_parameters()), weights_label(name_or_path))
