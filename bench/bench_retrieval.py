"""Benchmark: chunked memory retrieval against a naive full-matrix softmax.

What is compared (on the same random unit-row inputs, ``tau = 0.01`` by default):

* ``naive``   -- ``torch.softmax(Q @ M.T / tau, dim=1) @ M``: materialises the whole
  (queries x memory) score matrix, twice (scores and their softmax).
* ``chunked`` -- ``cmcr.method.retrieval.retrieve_pseudo_embeddings`` (exact streaming/online softmax
  over memory blocks, RAM bounded by ``query_chunk x memory_chunk``).
* ``top-k``   -- the same function with ``top_k=K`` (softmax over each query's K nearest memory
  rows only: an approximation, so its difference to ``naive`` is reported but not expected ~0).

Each variant runs in a fresh ``spawn``-ed process, so peak RAM is measured honestly: the child
creates its inputs, notes its resident set (VmRSS), resets the kernel's peak counter
(``/proc/self/clear_refs``), runs the variant and reads the peak (VmHWM). "peak extra" is
``peak - RSS after inputs - size of the output``: what the method itself needs on top of its
inputs and outputs. A background thread also samples the anonymous RSS (``RssAnon``) every few
ms in ``--scale`` mode only (sampling steals CPU from the 2 compute threads and slows them);
that column leaves out file-backed pages of the memory-mapped store, which the kernel can drop
at will, but being sampled it can miss a peak shorter than the interval.

How to read the ratios (printed from ONE run, variants side by side, because a small shared
machine is noisy): ``time chunked/naive`` near 1 means streaming costs no speed (both do the
same two GEMMs); ``peak-extra-RAM chunked/naive`` far below 1 is the point of the streaming.
``max |chunked - naive|`` must be ~1e-6 (float32 rounding): the streaming is exact.

``--scale`` runs only the chunked variant on a large memory (default 2k queries x 1M rows x 512,
kept as a float16 store in a temp dir) to show that its RAM stays bounded whatever the memory.

    python bench/bench_retrieval.py            # default comparison (< 2 minutes on 2 cores)
    python bench/bench_retrieval.py --scale    # bounded RAM on a 1M-row memory
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing as mp
import os
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

MIB = 2**20


# -- RAM measurement (inside the child) ---------------------------------------------------------
def status_bytes(field: str) -> int:
    """A ``kB`` field of /proc/self/status (VmRSS, VmHWM, RssAnon, ...) in bytes."""
    with open("/proc/self/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(field)


def reset_peak_rss() -> None:
    """Reset VmHWM to the current RSS (Linux >= 4.0), so the peak covers only what follows."""
    with open("/proc/self/clear_refs", "w", encoding="ascii") as handle:
        handle.write("5")


class AnonPeakSampler:
    """Samples RssAnon in a background thread; ``peak`` is the largest value seen."""

    def __init__(self, interval_s: float = 0.02):
        self.interval_s = interval_s
        self.peak = status_bytes("RssAnon")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.peak = max(self.peak, status_bytes("RssAnon"))

    def __enter__(self) -> "AnonPeakSampler":
        self._thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, status_bytes("RssAnon"))


# -- inputs and variants ------------------------------------------------------------------------
def unit_rows(rows: int, dim: int, seed: int) -> torch.Tensor:
    """Reproducible random unit rows (float32), built in slices to keep the creation peak low."""
    generator = torch.Generator().manual_seed(seed)
    out = torch.empty(rows, dim)
    for start in range(0, rows, 65536):
        block = torch.randn(min(65536, rows - start), dim, generator=generator)
        out[start:start + len(block)] = torch.nn.functional.normalize(block, dim=1)
    return out


def naive_retrieval(queries: torch.Tensor, memory: torch.Tensor, temperature: float) -> np.ndarray:
    with torch.inference_mode():
        return (torch.softmax(queries @ memory.T / temperature, dim=1) @ memory).numpy()


def chunked_retrieval(queries: torch.Tensor, memory: Any, temperature: float,
                      top_k: int | None, query_chunk: int, memory_chunk: int) -> np.ndarray:
    from cmcr.method.retrieval import retrieve_pseudo_embeddings
    return retrieve_pseudo_embeddings(queries, memory, temperature, top_k, device="cpu",
                                      query_chunk=query_chunk, memory_chunk=memory_chunk)


@dataclass
class Measurement:
    variant: str
    seconds: float
    inputs_mib: float
    output_mib: float
    peak_extra_mib: float  # VmHWM - RSS after inputs - output
    peak_extra_anon_mib: float | None  # sampled RssAnon peak - RssAnon after inputs - output
    output_path: str


def measure_variant(variant: str, settings: dict[str, Any], output_path: str,
                    results: "mp.Queue[dict[str, Any]]") -> None:
    """Child process: build inputs, run one variant, report time and peak extra RAM."""
    torch.set_num_threads(settings["threads"])
    queries = unit_rows(settings["queries"], settings["dim"], seed=1)
    if settings.get("store"):
        from cmcr.data.store import open_store
        memory: Any = open_store(settings["store"])
    else:
        memory = unit_rows(settings["memory"], settings["dim"], seed=2)
    inputs_bytes = queries.nbytes + (memory.nbytes if isinstance(memory, torch.Tensor) else 0)
    output_bytes = queries.nbytes  # (queries, dim) float32 either way
    rss_before, anon_before = status_bytes("VmRSS"), status_bytes("RssAnon")
    sampler = AnonPeakSampler() if settings["sample_anon"] else contextlib.nullcontext()
    reset_peak_rss()
    with sampler:
        started = time.perf_counter()
        result = run_variant(variant, queries, memory, settings)
        seconds = time.perf_counter() - started
    peak = status_bytes("VmHWM")
    np.save(output_path, result)
    anon_extra = (sampler.peak - anon_before - output_bytes) / MIB if settings["sample_anon"] else None
    results.put(asdict(Measurement(
        variant=variant, seconds=seconds, inputs_mib=inputs_bytes / MIB,
        output_mib=output_bytes / MIB, peak_extra_mib=(peak - rss_before - output_bytes) / MIB,
        peak_extra_anon_mib=anon_extra, output_path=output_path)))


def run_variant(variant: str, queries: torch.Tensor, memory: Any, settings: dict[str, Any]
                ) -> np.ndarray:
    if variant == "naive":
        return naive_retrieval(queries, memory, settings["temperature"])
    top_k = settings["top_k"] if variant == "top-k" else None
    return chunked_retrieval(queries, memory, settings["temperature"], top_k,
                             settings["query_chunk"], settings["memory_chunk"])


def run_in_child(variant: str, settings: dict[str, Any], work_dir: Path, repeat: int
                 ) -> Measurement:
    context = mp.get_context("spawn")
    results = context.Queue()
    output_path = str(work_dir / f"{variant}-{repeat}.npy")
    child = context.Process(target=measure_variant, args=(variant, settings, output_path, results))
    child.start()
    record = results.get()
    child.join()
    if child.exitcode != 0:
        raise RuntimeError(f"the {variant} child exited with code {child.exitcode}")
    return Measurement(**record)


# -- reporting ----------------------------------------------------------------------------------
def best_of(runs: list[Measurement]) -> Measurement:
    """The fastest repeat's time, with the largest peak seen (RAM is reported pessimistically)."""
    fastest = min(runs, key=lambda m: m.seconds)
    return Measurement(**{**asdict(fastest),
                          "peak_extra_mib": max(m.peak_extra_mib for m in runs),
                          "peak_extra_anon_mib": runs[0].peak_extra_anon_mib})


