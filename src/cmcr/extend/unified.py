"""Unified models: several extensions into one base space, chained into one model.

Extending CLAP into CLIP and ULIP into CLIP gives two models that share CLIP as their frozen
base; :func:`unify` puts their leaf heads side by side, so audio, 3D, images and texts all land in
CLIP's space. The result is a :class:`cmcr.method.model.ConnectedModel` like any other:
``save_pretrained`` / ``from_pretrained``, ``project(space, rows)`` and ``space_for(modality)``
(every modality the base embeds goes through the base).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from cmcr.config import ModelConfig, SpaceSpec
from cmcr.errors import ConfigError
from cmcr.method.model import ConnectedModel


def frozen_space_record(spec: str | None) -> tuple[str | None, str | None]:
    """What a model records of a frozen space it is trained on: the space's spec (an alias
    resolved, a local folder made absolute) and its weights' sha256 when they are on this
    machine (a folder, or the Hugging Face cache; never downloaded), else None."""
    from cmcr.spaces.registry import parse_space_spec, weights_sha256

    if not spec:
        return None, None
    try:
        kind, target = parse_space_spec(spec)
    except ConfigError:
        return spec, None  # e.g. a leaf no cmcr space kind loads (ULIP)
    folder = Path(target).expanduser()
    if folder.is_dir():
        target = str(folder.resolve())
    return f"{kind}:{target}", weights_sha256(spec)


def _described(model: ConnectedModel, number: int) -> str:
    leaves_of = [name for name in model.space_names if name != model.base_space]
    return f"model {number} ({model.config.source}, leaf {', '.join(leaves_of)})"


def _record_shown(spec: SpaceSpec) -> str:
    digest = f" (weights sha256 {spec.weights_sha256[:12]}...)" if spec.weights_sha256 else ""
    return f"{spec.frozen}{digest}"


def _same_space(first: SpaceSpec, other: SpaceSpec) -> bool:
    """Same weights when both digests are known; else the same spec."""
    if first.weights_sha256 and other.weights_sha256:
        return first.weights_sha256 == other.weights_sha256
    return first.frozen == other.frozen


def _check_base_records(models: Sequence[ConnectedModel], base: str
                        ) -> tuple[str | None, str | None]:
    """Refuse models whose bases were different frozen spaces, naming both; warn about models
    that do not record theirs. Returns the record the unified model keeps: (spec, sha256)."""
    known: list[tuple[int, SpaceSpec]] = []
    for number, model in enumerate(models, 1):
        spec = model.config.spaces[base]
        if spec.frozen is None:
            print(f"cmcr: warning: {_described(model, number)} does not record which frozen "
                  f"'{base}' space it was trained on (saved by an earlier cmcr, or trained on "
                  "stores that do not record their space): unify cannot check that its base "
                  "is the others'", file=sys.stderr)
            continue
        for first_number, first in known:
            if not _same_space(first, spec):
                raise ConfigError(
                    f"{_described(models[first_number - 1], first_number)} was trained on base "
                    f"'{base}' = {_record_shown(first)}, but {_described(model, number)} on "
                    f"{_record_shown(spec)}: their leaves land in different spaces; unify "
                    "models extended into the same frozen base")
        known.append((number, spec))
    if not known:
        return None, None
    digest = next((spec.weights_sha256 for _, spec in known if spec.weights_sha256), None)
    return known[0][1].frozen, digest


def _check_leaf_modalities(models: Sequence[ConnectedModel], base: str,
                           base_modalities: list[str]) -> None:
    """Refuse two leaves embedding one modality the base does not: which of them should it go
    through? (Space look-up would silently take the first.)"""
    owners: dict[str, tuple[str, int]] = {}
    for number, model in enumerate(models, 1):
        for name, spec in model.config.spaces.items():
            for modality in spec.modalities:
                if name == base or modality in base_modalities:
                    continue
                if modality in owners and owners[modality][0] != name:
                    first, first_number = owners[modality]
                    raise ConfigError(
                        f"leaf '{first}' of model {first_number} and leaf '{name}' of model "
                        f"{number} both embed '{modality}': a unified model could send it "
                        "through only one of them; unify leaves that embed different modalities")
                owners[modality] = (name, number)


def _base_of(models: Sequence[ConnectedModel]) -> str:
    bases = [model.base_space for model in models]
    if any(base is None for base in bases):
        position = bases.index(None) + 1
        raise ConfigError(f"model {position} is a C-MCR model (no frozen base space): only "
                          "models trained with 'mode: extend' (or imported Ex-MCR heads) unify")
    if len(set(bases)) != 1:
        raise ConfigError(f"the models extend different base spaces {bases}: unify needs one base")
    dims = {model.config.spaces[bases[0]].dim for model in models}
    if len(dims) != 1:
        raise ConfigError(f"the base space '{bases[0]}' has different dims {sorted(dims)} across "
                          "the models")
    return bases[0]


def _merged_spaces(models: Sequence[ConnectedModel], base: str) -> dict[str, SpaceSpec]:
    """The base's modalities (union, in order of appearance), then every leaf's spec."""
    modalities: list[str] = []
    for model in models:
        modalities += [m for m in model.config.spaces[base].modalities if m not in modalities]
    frozen, digest = _check_base_records(models, base)
    _check_leaf_modalities(models, base, modalities)
    spaces = {base: SpaceSpec(modalities=modalities, dim=models[0].config.spaces[base].dim,
                              frozen=frozen, weights_sha256=digest)}
    for model in models:
        for name, spec in model.config.spaces.items():
            if name == base:
                continue
            if name in spaces:
                raise ConfigError(f"two models extend a leaf space named '{name}': each leaf may "
                                  "appear once in a unified model")
            spaces[name] = spec
    return spaces


def unify(models: Sequence[ConnectedModel]) -> ConnectedModel:
    """One model with the shared base space and every model's leaf heads (weights copied)."""
    if not models:
        raise ConfigError("unify needs at least one extended model")
    base = _base_of(models)
    spaces = _merged_spaces(models, base)
    projectors = {base: models[0].config.projectors[base]}
    for model in models:
        projectors.update({name: p for name, p in model.config.projectors.items() if name != base})
    first = models[0].config
    unified = ConnectedModel(ModelConfig(
        spaces=spaces, projectors=projectors, shared_modality=first.shared_modality,
        shared_modality_space=base,
        source=first.source if len(models) == 1 else "cmcr:unified"))  # one: where it came from
    state = {}
    for model in models:
        state.update({key: value for key, value in model.state_dict().items()
                      if not key.startswith(f"projectors.{base}.")})
    unified.load_weights({key: value.detach().cpu() for key, value in state.items()},
                         "the unified models")
    return unified.eval()


def leaves(model: ConnectedModel) -> list[str]:
    """The leaf spaces of an extended or unified model (all but the base)."""
    return [name for name in model.space_names if name != model.base_space]

