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
from cmcr.model import ConnectedModel


@dataclass(frozen=True)
class OfficialKind:
    heads: dict[str, str]  # official head name -> cmcr space name
    preset: str
    modalities: dict[str, list[str]]
    shared_modality: str
    key_pattern: str  # regex every official key of this kind matches


OFFICIAL_KINDS: dict[str, OfficialKind] = {
    "clap-clip": OfficialKind(
        heads={"Head_A": "clap", "Head_B": "clip"}, preset="clap-clip",
        modalities={"clip": ["image", "text"], "clap": ["audio", "text"]},
        shared_modality="text", key_pattern=r"^Head_[AB]\.net[12]\.\d+\.\w+$"),
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
    except pickle.UnpicklingError:  # torch's message suggests weights_only=False: never that
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


def _official_to_cmcr_key(key: str, kind: OfficialKind) -> str:
    """Head_A.net.1.weight -> projectors.clip.net.1.weight; net1.i -> net.i, net2.i -> net.(3+i)."""
    head, block, index, name = key.split(".")
    index = int(index)
    if block == "net2":
        index += 3  # net1 is Linear, BatchNorm, ReLU: three modules
    return f"projectors.{kind.heads[head]}.net.{index}.{name}"


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
            f"its keys ({', '.join(sorted(state)[:3])}, ...) match no official layout"
        raise CheckpointError(f"{path}: not an official '{kind}' checkpoint: {hint}")
    projector = from_dict(ProjectorConfig, {"preset": spec.preset})
    in_dims = {spec.heads[key.split(".")[0]]: value.shape[1] for key, value in state.items()
               if value.ndim == 2 and key.split(".")[1:3] in (["net", "0"], ["net1", "0"])}
    config = ModelConfig(
        spaces={name: SpaceSpec(modalities=mods, dim=in_dims[name])
                for name, mods in spec.modalities.items()},
        projectors={name: projector for name in spec.modalities},
        shared_modality=spec.shared_modality, shared_modality_space="clip",
        source=f"official:{kind}")
    model = ConnectedModel(config)
    model.load_weights({_official_to_cmcr_key(k, spec): v for k, v in state.items()}, path)
    return model.eval()

