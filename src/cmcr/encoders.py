"""End-to-end inference: files -> frozen spaces -> a connected model's joint space.

The official code's ``get_embeddings``: images through CLIP and f_clip, audio through CLAP and
f_clap, texts through the side the model names for its shared modality (CLIP in the paper's demo).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch

from cmcr.errors import ConfigError
from cmcr.method.model import ConnectedModel
from cmcr.spaces.base import Space


def check_space_fits(model: ConnectedModel, name: str, space: Space) -> None:
    """Refuse a frozen space whose width is not what the model's ``name`` projector takes."""
    expected = model.config.spaces[name].dim
    if space.dim != expected:
        raise ConfigError(f"space '{name}' ({space.name}) gives {space.dim}-d embeddings; the "
                          f"model's '{name}' projector takes {expected}-d")


def _missing_space_error(model: ConnectedModel, missing: list[str]) -> ConfigError:
    return ConfigError(f"the model connects {model.space_names}; give a space for {missing} "
                       f"(e.g. --space {missing[0]}=clip:openai/clip-vit-base-patch32)")


class JointEmbedder:
    """A connected model plus the frozen spaces it connects: ``embed`` gives joint-space rows.

    A C-MCR model needs both its spaces; a unified (extended) model needs its base space, and
    each leaf space only once one of its modalities is embedded.
    """

    def __init__(self, model: ConnectedModel, spaces: Mapping[str, Space],
                 text_space: str | None = None):
        from cmcr.runtime.threads import apply_thread_policy

        apply_thread_policy()  # cmcr's thread choice unless the caller made one (cmcr.runtime.threads)
        needed = model.space_names if model.base_space is None else [model.base_space]
        missing = [name for name in needed if name not in spaces]
        if missing:
            raise _missing_space_error(model, missing)
        for name in model.space_names:
            if name in spaces:
                check_space_fits(model, name, spaces[name])
        if text_space is not None and text_space not in model.space_names:
            raise ConfigError(f"text space '{text_space}' is not one of {model.space_names}")
        self.model = model
        self.spaces = dict(spaces)
        self.text_space = text_space

    def space_for(self, modality: str) -> str:
        if modality == "text" and self.text_space is not None:
            return self.text_space
        return self.model.space_for(modality)

    def embed(self, modality: str, inputs: Sequence[Any], batch_size: int = 32) -> torch.Tensor:
        """Paths or decoded items of ``modality`` -> (n, out_dim) unit rows in the joint space."""
        name = self.space_for(modality)
        if name not in self.spaces:
            raise _missing_space_error(self.model, [name])
        frozen = self.spaces[name].embed(modality, inputs, batch_size=batch_size)
        if len(frozen) == 0:
            return torch.zeros((0, self.model.out_dim))
        return self.model.project(name, frozen, modality).float().cpu()

    def embed_image_patches(self, images: Sequence[Any], batch_size: int = 32,
                            mode: str = "tokens") -> torch.Tensor:
        """CLIP patch features (``mode`` tokens or values, see ClipSpace) projected into the joint
        space: (n, patches, out_dim) unit rows."""
        name = self.space_for("image")
        space = self.spaces[name]
        if not hasattr(space, "embed_image_patches"):
            raise ConfigError(f"space '{space.name}' has no patch tokens (CLIP spaces do)")
        patches = space.embed_image_patches(images, batch_size=batch_size, mode=mode)
        n, count, dim = patches.shape
        projected = self.model.project(name, patches.reshape(n * count, dim), "image").float().cpu()
        return projected.reshape(n, count, -1)

    def __call__(self, *, images: Sequence[Any] = (), audio: Sequence[Any] = (),
                 texts: Sequence[str] = (), batch_size: int = 32) -> dict[str, torch.Tensor]:
        """Joint embeddings of every modality given, keyed 'image', 'audio', 'text'."""
        given = {"image": images, "audio": audio, "text": texts}
        return {modality: self.embed(modality, inputs, batch_size)
                for modality, inputs in given.items() if len(inputs)}


def similarity(rows: torch.Tensor, columns: torch.Tensor,
               scale: float = 10.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosine similarity (n, m) of unit rows and the official demo's softmax(scale * cos) over columns."""
    cosine = rows.float() @ columns.float().T
    return cosine, torch.softmax(cosine * scale, dim=-1)