def print_table(measurements: list[Measurement]) -> None:
    sampled = measurements[0].peak_extra_anon_mib is not None
    header = f"{'variant':<9} {'time s':>8} {'peak extra RSS MiB':>19}"
    header += f" {'peak extra anon MiB':>20}" if sampled else ""
    print(header)
    print("-" * len(header))
    for m in measurements:
        line = f"{m.variant:<9} {m.seconds:>8.2f} {m.peak_extra_mib:>19.0f}"
        line += f" {m.peak_extra_anon_mib:>20.0f}" if sampled else ""
        print(line)


def max_abs_diff(path_a: str, path_b: str) -> float:
    return float(np.abs(np.load(path_a) - np.load(path_b)).max())


def print_comparison(measured: dict[str, Measurement]) -> None:
    naive = measured["naive"]
    for name in ("chunked", "top-k"):
        if name not in measured:
            continue
        other = measured[name]
        print(f"{name:>7} / naive: time {other.seconds / naive.seconds:.2f}x, "
              f"peak-extra-RAM {other.peak_extra_mib / naive.peak_extra_mib:.3f}x, "
              f"max |{name} - naive| = {max_abs_diff(other.output_path, naive.output_path):.2e}")


def write_memory_store(path: Path, rows: int, dim: int) -> None:
    """A float16 store of random unit rows, written slice by slice (never whole in RAM)."""
    from cmcr.data.store import StoreWriter
    generator = torch.Generator().manual_seed(2)
    writer = StoreWriter(path, dim=dim, dtype="float16", normalized=True, shard_rows=131072,
                         overwrite=True)
    for start in range(0, rows, 131072):
        count = min(131072, rows - start)
        block = torch.nn.functional.normalize(torch.randn(count, dim, generator=generator), dim=1)
        writer.append(block.numpy().astype(np.float16), [str(i) for i in range(start, start + count)])
    writer.close()


