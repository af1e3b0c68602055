"""Two contrastive spaces of chosen geometry, generated directly as embeddings (no encoders).

Every row of a space's modality ``m`` is ``normalise(c_m + u + v_m)``:

- ``c_m``, the modality's centre: ``|c_m|^2 = C`` and ``c_text . c_media = x``, so the modality
  gap is ``sqrt(2 C - 2 x)`` and the mean cosine of two different rows is about ``C``;
- ``u``, the item's meaning in this space (share ``S`` of a row's energy): a concept centre
  plus a within-concept spread, mapped by the space's own basis (space B sees the meaning
  through a random nonlinear map, so the spaces' texts are not linearly related);
- ``v_m``, what this row says on its own (share ``R``): a caption's wording, which both spaces
  see (each through its own map), or an image's or a clip's own content, drawn afresh.

With ``C + S + R = 1`` the matched cosine is about ``x + S`` and the per-dimension paired
residual variance ``2 R / d``. ``u`` and ``v`` share a power-law spectrum chosen so the rows'
participation ratio is the one asked for. Real CLIP ViT-B/16 (``cmcr.spaces.geometry.REAL_CLIP``) is
``C = 0.53, x = 0.17, S = 0.14, R = 0.33`` in this model, participation ratio about 40.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

CROSS_COSINE = 0.17  # mean cosine of an image and an unrelated caption in real CLIP (0.162)


@dataclass(frozen=True)
class Geometry:
    """The geometry both generated spaces are given (the regime map's axes)."""

    effective_dim: float = 40.0  # participation ratio of each modality's rows
    modality_gap: float = 0.85
    matched_cosine: float = 0.31
    cross_cosine: float = CROSS_COSINE  # x: unrelated rows of the two modalities
    dim: int = 512

    def shares(self) -> tuple[float, float, float]:
        """(C, S, R): the energy of the centre, the meaning and the modality's own part."""
        centre = self.cross_cosine + self.modality_gap ** 2 / 2
        meaning = self.matched_cosine - self.cross_cosine
        own = 1.0 - centre - meaning
        if meaning < 0 or own < 0 or centre > 1:
            raise ValueError(f"no rows have gap {self.modality_gap} and matched cosine "
                             f"{self.matched_cosine} with cross cosine {self.cross_cosine}: "
                             "need cross <= matched and matched + gap^2/2 <= 1")
        return centre, meaning, own

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass(frozen=True)
class Sizes:
    """How many rows of each kind one generated dataset holds."""

    texts: int = 4096
    memory: int = 2048  # unpaired image rows (space A) and audio rows (space B)
    test_pairs: int = 500
    concepts: int = 128
    concept_spread: float = 0.3  # within-concept spread of the meaning (0: every item its concept)
    nonlinearity: float = 1.0  # gain of space B's map of the meaning (0: linear)


def spectrum_for(effective_dim: float, dim: int) -> np.ndarray:
    """A power-law spectrum l_j ~ j^-a over ``dim`` directions, summing to 1, whose
    participation ratio (sum l)^2 / sum l^2 is ``effective_dim`` (found by bisection on a)."""
    if not 1.0 <= effective_dim <= dim:
        raise ValueError(f"a participation ratio must lie in [1, {dim}], got {effective_dim}")
    ranks = np.arange(1, dim + 1, dtype=np.float64)

    def ratio(power: float) -> float:
        values = ranks ** -power
        return float(values.sum() ** 2 / (values ** 2).sum())

    low, high = 0.0, 20.0
    for _ in range(100):
        middle = (low + high) / 2
        low, high = (middle, high) if ratio(middle) > effective_dim else (low, middle)
    values = ranks ** -((low + high) / 2)
    return values / values.sum()


def _orthonormal(rng: np.random.Generator, dim: int) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((dim, dim)))
    return q * np.sign(np.diag(r))


