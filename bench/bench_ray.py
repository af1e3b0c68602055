"""Benchmark: the Ray path against the single-machine path, on the same inputs, side by side.

* embed: ``cmcr embed`` (cmcr.embed.embed_items: data-loader workers decode, the model runs in
  this process with cmcr's thread choice) against ``cmcr embed --ray``
  (cmcr.distributed.embed_on_ray: decoding tasks and 1-CPU encoding actors on a local Ray over
  this machine's usable cores), with the same ViT-B/32-shaped CLIP (random weights,
  bench_embed.py's), the same JPEGs and the same batches, in interleaved repeats (medians).
  Reported: each one's wall time (the Ray path's includes starting its actors and loading the
  model in them; starting Ray itself is timed apart), the steady throughput (items/s from the end
  of the first batch to the end of the last: start-up left out), the ratios Ray / single (the
  goal: >= 0.85), and whether the two stores are byte-identical.
* per-stage costs per item: decoding (file -> collated model inputs), encoding (the model) and
  writing (the store), measured here on one thread, and as the Ray run saw them (task and actor
  seconds summed over batches, divided by the items).
* retrieval: retrieve_pseudo_embeddings against retrieve_on_ray (query chunks as Ray tasks over
  a memory store on disk) on random rows: the time ratio and the largest difference.
* a scaling table computed from the per-item costs (see docs/scale.md).

    python bench/bench_ray.py                        # ~4 minutes on 2 CPU cores
    python bench/bench_ray.py --images 64 --repeats 1 --queries 2048
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from bench_embed import ASSETS, build_model, make_inputs


@dataclass
class Run:
    """One embedding run: wall seconds, and items/s between the first and the last batch."""

    seconds: float
    steady: float


def timed_embed(embed, items: list, batch_size: int) -> Run:
    """Run ``embed(on_batch)`` and time it, noting when each batch reached the store."""
    marks: list[float] = []
    began = time.perf_counter()
    embed(lambda number: marks.append(time.perf_counter()))
    seconds = time.perf_counter() - began
    steady = (len(items) - batch_size) / (marks[-1] - marks[0]) if len(marks) > 1 else 0.0
    return Run(seconds, steady)


def run_interleaved(spec: str, items: list, root: Path, args: argparse.Namespace):
    """The variants in turn, ``args.repeats`` times: seconds, the last Ray run's stages, and
    one store of each variant."""
    from cmcr.distributed import StageSeconds, embed_on_ray
    from cmcr.embed import embed_items
    from cmcr.spaces import load_space

    def single(threads: int, workers: int | None):
        def embed(out: Path, hook) -> None:
            torch.set_num_threads(threads)  # the model loads as in a fresh run
            embed_items(load_space(spec, device="cpu"), "image", items, out, workers=workers,
                        batch_size=args.batch_size, progress=False, on_batch=hook)
        return embed

    stages = StageSeconds()

    def on_ray(out: Path, hook) -> None:
        stages.__init__()
        embed_on_ray(spec, "image", items, out, space_options={"device": "cpu"},
                     batch_size=args.batch_size, actors=args.actors, progress=False,
                     on_batch=hook, stages=stages)

    variants = {"single": single(args.threads, None), "single 1+1": single(1, 1), "ray": on_ray}
    runs: dict[str, list[Run]] = {name: [] for name in variants}
    for repeat in range(args.repeats):
        for name, embed in variants.items():
            out = root / f"{name.replace(' ', '-')}-{repeat}"
            runs[name].append(timed_embed(lambda hook, embed=embed, out=out: embed(out, hook),
                                          items, args.batch_size))
    torch.set_num_threads(args.threads)
    return runs, stages, (root / "single-0", root / "ray-0")


def stage_costs(spec: str, items: list, batch_size: int) -> dict[str, float]:
    """Seconds per item of decoding, encoding and writing, in this process on one thread."""
    from cmcr.embed import Collate, ItemDataset
    from cmcr.spaces import load_space
    from cmcr.data.store import StoreWriter

    torch.set_num_threads(1)
    space = load_space(spec, device="cpu")
    preprocessor = space.preprocessor("image")
    dataset, collate = ItemDataset(items, preprocessor, "image"), Collate(preprocessor)
    began = time.perf_counter()
    batches = [collate([dataset[i] for i in range(lo, min(lo + batch_size, len(items)))])
               for lo in range(0, len(items), batch_size)]
    decode = time.perf_counter() - began
    space.encode("image", batches[0].inputs)  # load and warm the tower
    began = time.perf_counter()
    rows = [space.encode("image", batch.inputs).numpy() for batch in batches]
    encode = time.perf_counter() - began
    with tempfile.TemporaryDirectory() as tmp:
        began = time.perf_counter()
        writer = StoreWriter(Path(tmp) / "s", dim=space.dim, shard_rows=4096)
        for number, block in enumerate(rows):
            writer.append(block, [f"{number}-{i}" for i in range(len(block))])
        writer.close()
        write = time.perf_counter() - began
    return {"decode": decode / len(items), "encode": encode / len(items),
            "write": write / len(items)}


def same_store(first: Path, second: Path) -> bool:
    names = sorted(p.name for p in first.iterdir() if p.name != "embed.json")
    return names == sorted(p.name for p in second.iterdir() if p.name != "embed.json") and all(
        (first / name).read_bytes() == (second / name).read_bytes() for name in names)


def time_retrieval(root: Path, args: argparse.Namespace) -> dict[str, float]:
    """Single-machine and Ray retrieval on the same random rows (memory: a store on disk)."""
    from cmcr.distributed import retrieve_on_ray
    from cmcr.method.retrieval import retrieve_pseudo_embeddings
    from cmcr.data.store import write_store

    rng = np.random.default_rng(0)
    queries = rng.standard_normal((args.queries, args.dim), dtype=np.float32)
    memory = write_store(root / "memory", rng.standard_normal((args.memory, args.dim),
                                                              dtype=np.float32))
    torch.set_num_threads(args.threads)
    seconds: dict[str, float] = {}
    began = time.perf_counter()
    expected = retrieve_pseudo_embeddings(queries, memory, 0.01, device="cpu")
    seconds["single"] = time.perf_counter() - began
    for name in ("ray (cold)", "ray (warm)"):  # cold: the first tasks start their workers
        began = time.perf_counter()
        on_ray = retrieve_on_ray(queries, memory, 0.01, query_chunk=args.query_chunk)
        seconds[name] = time.perf_counter() - began
    return {**seconds, "difference": float(np.abs(on_ray - expected).max())}


def print_embed(args, items, runs: dict[str, list[Run]], stages, identical: bool,
                ray_start: float) -> None:
    print(f"embed: ViT-B/32-shaped CLIP (random weights), {len(items)} JPEGs "
          f"({'1920x1080 reference' if ASSETS.is_dir() else '1280x720 generated'}), batch "
          f"{args.batch_size}, {args.repeats} interleaved repeats, {os.cpu_count()} CPUs")
    print(f"  single: cmcr's choice (model on {args.threads} threads, data-loader workers); "
          "single 1+1: model on 1 thread, 1 worker (the Ray path's split of 2 cores); ray: "
          f"{args.actors or 'default'} actor(s) of 1 CPU and 1 thread, decoding tasks of 1 CPU; "
          f"starting the local Ray took {ray_start:.1f} s (not counted)")
    medians = {}
    for name, values in runs.items():
        wall, steady = [r.seconds for r in values], [r.steady for r in values]
        medians[name] = (float(np.median(wall)), float(np.median(steady)))
        print(f"  {name:<10} wall median {medians[name][0]:6.2f} s ({min(wall):.2f}-{max(wall):.2f}"
              f"), {len(items) / medians[name][0]:5.1f} items/s; steady {medians[name][1]:5.1f} "
              f"items/s ({min(steady):.1f}-{max(steady):.1f})")
    for reference in ("single", "single 1+1"):
        wall_ratio = medians[reference][0] / medians["ray"][0]
        steady_ratio = medians["ray"][1] / medians[reference][1]
        print(f"  throughput ray / {reference}: wall {wall_ratio:.2f}x, steady {steady_ratio:.2f}x "
              "(goal >= 0.85)")
    print(f"  stores byte-identical (single, ray): {'yes' if identical else 'NO'}")
    count = max(1, stages.items)
    print(f"  Ray stages (last run), per item: decode {1e3 * stages.decode / count:.1f} ms (tasks),"
          f" encode {1e3 * stages.encode / count:.1f} ms (actors), write "
          f"{1e3 * stages.write / count:.2f} ms (driver)")


def print_scaling(costs: dict[str, float]) -> None:
    """Items/s per CPU node (best split of its cores) and the cores a GPU needs, from costs."""
    decode, encode = costs["decode"], costs["encode"]
    print(f"per-stage costs here, one thread, per item: decode {1e3 * decode:.1f} ms, encode "
          f"{1e3 * encode:.1f} ms, write {1e3 * costs['write']:.3f} ms")
    print("CPU node of C cores, A 1-CPU actors (best A), expected items/s = "
          "min((C - A) / decode, A / encode):")
    for cores in (2, 4, 8, 16, 32, 64):
        rate, actors = max((min((cores - a) / decode, a / encode), a) for a in range(1, cores))
        print(f"  C={cores:<3} A={actors:<3} {rate:8.1f} items/s")
    print("CPU cores that keep one GPU busy, for a GPU encoding R items/s: R x decode:")
    for rate in (250, 500, 1000, 2000, 4000):
        print(f"  R={rate:<5} {rate * decode:6.1f} decoding cores")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=128, help="JPEGs to embed (default: 128)")
    parser.add_argument("--batch-size", type=int, default=16, help="images a batch (default: 16)")
    parser.add_argument("--actors", type=int, default=None, help="Ray encoding actors")
    parser.add_argument("--repeats", type=int, default=2, help="interleaved repeats (default: 2)")
    parser.add_argument("--queries", type=int, default=8192, help="retrieval queries")
    parser.add_argument("--memory", type=int, default=32768, help="retrieval memory rows")
    parser.add_argument("--dim", type=int, default=512, help="retrieval dim")
    parser.add_argument("--query-chunk", type=int, default=2048, help="queries a Ray task")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from cmcr.distributed import connect_ray
    from cmcr.embed import collect_inputs
    from cmcr.runtime.threads import configure_threads

    args.threads = configure_threads()
    root = Path(tempfile.mkdtemp(prefix="bench-ray-"))
    try:
        spec = f"clip:{build_model(root / 'model', 'vit-b32')}"
        make_inputs(root / "images", args.images)
        items = collect_inputs(root / "images", "image")
        began = time.perf_counter()
        connect_ray()
        ray_start = time.perf_counter() - began
        runs, stages, stores = run_interleaved(spec, items, root, args)
        print_embed(args, items, runs, stages, same_store(*stores), ray_start)
        retrieval = time_retrieval(root, args)
        cold, warm = (retrieval[f"ray ({kind})"] for kind in ("cold", "warm"))
        print(f"retrieval: {args.queries} queries x {args.memory} memory x {args.dim}, tau 0.01, "
              f"{args.query_chunk} queries a Ray task: single {retrieval['single']:.2f} s "
              f"({args.threads} threads); Ray cold {cold:.2f} s "
              f"({cold / retrieval['single']:.2f}x), warm {warm:.2f} s "
              f"({warm / retrieval['single']:.2f}x); max |difference| "
              f"{retrieval['difference']:.1e}")
        print_scaling(stage_costs(spec, items, args.batch_size))
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
