"""Ex-MCR's heads: the leaf head that extends a space into a frozen base space, and the
identity that stands for the base itself; and the BatchNorm every trained head uses.

The leaf head follows the authors' ``exmcr/exmcr_projector.py`` (``Ex_MCR_Head``): ``Head1`` is a
square Linear initialised to the identity (f_l, the intra-space part), ``Head2`` two
residual-free blocks Linear BN ReLU Linear BN with Xavier-uniform weights (f_m, the inter-space
part), then L2 normalisation. Module names mirror theirs (``blocks.0.net1.0`` is their
``Head2.mlp1.net1.0``), so their checkpoints map key by key (cmcr.official_exmcr).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cmcr.config import ProjectorConfig


class ThreadStableBatchNorm1d(nn.BatchNorm1d):
    """``nn.BatchNorm1d`` whose training statistics are column means (one reduction per column):
    torch's fused CPU kernel splits its sums by thread, so training with 1 and 2 threads drifted
    apart by up to 2e-3 in the weights. Same parameters, buffers and eval behaviour."""

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        if not self.training or rows.dim() != 2:
            return super().forward(rows)
        mean = rows.mean(0)
        centred = rows - mean
        variance = (centred * centred).mean(0)
        if self.track_running_stats and self.running_mean is not None:
            self._update_running_stats(mean.detach(), variance.detach(), len(rows))
        normalised = centred * torch.rsqrt(variance + self.eps)
        return normalised * self.weight + self.bias if self.affine else normalised

    @torch.no_grad()
    def _update_running_stats(self, mean: torch.Tensor, variance: torch.Tensor, count: int) -> None:
        """torch's rule: the running variance takes the unbiased batch variance."""
        self.num_batches_tracked += 1
        momentum = (1.0 / float(self.num_batches_tracked) if self.momentum is None
                    else self.momentum)
        unbiased = variance * (count / max(1, count - 1))
        self.running_mean.mul_(1 - momentum).add_(mean, alpha=momentum)
        self.running_var.mul_(1 - momentum).add_(unbiased, alpha=momentum)


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
