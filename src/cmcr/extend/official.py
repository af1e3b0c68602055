"""Import the authors' released Ex-MCR heads (``ex_clap.pt``, ``ex_ulip.pt``) into one unified
model with CLIP as its frozen base.

Each file is the state dict of one ``Ex_MCR_Head`` (MCR-PEFT/Ex-MCR, exmcr/exmcr_projector.py):
``Head1.weight``/``Head1.bias`` (Linear 512x512) and ``Head2.mlp{1,2}.net{1,2}.{0,1}.*`` (two
blocks Linear BN ReLU / Linear BN). Their inference (exmcr/exmcr_model.py) feeds the L2-normalised
CLAP audio or ULIP 3D embedding through Head1 then Head2 and normalises; images and texts go
through CLIP alone. Both files have the same layout, so ``--kind`` says which leaf each one is.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cmcr.config import ModelConfig, ProjectorConfig, SpaceSpec, from_dict
from cmcr.errors import CheckpointError
from cmcr.data.weights import bounded, check_state_fits
from cmcr.method.model import ConnectedModel
from cmcr.method.official import (check_batch_norm_statistics, check_probe_batch, detect_kind,
                           read_torch_state)
from cmcr.extend.unified import frozen_space_record, unify
from cmcr.data.weights import check_finite

BASE = "clip"
BASE_MODALITIES = ["image", "text"]
BASE_SPACE = "clip-vit-b32"  # the heads were trained on OpenAI's CLIP ViT-B/32 (docs/extend.md)
DIM = 512  # every released head takes and gives 512-d rows
KEY_PATTERN = r"^(Head1\.(weight|bias)|Head2\.mlp[12]\.net[12]\.\d+\.\w+)$"


@dataclass(frozen=True)
class ExMcrKind:
    leaf: str  # the cmcr space name of the leaf
    modalities: list[str]  # what the leaf space embeds (through the head)
    shared_modality: str  # the modality the leaf shares with CLIP


EXMCR_KINDS: dict[str, ExMcrKind] = {
    "ex-clap": ExMcrKind(leaf="clap", modalities=["audio", "text"], shared_modality="text"),
    "ex-ulip": ExMcrKind(leaf="ulip", modalities=["image", "point_cloud"],
                         shared_modality="image"),
}


def official_key(key: str) -> str:
    """projectors.clap.linear.weight -> Head1.weight;
    projectors.clap.blocks.0.net1.0.weight -> Head2.mlp1.net1.0.weight."""
    parts = key.split(".")[2:]
    if parts[0] == "linear":
        return ".".join(["Head1", *parts[1:]])
    return ".".join(["Head2", f"mlp{int(parts[1]) + 1}", *parts[2:]])


def _extended_model(kind: str) -> ConnectedModel:
    spec = EXMCR_KINDS[kind]
    head = from_dict(ProjectorConfig, {"preset": "ex-mcr"})
    frozen, digest = frozen_space_record(BASE_SPACE)
    return ConnectedModel(ModelConfig(
        spaces={BASE: SpaceSpec(modalities=list(BASE_MODALITIES), dim=DIM, frozen=frozen,
                                weights_sha256=digest),
                spec.leaf: SpaceSpec(modalities=list(spec.modalities), dim=DIM)},
        projectors={BASE: ProjectorConfig(kind="identity", out_dim=DIM), spec.leaf: head},
        shared_modality=spec.shared_modality, shared_modality_space=BASE,
        source=f"official:{kind}"))


def import_exmcr_head(path: str | Path, kind: str) -> ConnectedModel:
    """One official Ex-MCR head file as an extended model (CLIP base + the leaf of ``kind``)."""
    if kind not in EXMCR_KINDS:
        raise CheckpointError(f"unknown Ex-MCR kind '{kind}'; valid: {', '.join(EXMCR_KINDS)}")
    state = read_torch_state(path)
    if not state or not all(re.match(KEY_PATTERN, key) for key in state):
        found = detect_kind(state)
        hint = f"it looks like a C-MCR '{found}' checkpoint (--kind {found})" if found else \
            f"its keys ({bounded(sorted(state), 3)}) are not Head1.* / Head2.mlp*.net*.*"
        raise CheckpointError(f"{path}: not an official Ex-MCR head: {hint}")
    model = _extended_model(kind)
    own = {key: value for key, value in model.state_dict().items()
           if key.startswith(f"projectors.{EXMCR_KINDS[kind].leaf}.")}
    names = {official_key(key): key for key in own}
    check_state_fits(state, {official: own[key] for official, key in names.items()}, path)
    check_finite(state, path)
    check_batch_norm_statistics(state, path)
    model.load_weights({names[key]: value for key, value in state.items()}, path)
    check_probe_batch(model, path, official_key)
    return model.eval()


def import_exmcr(checkpoints: Mapping[str, str | Path]) -> ConnectedModel:
    """Official Ex-MCR heads (kind -> file) as one unified model with CLIP as its base."""
    return unify([import_exmcr_head(path, kind) for kind, path in checkpoints.items()])