class _Space:
    """One generated space: two modality centres, a basis with the spectrum, a meaning map."""

    def __init__(self, rng: np.random.Generator, geometry: Geometry, modalities: tuple[str, str],
                 nonlinearity: float):
        dim = geometry.dim
        self.shares = geometry.shares()
        centre, _, _ = self.shares
        self.basis = _orthonormal(rng, dim)
        self.scales = np.sqrt(spectrum_for(geometry.effective_dim, dim))
        first, second = self.basis[:, -1], self.basis[:, -2]  # the centres' plane
        cos = geometry.cross_cosine / centre if centre > 0 else 1.0
        self.centres = {modalities[0]: math.sqrt(centre) * first,
                        modalities[1]: math.sqrt(centre) * (cos * first
                                                            + math.sqrt(max(0.0, 1 - cos ** 2)) * second)}
        self.mixing = _orthonormal(rng, dim) if nonlinearity > 0 else None
        self.gain = nonlinearity

    def meaning(self, latents: np.ndarray) -> np.ndarray:
        """The space's view of unit-variance latents: itself, or a standardised tanh map."""
        if self.mixing is None:
            return latents
        mapped = np.tanh(self.gain * latents @ self.mixing)
        return mapped / math.sqrt(_tanh_second_moment(self.gain))

    def rows(self, latents: np.ndarray, modality: str, rng: np.random.Generator,
             own: np.ndarray | None = None) -> np.ndarray:
        """Unit rows of ``modality`` for items of these latents (n, dim); ``own``: the latents of
        what each row says on its own (a caption's wording, shared by both spaces' views of
        it), drawn afresh when None (an image or a clip, which one space sees)."""
        _, meaning_share, own_share = self.shares
        own = rng.standard_normal(latents.shape) if own is None else own
        meaning = (self.meaning(latents) * self.scales) @ self.basis.T
        own = (self.meaning(own) * self.scales) @ self.basis.T
        rows = (self.centres[modality] + math.sqrt(meaning_share) * meaning
                + math.sqrt(own_share) * own)
        return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def _tanh_second_moment(gain: float, samples: int = 200_000) -> float:
    """E tanh(gain z)^2 for z ~ N(0, 1), by a fixed quadrature-like sample."""
    z = np.random.default_rng(12345).standard_normal(samples)
    return float(np.mean(np.tanh(gain * z) ** 2))


def _latents(rng: np.random.Generator, centres: np.ndarray, count: int, spread: float
             ) -> tuple[np.ndarray, np.ndarray]:
    labels = rng.integers(len(centres), size=count)
    noise = rng.standard_normal((count, centres.shape[1]))
    return math.sqrt(1 - spread ** 2) * centres[labels] + spread * noise, labels


def make_two_spaces(geometry: Geometry, sizes: Sizes = Sizes(), seed: int = 0
                    ) -> dict[str, np.ndarray]:
    """Arrays of a C-MCR problem in the given geometry: ``a_text``/``b_text`` (row i of both
    is one caption), the unpaired memories ``a_image`` and ``b_audio``, the held-out pairs
    ``test_image``/``test_audio`` with their ``test_concepts`` and captions in each space
    (``test_text_a``/``test_text_b``, for measuring the geometry), and ``paired_image``/
    ``paired_audio`` (true pairs for an upper bound; no C-MCR stage reads them)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((sizes.concepts, geometry.dim))
    space_a = _Space(rng, geometry, ("text", "image"), 0.0)
    space_b = _Space(rng, geometry, ("text", "audio"), sizes.nonlinearity)

    def draw(count: int) -> tuple[np.ndarray, np.ndarray]:
        return _latents(rng, centres, count, sizes.concept_spread)

    texts, _ = draw(sizes.texts)
    test, test_concepts = draw(sizes.test_pairs)
    paired, _ = draw(sizes.texts)
    wording, test_wording = (rng.standard_normal((n, geometry.dim))
                             for n in (sizes.texts, sizes.test_pairs))
    return {
        "a_text": space_a.rows(texts, "text", rng, wording),
        "b_text": space_b.rows(texts, "text", rng, wording),
        "a_image": space_a.rows(draw(sizes.memory)[0], "image", rng),
        "b_audio": space_b.rows(draw(sizes.memory)[0], "audio", rng),
        "test_image": space_a.rows(test, "image", rng),
        "test_audio": space_b.rows(test, "audio", rng), "test_concepts": test_concepts,
        "test_text_a": space_a.rows(test, "text", rng, test_wording),
        "test_text_b": space_b.rows(test, "text", rng, test_wording),
        "paired_image": space_a.rows(paired, "image", rng),
        "paired_audio": space_b.rows(paired, "audio", rng),
    }
