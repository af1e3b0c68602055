"""Import the authors' released C-MCR projector checkpoints into cmcr's format.

The official files are plain state dicts of two heads. Which head belongs to which space differs
between releases (NOTES.md): CLAP-CLIP has Head_A = CLAP, Head_B = CLIP; ULIP-CLIP has
Head_A = CLIP, Head_B = ULIP.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
import pickle
from pathlib import Path

import torch

from cmcr.config import ModelConfig, ProjectorConfig, SpaceSpec, from_dict
from cmcr.errors import CheckpointError
from cmcr.model import ConnectedModel, bounded, check_state_fits
from cmcr.weights import check_finite, holds_python_objects


@dataclass(frozen=True)
class OfficialKind:
    heads: dict[str, str]  # official head name -> cmcr space name
    preset: str
    modalities: dict[str, list[str]]
    shared_modality: str
    key_pattern: str  # regex every official key of this kind matches
    net1_modules: int | None = None  # modules in 'net1' (the rest are 'net2'); None: one 'net'
    dim: int = 512  # every released head takes 512-d encoder outputs (NOTES.md)


OFFICIAL_KINDS: dict[str, OfficialKind] = {
    "clap-clip": OfficialKind(
        heads={"Head_A": "clap", "Head_B": "clip"}, preset="clap-clip",
        modalities={"clip": ["image", "text"], "clap": ["audio", "text"]},
        shared_modality="text", key_pattern=r"^Head_[AB]\.net[12]\.\d+\.\w+$",
        net1_modules=3),  # net1 = Linear, BatchNorm, ReLU
    "ulip-clip": OfficialKind(
        heads={"Head_A": "clip", "Head_B": "ulip"}, preset="ulip-clip",
        modalities={"clip": ["image", "text"], "ulip": ["image", "point_cloud"]},
        shared_modality="image", key_pattern=r"^Head_[AB]\.net\.\d+\.\w+$"),
}


def read_official_state(path: str | Path) -> dict[str, torch.Tensor]:
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
    return {key.removeprefix("module."): value for key, value in state.items()}


def _cmcr_to_official_key(key: str, kind: OfficialKind) -> str:
    """projectors.clip.net.1.weight -> Head_A.net.1.weight; with two blocks, net.i -> net1.i
    for the first ``net1_modules`` modules, net2.(i - net1_modules) after them."""
    _, space, _, index, name = key.split(".")
    head = next(head for head, side in kind.heads.items() if side == space)
    block, index = "net", int(index)
    if kind.net1_modules is not None:
        first = index < kind.net1_modules
        block, index = ("net1", index) if first else ("net2", index - kind.net1_modules)
    return f"{head}.{block}.{index}.{name}"


def detect_kind(state: dict[str, torch.Tensor]) -> str | None:
    for name, kind in OFFICIAL_KINDS.items():
        if state and all(re.match(kind.key_pattern, key) for key in state):
            return name
    return None


def import_official(path: str | Path, kind: str) -> ConnectedModel:
    """Convert an official projector checkpoint of ``kind`` into a :class:`ConnectedModel`."""
    if kind not in OFFICIAL_KINDS:
        raise CheckpointError(f"unknown official kind '{kind}'; valid: {', '.join(OFFICIAL_KINDS)}")
    spec = OFFICIAL_KINDS[kind]
    state = read_official_state(path)
    found = detect_kind(state)
    if found != kind:
        hint = f"it looks like a '{found}' checkpoint" if found else \
            f"its keys ({bounded(sorted(state), 3)}) match no official layout"
        raise CheckpointError(f"{path}: not an official '{kind}' checkpoint: {hint}")
    model = ConnectedModel(_model_config(kind))
    own_state = model.state_dict()
    cmcr_keys = {_cmcr_to_official_key(key, spec): key for key in own_state}
    templates = {official: own_state[key] for official, key in cmcr_keys.items()}
    _check_official_state(state, templates, spec, path)
    model.load_weights({cmcr_keys[key]: value for key, value in state.items()}, path)
    return model.eval()


def _model_config(kind: str) -> ModelConfig:
    """The config of a released checkpoint of ``kind``: its preset projectors on 512-d spaces."""
    spec = OFFICIAL_KINDS[kind]
    projector = from_dict(ProjectorConfig, {"preset": spec.preset})
    return ModelConfig(
        spaces={name: SpaceSpec(modalities=mods, dim=spec.dim)
                for name, mods in spec.modalities.items()},
        projectors={name: projector for name in spec.modalities},
        shared_modality=spec.shared_modality, shared_modality_space="clip",
        source=f"official:{kind}")


def _check_official_state(state: dict[str, torch.Tensor], templates: dict[str, torch.Tensor],
                          spec: OfficialKind, path: str | Path) -> None:
    """Refuse missing heads or keys, wrong shapes and NaN/inf, named by their official keys."""
    for head, space in spec.heads.items():
        if not any(key.startswith(f"{head}.") for key in state):
            raise CheckpointError(f"{path}: head '{head}' (the {space} side) is missing; the file "
                                  f"has {len(state)} key(s): {bounded(sorted(state))}")
    check_state_fits(state, templates, path)
    check_finite(state, path)
