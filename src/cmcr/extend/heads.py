"""Ex-MCR's heads: the leaf head that extends a space into a frozen base space, and the
identity that stands for the base itself.

The leaf head follows the authors' ``exmcr/exmcr_projector.py`` (``Ex_MCR_Head``): ``Head1`` is a
square Linear initialised to the identity (f_l, the intra-space part), ``Head2`` two
residual-free blocks Linear BN ReLU Linear BN with Xavier-uniform weights (f_m, the inter-space
part), then L2 normalisation. Module names mirror theirs (``blocks.0.net1.0`` is their
``Head2.mlp1.net1.0``), so their checkpoints map key by key (cmcr.extend.official).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cmcr.config import ProjectorConfig
from cmcr.method.model import ThreadStableBatchNorm1d


class MlpBlock(nn.Module):
    """``net1`` = Linear [BN] ReLU, ``net2`` = Linear [BN]; no residual (the authors' ``MLP``)."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int, batch_norm: bool = True):
        super().__init__()
        first: list[nn.Module] = [nn.Linear(in_dim, hidden)]
        second: list[nn.Module] = [nn.Linear(hidden, out_dim)]
        if batch_norm:
            first.append(ThreadStableBatchNorm1d(hidden))
            second.append(ThreadStableBatchNorm1d(out_dim))
        self.net1 = nn.Sequential(*first, nn.ReLU())
        self.net2 = nn.Sequential(*second)

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        return self.net2(self.net1(rows))


class ExMcrHead(nn.Module):
    """(n, in_dim) leaf rows -> (n, out_dim) unit rows in the base space: ``linear`` (f_l),
    then ``layers`` MLP blocks (f_m), then L2 norm."""

    def __init__(self, in_dim: int, config: ProjectorConfig):
        super().__init__()
        self.linear = nn.Linear(in_dim, in_dim)
        widths = [in_dim] + [config.out_dim] * config.layers
        self.blocks = nn.ModuleList(
            MlpBlock(widths[i], config.hidden, widths[i + 1], config.batch_norm)
            for i in range(config.layers))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """f_l starts as the identity; f_m's weights Xavier-uniform; biases keep torch's default
        (the authors' ``nn.init.eye_`` and ``init_weights('xav')`` touch only matrices)."""
        nn.init.eye_(self.linear.weight)
        for module in self.blocks.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)

    def inner(self, rows: torch.Tensor) -> torch.Tensor:
        """f_l: the leaf rows after the intra-space linear layer (not normalised)."""
        return self.linear(rows)

    def outer(self, inner: torch.Tensor) -> torch.Tensor:
        """f_m then L2 norm: f_l's output -> base-space unit rows."""
        for block in self.blocks:
            inner = block(inner)
        return F.normalize(inner, dim=-1)

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        return self.outer(self.inner(rows))


class IdentityHead(nn.Module):
    """The frozen base space of an extended model: rows are only L2-normalised."""

    def __init__(self, in_dim: int, config: ProjectorConfig):
        super().__init__()
        # No weights; an empty buffer so that .to(device, dtype) and device look-ups still work.
        self.register_buffer("anchor", torch.zeros(0), persistent=False)

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        return F.normalize(rows, dim=-1)


def inner_and_output(projector: nn.Module, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(f_l rows, projected unit rows) of an Ex-MCR head in one pass; for any other projector
    the projected rows twice (its intra-space term then acts on its output, as in C-MCR)."""
    if isinstance(projector, ExMcrHead):
        inner = projector.inner(rows)
        return inner, projector.outer(inner)
    output = projector(rows)
    return output, output
