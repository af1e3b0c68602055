"""Ex-MCR's objective (extend mode): dense inter-space alignment plus intra-space alignment.

Notation for a batch of pool tuples (cmcr.extend.aggregate): the leaf's shared and memory rows (CLAP
text, CLAP audio) go through the leaf head; the base's shared and memory rows (CLIP text, CLIP
image) stay as they are, since the base space is frozen.

- dense alignment: symmetric InfoNCE between each chosen pair (projected leaf modality, base
  modality): text-text, audio-image, text-image, audio-text; their mean (the paper ablates
  A-T, T-T, A-V, T-V against "Dense");
- intra-space alignment: the leaf's shared and memory rows, after the head's linear layer f_l and
  L2 normalisation, pulled together (squared distance, attractive only, as C-MCR's intra term);
- total = dense + lambda * intra. The averaging over pairs and the form of the intra term are
  cmcr's reading (unconfirmed: the authors released no training code).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from cmcr.config import MethodConfig
from cmcr.extend.heads import inner_and_output
from cmcr.method.objective import add_noise, info_nce, intra_alignment
from cmcr.method.train import BatchLoss

ROLES = ("shared", "memory")  # a pair names one role on each side: (leaf role, base role)


@dataclass
class ExtendLossTerms:
    """The objective's parts for one batch (``total`` is what is minimised)."""

    total: torch.Tensor
    dense: torch.Tensor
    intra: torch.Tensor
    pairs: dict[str, torch.Tensor] = field(default_factory=dict)

    def as_floats(self) -> dict[str, float]:
        values = {"total": self.total, "dense": self.dense, "intra": self.intra}
        values.update({f"pair {name}": term for name, term in self.pairs.items()})
        return {name: float(value.detach()) for name, value in values.items()}


def dense_alignment(projected: dict[str, torch.Tensor], base: dict[str, torch.Tensor],
                    pairs: dict[str, tuple[str, str]], temperature: float
                    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Mean symmetric InfoNCE over ``pairs`` (name -> (leaf role, base role)) of unit rows."""
    terms = {name: info_nce(projected[leaf], base[other], temperature)
             for name, (leaf, other) in pairs.items()}
    return torch.stack(list(terms.values())).mean(), terms


def extend_batch_loss(leaf: str, pairs: dict[str, tuple[str, str]],
                      method: MethodConfig) -> BatchLoss:
    """The batch loss of extend mode for a batch [leaf shared, leaf memory, base shared,
    base memory] (cmcr.extend.aggregate.PARTS); noise, when on, is added to the leaf's inputs only."""
    def loss(model, batch: list[torch.Tensor], generator: torch.Generator) -> ExtendLossTerms:
        leaf_shared, leaf_memory, base_shared, base_memory = batch
        variance = method.noise_var if method.use_noise else 0.0
        rows = torch.cat([add_noise(leaf_shared, variance, generator),
                          add_noise(leaf_memory, variance, generator)])
        # Both leaf modalities in one pass: BatchNorm's statistics describe their mixture.
        inner, output = inner_and_output(model.projectors[leaf], rows)
        count = len(leaf_shared)
        projected = {"shared": output[:count], "memory": output[count:]}
        frozen = {"shared": F.normalize(base_shared, dim=-1),
                  "memory": F.normalize(base_memory, dim=-1)}
        dense, terms = dense_alignment(projected, frozen, pairs, method.temperature)
        intra = dense.new_zeros(())
        if method.use_intra:
            unit = F.normalize(inner, dim=-1)
            intra = intra_alignment(unit[:count], unit[count:], method.intra_squared)
        return ExtendLossTerms(total=dense + method.intra_weight * intra, dense=dense,
                               intra=intra, pairs=terms)
    return loss
