"""The C-MCR objective in one place: noise, pseudo pairs, inter- and intra-space alignment.

Notation for a batch of shared-modality items (texts for CLIP-CLAP) and spaces A and B:
``query_a``/``query_b`` are the item's embeddings in each space, ``pseudo_a``/``pseudo_b`` the
pseudo embeddings of the other modalities retrieved from each space's memory.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from cmcr.config import MethodConfig


def add_noise(embeddings: torch.Tensor, variance: float,
              generator: torch.Generator | None = None) -> torch.Tensor:
    """x <- normalise(x + eps), eps ~ N(0, variance I): robustness to the modality gap."""
    if variance <= 0:
        return F.normalize(embeddings, dim=-1)
    device = generator.device if generator is not None else embeddings.device
    noise = torch.randn(embeddings.shape, generator=generator, dtype=embeddings.dtype,
                        device=device).to(embeddings.device)
    return F.normalize(embeddings + noise * variance ** 0.5, dim=-1)


def info_nce(left: torch.Tensor, right: torch.Tensor, temperature: float) -> torch.Tensor:
    """Symmetric InfoNCE between unit rows: row i of ``left`` matches row i of ``right``."""
    logits = (left / temperature) @ right.T  # scale (n, d), not the (n, n) logits
    targets = torch.arange(len(left), device=left.device)
    return 0.5 * (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets))


def intra_alignment(queries: torch.Tensor, pseudo: torch.Tensor, squared: bool = True) -> torch.Tensor:
    """Mean distance between each projected query and its projected pseudo partner."""
    distance = (queries - pseudo).pow(2).sum(dim=-1)
    return (distance if squared else distance.clamp_min(1e-12).sqrt()).mean()


@dataclass
class LossTerms:
    """The objective's parts for one batch (``total`` is what is minimised)."""

    total: torch.Tensor
    inter_query: torch.Tensor
    inter_pseudo: torch.Tensor
    intra: torch.Tensor

    def as_floats(self) -> dict[str, float]:
        return {name: float(value.detach()) for name, value in self.__dict__.items()}


def cmcr_loss(projected_query_a: torch.Tensor, projected_query_b: torch.Tensor,
              projected_pseudo_a: torch.Tensor | None, projected_pseudo_b: torch.Tensor | None,
              config: MethodConfig) -> LossTerms:
    """inter(query_a, query_b) + inter(pseudo_a, pseudo_b) + lambda * intra, on projected rows.

    ``pseudo_a`` is the pseudo partner retrieved in space A (e.g. a pseudo image for a text in
    CLIP); the pseudo-pair term aligns it with space B's pseudo partner (a pseudo audio).
    """
    zero = projected_query_a.new_zeros(())
    inter_query = info_nce(projected_query_a, projected_query_b, config.temperature)
    inter_pseudo = intra = zero
    if projected_pseudo_a is not None and projected_pseudo_b is not None:
        if config.use_pseudo_inter:
            inter_pseudo = info_nce(projected_pseudo_a, projected_pseudo_b,
                                    config.pseudo_temperature or config.temperature)
        if config.use_intra:  # 1/(2B) sum_i (|f(t_i) - f(v_i)|^2 + |g(t_i) - g(a_i)|^2)
            intra = 0.5 * (intra_alignment(projected_query_a, projected_pseudo_a, config.intra_squared)
                           + intra_alignment(projected_query_b, projected_pseudo_b,
                                             config.intra_squared))
    total = inter_query + inter_pseudo + config.intra_weight * intra
    return LossTerms(total=total, inter_query=inter_query, inter_pseudo=inter_pseudo, intra=intra)
