"""Generated embeddings for two contrastive spaces that share one modality.

Every item has a latent meaning ``z``. Space A ("clip-like") embeds text and image, space B
("clap-like") embeds text and audio; each space is its own random nonlinear map of ``z`` with its
own dim and its own *modality gap* (a constant offset per modality, as real CLIP/CLAP have).
Texts are embedded in both spaces; images and audio come from *different* items, never paired.
Held-out test pairs share one ``z`` between an image and an audio clip: the pair C-MCR never sees.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from cmcr.data.store import write_store


@dataclass
class SyntheticSizes:
    texts: int = 6000
    images: int = 3000
    audio: int = 3000
    test_pairs: int = 500
    concepts: int = 48
    latent_dim: int = 12
    dim_a: int = 64
    dim_b: int = 48


class _RandomSpace:
    """A frozen 'encoder': unit rows of tanh(W2 tanh(W1 z)) + a per-modality gap offset."""

    def __init__(self, rng: np.random.Generator, latent_dim: int, dim: int, modalities: list[str],
                 gap: float = 0.6, width: int = 96):
        self.w1 = rng.normal(size=(latent_dim, width)) / np.sqrt(latent_dim)
        self.w2 = rng.normal(size=(width, dim)) * 1.5 / np.sqrt(width)
        self.gaps = {m: rng.normal(size=dim) * gap / np.sqrt(dim) for m in modalities}

    def embed(self, latents: np.ndarray, modality: str, rng: np.random.Generator,
              jitter: float = 0.05) -> np.ndarray:
        features = np.tanh(np.tanh((latents + jitter * rng.normal(size=latents.shape)) @ self.w1)
                           @ self.w2)
        features /= np.linalg.norm(features, axis=1, keepdims=True)
        features = features + self.gaps[modality]
        return (features / np.linalg.norm(features, axis=1, keepdims=True)).astype(np.float32)


def _latents(rng: np.random.Generator, centres: np.ndarray, count: int,
             spread: float = 0.35) -> np.ndarray:
    labels = rng.integers(len(centres), size=count)
    return centres[labels] + spread * rng.normal(size=(count, centres.shape[1]))


def make_synthetic_embeddings(seed: int = 0, sizes: SyntheticSizes | None = None
                              ) -> dict[str, np.ndarray]:
    """Arrays: a_text, b_text (paired rows), a_image, b_audio (unpaired memories), and the
    held-out pair test_image (space A) / test_audio (space B), row i of both sharing a latent."""
    sizes = sizes or SyntheticSizes()
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(sizes.concepts, sizes.latent_dim))
    space_a = _RandomSpace(rng, sizes.latent_dim, sizes.dim_a, ["text", "image"])
    space_b = _RandomSpace(rng, sizes.latent_dim, sizes.dim_b, ["text", "audio"])
    text_latents = _latents(rng, centres, sizes.texts)
    test_latents = _latents(rng, centres, sizes.test_pairs)
    return {
        "a_text": space_a.embed(text_latents, "text", rng),
        "b_text": space_b.embed(text_latents, "text", rng),
        "a_image": space_a.embed(_latents(rng, centres, sizes.images), "image", rng),
        "b_audio": space_b.embed(_latents(rng, centres, sizes.audio), "audio", rng),
        "test_image": space_a.embed(test_latents, "image", rng),
        "test_audio": space_b.embed(test_latents, "audio", rng),
    }


def write_synthetic_example(directory: str | Path, seed: int = 0,
                            sizes: SyntheticSizes | None = None, epochs: int = 20,
                            batch_size: int = 512) -> Path:
    """Write the generated stores and a ready ``connect.yaml`` in ``directory``; returns the yaml."""
    directory = Path(directory)
    arrays = make_synthetic_embeddings(seed, sizes)
    layout = {"a_text": ("clip", "text"), "b_text": ("clap", "text"), "a_image": ("clip", "image"),
              "b_audio": ("clap", "audio"), "test_image": ("clip", "image"),
              "test_audio": ("clap", "audio")}
    for name, (space, modality) in layout.items():
        write_store(directory / "emb" / name, arrays[name], space=space, modality=modality)
    config = {
        "shared_modality": "text",
        "spaces": {
            "clip": {"queries": "emb/a_text", "memory": "emb/a_image", "memory_modality": "image"},
            "clap": {"queries": "emb/b_text", "memory": "emb/b_audio", "memory_modality": "audio"},
        },
        "train": {"epochs": epochs, "batch_size": batch_size, "lr": 1.0e-3, "seed": seed},
        "method": {"noise_var": 0.004, "memory_temperature": 0.01, "temperature": 0.05,
                   "intra_weight": 0.1},
        "projector": {"hidden": 256, "out_dim": 64, "layers": 2},
    }
    path = directory / "connect.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


@dataclass
class ThreeSpaceSizes:
    shared: int = 1200  # items of each overlap (texts for base-leaf A, images for base-leaf B)
    memory: int = 600  # rows of each unpaired memory
    test_pairs: int = 200
    concepts: int = 24
    latent_dim: int = 8
    dims: tuple[int, int, int] = (32, 24, 20)  # base, leaf A, leaf B


def make_three_space_embeddings(seed: int = 0, sizes: ThreeSpaceSizes | None = None
                                ) -> dict[str, np.ndarray]:
    """Three random nonlinear spaces of one latent: a base (text, image), leaf A (text, audio)
    and leaf B (image, point_cloud), i.e. two overlaps (text, image) with the base.

    Arrays: ``{base,a}_text`` (paired rows) with ``base_image_memory`` and ``a_audio_memory``
    for extending A; ``{base,b}_image`` (paired) with ``base_text_memory`` and
    ``b_point_cloud_memory`` for extending B; ``test_audio`` (A) / ``test_point_cloud`` (B),
    row i of both sharing a latent: the leaves' emergent pair, which no stage ever sees."""
    sizes = sizes or ThreeSpaceSizes()
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(sizes.concepts, sizes.latent_dim))
    base = _RandomSpace(rng, sizes.latent_dim, sizes.dims[0], ["text", "image"])
    leaf_a = _RandomSpace(rng, sizes.latent_dim, sizes.dims[1], ["text", "audio"])
    leaf_b = _RandomSpace(rng, sizes.latent_dim, sizes.dims[2], ["image", "point_cloud"])
    texts, images = (_latents(rng, centres, sizes.shared) for _ in range(2))
    test = _latents(rng, centres, sizes.test_pairs)

    def memory(space: _RandomSpace, modality: str) -> np.ndarray:
        return space.embed(_latents(rng, centres, sizes.memory), modality, rng)

    return {
        "base_text": base.embed(texts, "text", rng), "a_text": leaf_a.embed(texts, "text", rng),
        "base_image_memory": memory(base, "image"), "a_audio_memory": memory(leaf_a, "audio"),
        "base_image": base.embed(images, "image", rng), "b_image": leaf_b.embed(images, "image", rng),
        "base_text_memory": memory(base, "text"), "b_point_cloud_memory": memory(leaf_b, "point_cloud"),
        "test_audio": leaf_a.embed(test, "audio", rng),
        "test_point_cloud": leaf_b.embed(test, "point_cloud", rng),
    }