# -- modes --------------------------------------------------------------------------------------
def compare(args: argparse.Namespace, settings: dict[str, Any], work_dir: Path) -> None:
    variants = ["naive", "chunked"] + (["top-k"] if args.top_k else [])
    runs: dict[str, list[Measurement]] = {name: [] for name in variants}
    for repeat in range(args.repeats):
        for name in (variants if repeat % 2 == 0 else variants[::-1]):  # alternate the order
            runs[name].append(run_in_child(name, settings, work_dir, repeat))
    measured = {name: best_of(found) for name, found in runs.items()}
    first = next(iter(measured.values()))
    print(f"inputs {first.inputs_mib:.0f} MiB, output {first.output_mib:.0f} MiB "
          f"(both excluded from 'peak extra')")
    print_table(list(measured.values()))
    print()
    print_comparison(measured)


def scale(args: argparse.Namespace, settings: dict[str, Any], work_dir: Path) -> None:
    store_path = work_dir / "memory-store"
    started = time.perf_counter()
    write_memory_store(store_path, args.memory, args.dim)
    store_gib = args.memory * args.dim * 2 / 2**30
    print(f"wrote a {args.memory:,} x {args.dim} float16 memory store ({store_gib:.2f} GiB) "
          f"in {time.perf_counter() - started:.1f} s")
    measured = run_in_child("chunked", {**settings, "store": str(store_path), "sample_anon": True},
                            work_dir, 0)
    print_table([measured])
    float32_memory = args.memory * args.dim * 4 / MIB
    score_block = min(args.query_chunk, args.queries) * args.memory_chunk * 4 / MIB
    print(f"\nfor scale: the memory as float32 is {float32_memory:,.0f} MiB; the naive score "
          f"matrix would be {args.queries * args.memory * 4 / MIB:,.0f} MiB; one score block is "
          f"{score_block:.0f} MiB.")
    print("'peak extra RSS' counts the memory-mapped store's pages the kernel keeps resident "
          "(reclaimable page cache);\n'peak extra anon' is the RAM the retrieval really holds.")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--queries", type=int, default=None,
                        help="query rows (default: 12288, or 2000 with --scale)")
    parser.add_argument("--memory", type=int, default=None,
                        help="memory rows (default: 49152, or 1000000 with --scale)")
    parser.add_argument("--dim", type=int, default=512,
                        help="embedding width of queries and memory (default: 512)")
    parser.add_argument("--temperature", type=float, default=0.01,
                        help="tau of the retrieval softmax (default: 0.01, the paper's)")
    parser.add_argument("--top-k", type=int, default=64,
                        help="K of the top-k variant; 0 skips it (default: 64)")
    parser.add_argument("--query-chunk", type=int, default=4096,
                        help="query rows per block of the chunked variant (default: 4096)")
    parser.add_argument("--memory-chunk", type=int, default=16384,
                        help="memory rows per block of the chunked variant (default: 16384)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(),
                        help=f"torch threads in each child (default: {torch.get_num_threads()})")
    parser.add_argument("--repeats", type=int, default=1,
                        help="runs per variant, alternating order; the best time is kept (default: 1)")
    parser.add_argument("--scale", action="store_true",
                        help="only the chunked variant, on a large float16 memory store")
    args = parser.parse_args()
    args.queries = args.queries or (2000 if args.scale else 12288)
    args.memory = args.memory or (1_000_000 if args.scale else 49152)
    return args


def main() -> None:
    args = parse_args()
    settings = {key: getattr(args, key) for key in ("queries", "memory", "dim", "temperature",
                                                     "top_k", "query_chunk", "memory_chunk",
                                                     "threads")}
    settings["sample_anon"] = False
    print(f"torch {torch.__version__}, {args.threads} torch threads, {os.cpu_count()} CPUs; "
          f"{args.queries:,} queries x {args.memory:,} memory rows x {args.dim}, "
          f"chunks {args.query_chunk} x {args.memory_chunk}")
    with tempfile.TemporaryDirectory(prefix="cmcr-bench-") as tmp:
        (scale if args.scale else compare)(args, settings, Path(tmp))


if __name__ == "__main__":
    main()
