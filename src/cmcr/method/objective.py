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


def noise_variance(config: MethodConfig, dim: int, residual: float | None = None) -> float:
    """The noise's sigma^2 for rows of ``dim`` dims: ``noise_var`` (the paper), or with
    ``noise_cosine`` = c the variance (1/c^2 - 1)/d, so E cos(x, noised x) ~ c in any dim, or
    with ``noise_calibration`` = k, k times the space's measured text-pseudo ``residual``."""
    if not config.use_noise:
        return 0.0
    if config.noise_calibration is not None:
        if residual is None:
            raise ValueError("noise_calibration needs the space's measured residual variance")
        return config.noise_calibration * residual
    if config.noise_cosine is None:
        return config.noise_var
    return (1.0 / config.noise_cosine ** 2 - 1.0) / dim


def info_nce(left: torch.Tensor, right: torch.Tensor, temperature: float,
             mask: torch.Tensor | None = None, targets: torch.Tensor | None = None
             ) -> torch.Tensor:
    """Symmetric InfoNCE between unit rows: row i of ``left`` matches row i of ``right``.

    ``mask`` (n, n) bool: off-diagonal pairs left out of both directions' denominators.
    ``targets`` (n, n): soft targets of left->right (rows sum to 1; right->left uses the
    column-normalised transpose) instead of the identity.
    """
    logits = (left / temperature) @ right.T  # scale (n, d), not the (n, n) logits
    if targets is not None:
        return 0.5 * (soft_cross_entropy(logits, targets)
                      + soft_cross_entropy(logits.T, targets.T / targets.T.sum(1, keepdim=True)))
    if mask is not None:
        eye = torch.eye(len(left), dtype=torch.bool, device=left.device)
        logits = logits.masked_fill(mask & ~eye, float("-inf"))
    targets = torch.arange(len(left), device=left.device)
    return 0.5 * (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets))


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over rows of -sum_j targets_ij log softmax(logits_i)_j."""
    return -(targets * F.log_softmax(logits, dim=1)).sum(dim=1).mean()


def text_agreement(raw_a: torch.Tensor, raw_b: torch.Tensor) -> torch.Tensor:
    """(n, n) cosine of raw shared-modality rows i and j, the smaller of the two spaces'."""
    unit_a, unit_b = F.normalize(raw_a, dim=-1), F.normalize(raw_b, dim=-1)
    return torch.minimum(unit_a @ unit_a.T, unit_b @ unit_b.T)


def batch_targets(agreement: torch.Tensor | None, config: MethodConfig
                  ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(mask, soft targets) of the InfoNCE terms from the raw rows' ``agreement``: pairs above
    ``same_text_threshold`` are masked; ``soft_target_temperature`` t gives softmax(agreement/t)."""
    if agreement is None:
        return None, None
    mask = targets = None
    if config.same_text_threshold is not None:
        mask = agreement > config.same_text_threshold
    if config.soft_target_temperature is not None:
        targets = torch.softmax(agreement / config.soft_target_temperature, dim=1)
    return mask, targets


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
              config: MethodConfig, agreement: torch.Tensor | None = None) -> LossTerms:
    """inter(query_a, query_b) + inter(pseudo_a, pseudo_b) + lambda * intra, on projected rows.

    ``pseudo_a`` is the pseudo partner retrieved in space A (e.g. a pseudo image for a text in
    CLIP); the pseudo-pair term aligns it with space B's pseudo partner (a pseudo audio).
    ``agreement`` (:func:`text_agreement` of the raw rows) feeds the recipe's masked or soft
    InfoNCE targets (:func:`batch_targets`), used by both InfoNCE terms.
    """
    zero = projected_query_a.new_zeros(())
    mask, targets = batch_targets(agreement, config)
    inter_query = info_nce(projected_query_a, projected_query_b, config.temperature, mask, targets)
    inter_pseudo = intra = zero
    if projected_pseudo_a is not None and projected_pseudo_b is not None:
        if config.use_pseudo_inter:
            inter_pseudo = info_nce(projected_pseudo_a, projected_pseudo_b,
                                    config.pseudo_temperature or config.temperature, mask, targets)
        if config.use_intra:  # 1/(2B) sum_i (|f(t_i) - f(v_i)|^2 + |g(t_i) - g(a_i)|^2)
            intra = 0.5 * (intra_alignment(projected_query_a, projected_pseudo_a, config.intra_squared)
                           + intra_alignment(projected_query_b, projected_pseudo_b,
                                             config.intra_squared))
    total = inter_query + inter_pseudo + config.intra_weight * intra
    return LossTerms(total=total, inter_query=inter_query, inter_pseudo=inter_pseudo, intra=intra)
