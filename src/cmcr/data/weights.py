"""Weight files: byte-reproducible safetensors writing, and reads that name what is wrong.

safetensors' own writer emits ``__metadata__`` in a per-process random (hash map) order, so two
identical saves can differ in bytes. :func:`save_safetensors` writes one canonical layout instead:
a JSON header with sorted keys, space-padded to a multiple of 8, then the tensors' bytes.
"""

from __future__ import annotations

import json
import os
import pickle
import struct
from pathlib import Path
from typing import Any, Mapping

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from cmcr.data.atomic import atomic_file
from cmcr.errors import CheckpointError

DTYPE_CODES: dict[torch.dtype, str] = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8",
    torch.uint8: "U8", torch.bool: "BOOL",
}
HEADER_LIMIT = 100_000_000  # bytes: safetensors refuses larger headers
NOT_SAFETENSORS = "truncated or not a safetensors file"


def save_safetensors(tensors: Mapping[str, torch.Tensor], path: str | Path,
                     metadata: Mapping[str, str] | None = None) -> Path:
    """Write ``tensors`` so the file's bytes depend only on names, values and ``metadata``.

    Tensors are laid out by element size (largest first, so every one is aligned), then name; the
    file appears atomically (a temporary file, then ``os.replace``).
    """
    path = Path(path)
    blobs = {name: tensor.detach().cpu().contiguous() for name, tensor in tensors.items()}
    order = sorted(blobs, key=lambda name: (-blobs[name].element_size(), name))
    header = _header(blobs, order, metadata)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with atomic_file(path, temporary) as tmp, open(tmp, "wb") as handle:
        handle.write(struct.pack("<Q", len(header)) + header)
        for name in order:
            handle.write(blobs[name].reshape(-1).view(torch.uint8).numpy().tobytes())
    return path


