"""Benchmark: C-MCR training throughput against the bare matrix products of a training step.

What is compared (two 512-d spaces, projector preset ``clap-clip``: Linear 512->1024, BN, ReLU,
Linear 1024->512, BN; synthetic unit rows; batch B = 4096 shared-modality items by default):

* ``train step`` -- ``cmcr.method.train._train_step`` on batches already in RAM: noise, both projectors
  forward on the concatenated 2B rows (queries + pseudo partners) per space, the C-MCR loss
  (two InfoNCE terms on B x B logits, the intra term), backward, AdamW and scheduler steps.
* ``ceiling``    -- only the matrix products that step cannot avoid, with ``torch.mm`` on
  tensors of the same shapes: per space and Linear layer, the forward ``X @ W.T`` on 2B rows,
  the backward ``G.T @ X`` (weight gradient) and ``G @ W`` (input gradient, not for the first
  layer, whose input needs none); per InfoNCE term (query pair, pseudo pair) the forward
  ``L @ R.T`` (B x B logits; ``logits.T`` is a view, not a product) and its two backward
  products ``G @ R`` and ``G.T @ L``.
* ``train_projectors`` -- the whole public training loop for one epoch over ``--rows`` rows
  (adds batch gathering and the end-of-epoch checkpoint); compared with ceiling steps timed
  right before and after that epoch.

The two step timings are interleaved (ceiling, step, ceiling, step, ...) and their medians are
compared, so the noise of a small shared machine hits both alike. How to read the ratio
``train step / ceiling`` (samples/s over samples/s): 1.0 would mean the step costs nothing but
its unavoidable GEMMs, i.e. it runs at the machine's ceiling for this model; the rest is the
elementwise work (noise, BatchNorm, ReLU, softmax/cross-entropy, normalisation, AdamW) and
the allocation of temporaries. A "sample" is one shared-modality item: one step consumes B of
them (and projects 4B rows: queries and pseudo partners in both spaces).

    python bench/bench_train.py            # default (< 2 minutes on 2 cores)
    python bench/bench_train.py --batch-size 1024 --steps 8
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from dataclasses import dataclass
from typing import Callable

import torch

from cmcr.config import MethodConfig, ModelConfig, ProjectorConfig, SpaceSpec, TrainConfig, from_dict
from cmcr.method.model import ConnectedModel
from cmcr.method.retrieval import as_store
from cmcr.method.train import TrainingData, _train_step, cmcr_batch_loss, train_projectors

SPACES = ("clip", "clap")


# -- model and data -----------------------------------------------------------------------------
def build_model(dim: int, preset: str) -> ConnectedModel:
    """A fresh connected model as ``cmcr.pipeline.build_model`` makes it, for two dim-d spaces."""
    projector = from_dict(ProjectorConfig, {"preset": preset})
    spaces = {"clip": SpaceSpec(modalities=["text", "image"], dim=dim),
              "clap": SpaceSpec(modalities=["text", "audio"], dim=dim)}
    config = ModelConfig(spaces=spaces, projectors={name: projector for name in SPACES},
                         shared_modality="text", shared_modality_space="clip")
    return ConnectedModel(config)


def unit_rows(rows: int, dim: int, generator: torch.Generator) -> torch.Tensor:
    return torch.nn.functional.normalize(torch.randn(rows, dim, generator=generator), dim=1)


def synthetic_data(rows: int, dim: int, seed: int = 0) -> list[torch.Tensor]:
    """Queries of space a, b, then pseudo partners of a, b (the order ``_train_step`` expects)."""
    generator = torch.Generator().manual_seed(seed)
    return [unit_rows(rows, dim, generator) for _ in range(4)]


def layer_widths(model: ConnectedModel, space: str) -> list[int]:
    """[in_dim, out of Linear 1, out of Linear 2, ...] of one projector."""
    linears = [m for m in model.projectors[space].net if isinstance(m, torch.nn.Linear)]
    return [linears[0].in_features] + [layer.out_features for layer in linears]


# -- the ceiling: bare GEMMs of one step --------------------------------------------------------
@dataclass
class Product:
    """One ``torch.mm(left, right)``, with ``right`` possibly a transposed view."""

    left: torch.Tensor
    right: torch.Tensor

    @property
    def flops(self) -> int:
        return 2 * self.left.shape[0] * self.left.shape[1] * self.right.shape[1]


def linear_products(rows: int, widths: list[int]) -> list[Product]:
    """Forward and backward products of a stack of Linear layers on ``rows`` inputs."""
    products = []
    for index, (width_in, width_out) in enumerate(zip(widths, widths[1:])):
        inputs, weight = torch.randn(rows, width_in), torch.randn(width_out, width_in)
        grad_out = torch.randn(rows, width_out)
        products.append(Product(inputs, weight.T))  # forward: X @ W.T
        products.append(Product(grad_out.T, inputs))  # weight gradient: G.T @ X
        if index > 0:
            products.append(Product(grad_out, weight))  # input gradient: G @ W
    return products


def info_nce_products(batch: int, dim: int) -> list[Product]:
    """Logits ``L @ R.T`` (B x B) and their two backward products."""
    left, right, grad = torch.randn(batch, dim), torch.randn(batch, dim), torch.randn(batch, batch)
    return [Product(left, right.T), Product(grad, right), Product(grad.T, left)]


def ceiling_products(model: ConnectedModel, batch: int, pseudo_pairs: bool = True) -> list[Product]:
    rows = 2 * batch if pseudo_pairs else batch
    products = [p for space in SPACES for p in linear_products(rows, layer_widths(model, space))]
    for _ in range(2 if pseudo_pairs else 1):
        products += info_nce_products(batch, model.out_dim)
    return products


def ceiling_step(products: list[Product]) -> Callable[[], None]:
    def run() -> None:
        for product in products:
            torch.mm(product.left, product.right)
    return run


# -- the real step ------------------------------------------------------------------------------
def real_step(model: ConnectedModel, data: list[torch.Tensor], batch: int,
              method: MethodConfig) -> Callable[[], None]:
    """One ``_train_step`` per call, cycling over pre-sliced batches of ``data``."""
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    generator = torch.Generator().manual_seed(0)
    batches = [[t[start:start + batch] for t in data]
               for start in range(0, len(data[0]) - batch + 1, batch)]
    calls = iter(range(10**9))
    loss = cmcr_batch_loss(SPACES, method)

    def run() -> None:
        _train_step(model, batches[next(calls) % len(batches)], loss, generator, optimizer,
                    scheduler)
    return run


def timed(function: Callable[[], None]) -> float:
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def interleaved_medians(first: Callable[[], None], second: Callable[[], None], steps: int
                        ) -> tuple[float, float]:
    """Median seconds of each, timed alternately after one untimed warm-up call each."""
    first(), second()
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(steps):
        times[0].append(timed(first))
        times[1].append(timed(second))
    return statistics.median(times[0]), statistics.median(times[1])


def time_train_projectors(model: ConnectedModel, data: list[torch.Tensor], batch: int,
                          method: MethodConfig) -> tuple[float, int]:
    """Seconds for one epoch of ``train_projectors`` and the number of samples it used."""
    training = TrainingData(space_names=SPACES, queries=(as_store(data[0]), as_store(data[1])),
                            pseudo=(as_store(data[2]), as_store(data[3])))
    train = TrainConfig(epochs=1, batch_size=batch)
    with tempfile.TemporaryDirectory(prefix="cmcr-bench-train-") as out_dir:
        started = time.perf_counter()
        train_projectors(model, training, train, method, out_dir, progress=False)
        seconds = time.perf_counter() - started
    return seconds, (len(data[0]) // batch) * batch


def time_epoch_between_ceilings(args: argparse.Namespace, data: list[torch.Tensor],
                                products: list[Product]) -> tuple[float, float]:
    """Seconds per step of one train_projectors epoch, and the median ceiling step around it."""
    ceiling = ceiling_step(products)
    before = [timed(ceiling) for _ in range(2)]
    seconds, samples = time_train_projectors(build_model(args.dim, args.preset), data,
                                             args.batch_size, MethodConfig())
    after = [timed(ceiling) for _ in range(2)]
    return seconds * args.batch_size / samples, statistics.median(before + after)


# -- main ---------------------------------------------------------------------------------------
def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--rows", type=int, default=16384, help="synthetic training rows")
    parser.add_argument("--dim", type=int, default=512, help="dim of both frozen spaces")
    parser.add_argument("--preset", default="clap-clip", help="projector preset")
    parser.add_argument("--batch-size", type=int, default=4096, help="rows a step (the paper's)")
    parser.add_argument("--steps", type=int, default=4,
                        help="timed steps of each (ceiling and train step, interleaved)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(),
                        help="torch intra-op threads")
    parser.add_argument("--skip-train-projectors", action="store_true",
                        help="do not time the whole train_projectors epoch")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    batch = args.batch_size
    model, method = build_model(args.dim, args.preset), MethodConfig()
    data = synthetic_data(args.rows, args.dim)
    products = ceiling_products(model, batch)
    gflop = sum(p.flops for p in products) / 1e9
    print(f"torch {torch.__version__}, {torch.get_num_threads()} torch threads; "
          f"{args.rows:,} rows x {args.dim}, batch {batch}, projector {args.preset} "
          f"{' -> '.join(map(str, layer_widths(model, SPACES[0])))}")
    print(f"ceiling: {len(products)} GEMMs, {gflop:.1f} GFLOP per step")
    ceiling_s, step_s = interleaved_medians(ceiling_step(products),
                                            real_step(model, data, batch, method), args.steps)
    rows = [("ceiling (bare GEMMs)", ceiling_s), ("_train_step", step_s)]
    if not args.skip_train_projectors:
        epoch_s, epoch_ceiling_s = time_epoch_between_ceilings(args, data, products)
        rows += [("ceiling (around the epoch)", epoch_ceiling_s),
                 ("train_projectors (1 epoch)", epoch_s)]
    print(f"\n{'what':<28} {'s/step':>8} {'samples/s':>10} {'GFLOP/s':>8}")
    for name, seconds in rows:
        print(f"{name:<28} {seconds:>8.3f} {batch / seconds:>10.0f} {gflop / seconds:>8.1f}")
    print(f"\n_train_step / ceiling: {ceiling_s / step_s:.2f} of the bare-GEMM throughput "
          f"(median of {args.steps} interleaved steps)")
    if not args.skip_train_projectors:
        print(f"train_projectors / ceiling: {epoch_ceiling_s / epoch_s:.2f} "
              f"(includes batch gathering and the checkpoint; ceiling timed around the epoch)")


if __name__ == "__main__":
    main()
