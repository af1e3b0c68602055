"""Unified models: several extensions into one base space, chained into one model.

Extending CLAP into CLIP and ULIP into CLIP gives two models that share CLIP as their frozen
base; :func:`unify` puts their leaf heads side by side, so audio, 3D, images and texts all land in
CLIP's space. The result is a :class:`cmcr.model.ConnectedModel` like any other:
``save_pretrained`` / ``from_pretrained``, ``project(space, rows)`` and ``space_for(modality)``
(every modality the base embeds goes through the base).
"""

from __future__ import annotations

from collections.abc import Sequence

from cmcr.config import ModelConfig, SpaceSpec
from cmcr.errors import ConfigError
from cmcr.model import ConnectedModel


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
    spaces = {base: SpaceSpec(modalities=modalities, dim=models[0].config.spaces[base].dim)}
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
        shared_modality_space=base, source="cmcr:unified"))
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

