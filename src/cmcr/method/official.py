"""Import the authors' released C-MCR projector checkpoints into cmcr's format.

The official files are plain state dicts of two heads. Which head belongs to which space differs
between releases (NOTES.md): CLAP-CLIP has Head_A = CLAP, Head_B = CLIP; ULIP-CLIP has
Head_A = CLIP, Head_B = ULIP.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from cmcr.config import ModelConfig, ProjectorConfig, SpaceSpec, from_dict
from cmcr.errors import CheckpointError
from cmcr.data.weights import bounded, check_state_fits
from cmcr.method.model import ConnectedModel
from cmcr.data.weights import check_finite, read_torch_state


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
    state = read_torch_state(path)
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
    check_probe_batch(model, path, lambda key: _cmcr_to_official_key(key, spec))
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
    check_batch_norm_statistics(state, path)


def check_batch_norm_statistics(state: dict[str, torch.Tensor], path: str | Path) -> None:
    """Refuse a negative BatchNorm ``running_var`` (no training gives one; at inference it
    turns every row into NaN), naming the tensor."""
    for key in sorted(state):
        if key.endswith("running_var"):
            negative = int((state[key] < 0).sum())
            if negative:
                raise CheckpointError(f"{path}: '{key}' holds {negative} negative value(s) (of "
                                      f"{state[key].numel()}): a variance is never negative; the "
                                      "checkpoint is damaged")


def check_probe_batch(model: ConnectedModel, path: str | Path,
                      official_key: Callable[[str], str], rows: int = 64) -> None:
    """Project a batch of random unit rows through each imported head; refuse NaN/inf outputs
    (finite weights that overflow float32, e.g. 3e38), naming the first layer that gives them
    by its official tensors."""
    generator = torch.Generator().manual_seed(0)
    for space, projector in model.projectors.items():
        if not any(True for _ in projector.parameters()):
            continue  # a frozen base space (identity)
        probe = F.normalize(torch.randn(rows, model.config.spaces[space].dim,
                                        generator=generator), dim=-1)
        output, layer = _project_watching(model, space, probe)
        if torch.isfinite(output).all():
            continue
        tensors = [official_key(f"projectors.{space}.{layer}.{name}")
                   for name in projector.get_submodule(layer).state_dict()] if layer else []
        raise CheckpointError(
            f"{path}: random unit rows projected through the '{space}' head come out NaN/inf "
            f"(first at the layer of {', '.join(tensors[:3]) or 'the output'}): its weights "
            "overflow float32 or its statistics are invalid; the checkpoint is damaged")


def _project_watching(model: ConnectedModel, space: str, rows: torch.Tensor
                      ) -> tuple[torch.Tensor, str | None]:
    """``model.project(space, rows)``, and the name of the projector's first layer (in the order
    they ran) whose output held NaN/inf, or None."""
    first_bad: list[str] = []

    def watch(name: str) -> Callable[..., None]:
        def hook(module: torch.nn.Module, inputs: object, output: torch.Tensor) -> None:
            if not first_bad and not torch.isfinite(output).all():
                first_bad.append(name)
        return hook

    projector = model.projectors[space]
    handles = [module.register_forward_hook(watch(name))
               for name, module in projector.named_modules()
               if name and not list(module.children())]
    try:
        output = model.project(space, rows)
    finally:
        for handle in handles:
            handle.remove()
    return output, (first_bad[0] if first_bad else None)