def _header(tensors: Mapping[str, torch.Tensor], order: list[str],
            metadata: Mapping[str, str] | None) -> bytes:
    """The canonical JSON header (sorted keys, no spaces), padded with spaces to a multiple of 8."""
    entries: dict[str, Any] = {"__metadata__": dict(metadata)} if metadata else {}
    offset = 0
    for name in order:
        tensor = tensors[name]
        if tensor.dtype not in DTYPE_CODES:
            raise ValueError(f"'{name}': dtype {tensor.dtype} cannot be saved as safetensors")
        size = tensor.numel() * tensor.element_size()
        entries[name] = {"dtype": DTYPE_CODES[tensor.dtype], "shape": list(tensor.shape),
                         "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(entries, sort_keys=True, separators=(",", ":")).encode("utf-8")
    return text + b" " * (-len(text) % 8)


def read_safetensors(path: str | Path) -> dict[str, torch.Tensor]:
    """Load a safetensors file; a missing, truncated or damaged one raises CheckpointError."""
    path = Path(path)
    check_safetensors_file(path)
    try:
        return load_file(str(path))
    except (OSError, SafetensorError) as err:
        raise CheckpointError(f"{path}: unreadable safetensors file: {err}") from None


def check_safetensors_file(path: str | Path) -> None:
    """Refuse a file whose header is unreadable or whose size differs from what it describes."""
    path = Path(path)
    header_length, header = _read_header(path)
    expected = 8 + header_length + _data_length(header, path)
    actual = path.stat().st_size
    if actual < expected:
        raise CheckpointError(f"{path}: {NOT_SAFETENSORS}: it has {actual} bytes, its header "
                              f"describes {expected}")
    if actual > expected:
        raise CheckpointError(f"{path}: not a valid safetensors file: {actual - expected} bytes "
                              "follow the data its header describes")


def _read_header(path: Path) -> tuple[int, dict[str, Any]]:
    try:
        size = path.stat().st_size
        with open(path, "rb") as handle:
            prefix = handle.read(8)
            length = struct.unpack("<Q", prefix)[0] if len(prefix) == 8 else None
            raw = handle.read(length) if length is not None and length <= HEADER_LIMIT else b""
    except FileNotFoundError:
        raise CheckpointError(f"{path}: weights file not found") from None
    except OSError as err:
        raise CheckpointError(f"{path}: cannot read: {err.strerror or err}") from None
    if length is None or length > min(HEADER_LIMIT, size - 8):
        raise CheckpointError(f"{path}: {NOT_SAFETENSORS} ({size} bytes, no complete header)")
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise CheckpointError(f"{path}: {NOT_SAFETENSORS} (its header is not JSON)") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: {NOT_SAFETENSORS} (its header is not a JSON object)")
    return length, header


def _data_length(header: Mapping[str, Any], path: Path) -> int:
    """Bytes of tensor data the header describes (the largest end offset)."""
    end = 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
        if not (isinstance(offsets, list) and len(offsets) == 2
                and all(isinstance(o, int) and o >= 0 for o in offsets)):
            raise CheckpointError(f"{path}: not a valid safetensors file: header entry '{name}' "
                                  "has no valid data_offsets")
        end = max(end, offsets[1])
    return end


def check_finite(tensors: Mapping[str, torch.Tensor], source: str | Path) -> None:
    """Refuse NaN or infinite values, naming the first tensor that holds any."""
    for name, tensor in tensors.items():
        if tensor.is_floating_point():
            bad = int(tensor.numel() - torch.isfinite(tensor).sum())
            if bad:
                raise CheckpointError(f"{source}: '{name}' holds {bad} NaN/inf value(s) "
                                      f"(of {tensor.numel()})")


def holds_python_objects(err: pickle.UnpicklingError) -> bool:
    """Whether torch's weights-only unpickler refused a Python object (a global such as a class or
    function), rather than bytes that are no pickle at all: its message names the GLOBAL."""
    return "GLOBAL" in str(err)


def read_torch_state(path: str | Path) -> dict[str, torch.Tensor]:
    """Load an official checkpoint safely (weights only), unwrapping common containers."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:  # torch's message suggests weights_only=False: never that
        if not holds_python_objects(err):
            raise CheckpointError(f"{path}: not a readable PyTorch checkpoint (damaged, or not "
                                  "written by torch.save)") from None
        raise CheckpointError(f"{path}: not a plain tensor checkpoint: it holds Python objects, "
                              "which cmcr does not unpickle (a checkpoint of tensors is needed; "
                              "re-save the state dict with torch.save(model.state_dict(), ...) "
                              "from a source you trust)") from None
    except Exception as err:  # torch raises many types for damaged or non-torch files
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({type(err).__name__}: "
                              f"{first[:200]})") from None
    for wrapper in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: expected a state dict of tensors")
    odd = next((key for key in state if not isinstance(key, str)), None)
    if odd is not None:
        raise CheckpointError(f"{path}: state dict key {odd!r:.60} is not a string (it is of "
                              f"type {type(odd).__name__}); a state dict's keys name its tensors")
    return {key.removeprefix("module."): value for key, value in state.items()}


def bounded(names: list[str], limit: int = 6) -> str:
    """At most ``limit`` names for a message, and how many more there are."""
    shown = ", ".join(names[:limit])
    return shown + (f", ... (+{len(names) - limit} more)" if len(names) > limit else "")


def check_state_fits(state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor],
                     source: Path | str) -> None:
    """Refuse missing or unexpected keys, wrong shapes and integer values for float tensors."""
    missing = sorted(set(expected) - set(state))
    if missing:
        raise CheckpointError(f"{source}: missing {len(missing)} key(s): {bounded(missing)}; "
                              f"the file has {len(state)}: {bounded(sorted(state))}")
    unexpected = sorted(set(state) - set(expected))
    if unexpected:
        raise CheckpointError(f"{source}: unexpected key(s) {bounded(unexpected)} (expected: "
                              f"{bounded(sorted(expected))})")
    for key in sorted(state):
        value, template = state[key], expected[key]
        if value.shape != template.shape:
            raise CheckpointError(f"{source}: '{key}' has shape {tuple(value.shape)}, "
                                  f"expected {tuple(template.shape)}")
        if template.is_floating_point() and not value.is_floating_point():
            raise CheckpointError(f"{source}: '{key}' holds {value.dtype} values, "
                                  f"expected floating point")
