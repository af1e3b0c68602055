"""Benchmark: the search index (exact vs approximate at 1M rows) and the server under load.

Part 1, the index (``--rows`` x ``--dim`` generated joint-space rows in a float16 store):
rows are drawn around ``--clusters`` random centres (cosine ~0.7 to their centre, as real
embeddings cluster by meaning; uniform random rows have no neighbourhoods for any index to find).
Each variant -- ``exact`` (FAISS Flat) and ``auto`` (the rule in cmcr.serve.ann: IVF with
recall-tuned nprobe at this size) -- is built by cmcr's own segment builder in a fresh ``spawn``-ed
process, which reports build seconds and its peak anonymous RAM (sampled every 20 ms; file-backed
pages of the memory-mapped store are the kernel's to drop and are left out). Then both are opened
through ``cmcr.Index`` and answer the same held-out queries one at a time (as a server does),
``exact`` and ``auto`` taking turns for ``--repeats`` rounds (the order alternating), so a load
that comes and goes on a shared machine hits both alike: min / median / max over the rounds of
each one's p50 (and p99), recall@10 of ``auto`` against ``exact``, and the speed-up at the median.

Part 2, the server (needs ``cmcr demo --out runs/demo`` first): ``cmcr serve`` runs as its own
process on 127.0.0.1; the same text and audio-file queries go, in turns for ``--repeats`` rounds,
(a) through the Python API in this process and (b) over HTTP from one client, one at a time;
the transport (an HTTP round trip that does no work: ``GET /metrics``) is timed in the same
rounds, so (a) can be compared with (b) minus transport. Both use cmcr's thread choice (the
library applies it at ``Index.open``, the command line at start). Then (c) ``--clients``
concurrent clients. Every loop is bounded by a request count and a deadline and stops by itself.
Client and server share the machine's cores, so (c) measures both.

How much an approximate index saves depends on the rows' neighbourhoods; these three runs land
in the three regimes of docs/serve.md (about 10, 5 and 15 minutes on 2 cores):

    python bench/bench_search.py --skip-server                  # 1M rows, 4,096 concepts: IVF
    python bench/bench_search.py --skip-server --rows 200000 --clusters 13000
                                            # ~15 rows a concept: IVF must probe every list -> HNSW32
    python bench/bench_search.py --skip-server --clusters 65536  # HNSW misses 0.95 too -> exact
    python bench/bench_search.py --skip-index --demo runs/demo --clients 32
"""

from __future__ import annotations

import argparse
import functools
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

import numpy as np

MIB = 2**20
TEXT_QUERIES = ["a dog barking", "a bell ringing", "a siren", "a clock ticking", "a drum",
                "a bird singing", "water running", "an engine", "a cat", "a phone ringing",
                "a door knocking", "a whistle", "a horn", "wind blowing", "a baby crying", "a bee"]


# -- generated rows ------------------------------------------------------------------------------
def clustered_rows(count: int, dim: int, centres: np.ndarray, seed: int) -> np.ndarray:
    generator = np.random.default_rng(seed)
    noise = generator.standard_normal((count, dim), dtype=np.float32) / np.sqrt(dim)
    rows = centres[generator.integers(0, len(centres), count)] + noise
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def make_centres(clusters: int, dim: int, seed: int = 0) -> np.ndarray:
    centres = np.random.default_rng(seed).standard_normal((clusters, dim), dtype=np.float32)
    return centres / np.linalg.norm(centres, axis=1, keepdims=True)


def write_rows(path: Path, rows: int, dim: int, clusters: int, chunk: int = 65536) -> None:
    from cmcr.data.store import StoreWriter

    centres = make_centres(clusters, dim)
    writer = StoreWriter(path, dim=dim, space="bench:generated", modality="image",
                         dtype="float16", normalized=True, overwrite=True)
    for number, start in enumerate(range(0, rows, chunk)):
        block = clustered_rows(min(chunk, rows - start), dim, centres, seed=1000 + number)
        writer.append(block, [f"row-{i}" for i in range(start, start + len(block))])
    writer.close()


# -- building, in a fresh process ------------------------------------------------------------------
def anon_rss() -> int:
    with open("/proc/self/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    return 0


def build_child(store_dir: str, out_dir: str, index_type: str, queue: Any) -> None:
    """Build one index of the generated store (rows are already joint-space: identity projector)."""
    from cmcr.serve.index import Collection, IndexManifest, build_collection, write_manifest
    from cmcr.data.store import open_store

    store = open_store(store_dir)
    baseline, peak, done = anon_rss(), [0], threading.Event()

    def sample() -> None:
        while not done.wait(0.02):
            peak[0] = max(peak[0], anon_rss())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    began = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    collection = Collection(name="generated", store=store_dir, space="bench",
                            frozen_space=None, modality="image", rows=len(store), start=0,
                            segment="segment-00000", factory="", reason="")
    build_collection(out / collection.segment, store, lambda rows: rows, store.dim, collection,
                     index_type=index_type)
    write_manifest(out, IndexManifest(model="(bench: generated rows)", model_digest="0" * 64,
                                      dim=store.dim, collections=[collection]))  # no model
    seconds = time.perf_counter() - began
    done.set()
    sampler.join()
    queue.put({"seconds": seconds, "peak_extra_anon_mib": (peak[0] - baseline) / MIB,
               "factory": collection.factory, "search": f"{collection.search_parameter}="
               f"{collection.search_value}" if collection.search_parameter else "-",
               "tuned_recall": collection.tuned_recall,
               "index_mib": (out / "segment-00000.faiss").stat().st_size / MIB})


def build_in_child(store_dir: Path, out_dir: Path, index_type: str) -> dict[str, Any]:
    context = mp.get_context("spawn")
    queue = context.Queue()
    child = context.Process(target=build_child, args=(str(store_dir), str(out_dir), index_type,
                                                      queue))
    child.start()
    result = queue.get()
    child.join()
    return result


# -- timing ------------------------------------------------------------------------------------------
def percentiles(seconds: list[float]) -> dict[str, float]:
    ordered = sorted(seconds)
    pick = lambda q: 1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    return {"p50_ms": pick(0.50), "p99_ms": pick(0.99),
            "per_s": len(ordered) / sum(ordered) if sum(ordered) else 0.0}


def timed_calls(call: Callable[[Any], Any], inputs: list[Any]) -> tuple[list[float], list[Any]]:
    seconds, outputs = [], []
    for item in inputs:
        began = time.perf_counter()
        outputs.append(call(item))
        seconds.append(time.perf_counter() - began)
    return seconds, outputs


def interleaved(calls: dict[str, Callable[[Any], Any]], inputs: list[Any], repeats: int
                ) -> tuple[dict[str, dict[str, list[float]]], dict[str, list[Any]]]:
    """Each call over all ``inputs``, taking turns for ``repeats`` rounds (order reversed every
    other round): {name: {"p50_ms": [per round], "p99_ms": [...]}}, and each one's outputs."""
    rounds: dict[str, dict[str, list[float]]] = {name: {"p50_ms": [], "p99_ms": []}
                                                 for name in calls}
    outputs: dict[str, list[Any]] = {}
    names = list(calls)
    for number in range(repeats):
        for name in (names if number % 2 == 0 else names[::-1]):
            seconds, outputs[name] = timed_calls(calls[name], inputs)
            for key, value in percentiles(seconds).items():
                if key in rounds[name]:
                    rounds[name][key].append(value)
    return rounds, outputs


def spread(values: list[float]) -> str:
    """'min / median / max' of one measurement's rounds."""
    return " / ".join(f"{v:.2f}" for v in (min(values), float(np.median(values)), max(values)))


def index_part(args: argparse.Namespace, workdir: Path) -> None:
    from cmcr import Index
    from cmcr.serve import ann

    store = workdir / "store"
    print(f"writing {args.rows:,} x {args.dim} generated rows (float16 store) ...", flush=True)
    write_rows(store, args.rows, args.dim, args.clusters)
    builds = {variant: build_in_child(store, workdir / variant, variant)
              for variant in ("exact", "auto")}
    centres = make_centres(args.clusters, args.dim)
    queries = ann.perturbed_queries(clustered_rows(args.queries, args.dim, centres, seed=7), seed=8)
    calls = {}
    for variant in builds:
        index = Index.open(workdir / variant)
        index.search(vector=queries[0], k=10)  # opens the segment
        calls[variant] = functools.partial(lambda opened, q: opened.search(vector=q, k=10), index)
    timings, hits = interleaved(calls, list(queries), args.repeats)
    found = {variant: np.array([[h.row for h in result] for result in hits[variant]])
             for variant in builds}
    recall = ann.recall_at_k(found["auto"], found["exact"])
    print_index_table(args, builds, timings, recall)


def print_index_table(args: argparse.Namespace, builds: dict, timings: dict, recall: float) -> None:
    print(f"\n{args.rows:,} x {args.dim} rows around {args.clusters:,} centres, {args.queries} "
          f"held-out queries one at a time, k=10, {args.repeats} interleaved rounds "
          f"({threads_note()})")
    print(f"{'variant':<7} {'index':<16} {'search':<12} {'build s':>8} {'peak RAM MiB':>13} "
          f"{'index MiB':>10} {'p50 ms min / median / max':>26} {'p99 ms median':>14}")
    for variant, build in builds.items():
        timing = timings[variant]
        print(f"{variant:<7} {build['factory']:<16} {build['search']:<12} {build['seconds']:>8.1f} "
              f"{build['peak_extra_anon_mib']:>13.0f} {build['index_mib']:>10.0f} "
              f"{spread(timing['p50_ms']):>26} {np.median(timing['p99_ms']):>14.2f}")
    speedup = np.median(timings["exact"]["p50_ms"]) / np.median(timings["auto"]["p50_ms"])
    print(f"auto vs exact: {speedup:.1f}x faster at the median p50 (goal >= 10x), recall@10 "
          f"{recall:.3f} (goal >= 0.95; tuned at build: {builds['auto']['tuned_recall']})")


def threads_note() -> str:
    import torch

    return f"torch {torch.get_num_threads()} thread(s) in this process"


# -- the server ----------------------------------------------------------------------------------
def start_server(index_dir: Path, port: int) -> subprocess.Popen:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from search_fixtures import wait_until_serving

    process = subprocess.Popen([sys.executable, "-m", "cmcr", "serve", str(index_dir), "--port",
                                str(port), "--device", "cpu"], stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
    wait_until_serving(f"http://127.0.0.1:{port}", process)
    return process


def http_get(port: int, path: str) -> int:
    """One GET, its answer read: with ``/metrics``, the transport alone (no search work)."""
    import http.client

    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        connection.request("GET", path)
        answer = connection.getresponse()
        answer.read()
        return answer.status
    finally:
        connection.close()


def http_search(port: int, query: Any) -> int:
    import http.client

    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        if isinstance(query, str):
            connection.request("GET", "/api/search?" + urllib.parse.urlencode(
                {"q": query, "k": 10, "modality": "image"}))
        else:
            boundary = uuid.uuid4().hex
            body = (f'--{boundary}\r\nContent-Disposition: form-data; name="modality"\r\n\r\nimage'
                    f'\r\n--{boundary}\r\nContent-Disposition: form-data; name="file"; '
                    f'filename="q.wav"\r\n\r\n').encode() + query + f"\r\n--{boundary}--\r\n".encode()
            connection.request("POST", "/api/search", body=body, headers={
                "Content-Type": f"multipart/form-data; boundary={boundary}"})
        answer = connection.getresponse()
        answer.read()
        return answer.status
    finally:
        connection.close()


def concurrent_load(port: int, queries: list[Any], clients: int, per_client: int,
                    deadline_s: float) -> dict[str, float]:
    """``clients`` threads, each sending at most ``per_client`` requests before the deadline."""
    stop_at = time.monotonic() + deadline_s
    latencies: list[float] = []
    failures = [0]

    def client(number: int) -> None:
        for step in range(per_client):
            if time.monotonic() > stop_at:
                return
            began = time.perf_counter()
            status = http_search(port, queries[(number + step) % len(queries)])
            latencies.append(time.perf_counter() - began)
            failures[0] += status != 200

    began = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, range(clients)))
    wall = time.perf_counter() - began
    stats = percentiles(latencies)
    stats["per_s"] = len(latencies) / wall
    stats["failures"] = failures[0]
    return stats


def server_part(args: argparse.Namespace) -> None:
    from cmcr import Index

    index = Index.open(args.demo, device="cpu")
    audio = [index.result(c.start + i, 0).source for c in index.manifest.collections
             if c.modality == "audio" for i in range(min(16, c.rows))]
    audio_bytes = [Path(p).read_bytes() for p in audio]
    kinds = {"text": TEXT_QUERIES, "audio file": audio_bytes}
    python_calls = {"text": lambda q: index.search(text=q, modality="image"),
                    "audio file": lambda q: index.search(audio=audio[audio_bytes.index(q)],
                                                         modality="image")}
    port = 8000 + os.getpid() % 1000
    process = start_server(index.path, port)
    rows = []
    try:
        for kind, queries in kinds.items():
            python_calls[kind](queries[0])  # loads the towers
            http_search(port, queries[0])
            timings, _ = interleaved({"python": python_calls[kind],
                                      "http": functools.partial(http_search, port),
                                      "transport": lambda q: http_get(port, "/metrics")},
                                     queries * 2, args.repeats)
            many = concurrent_load(port, queries, args.clients, args.per_client, args.deadline)
            rows.append((kind, timings, many))
    finally:
        process.terminate()
        process.wait(timeout=30)
    print_server_table(args, rows)


def print_server_table(args: argparse.Namespace, rows: list) -> None:
    print(f"\nserver on 127.0.0.1 ({args.demo}); queries return the 10 best images; p50 in ms, "
          f"min / median / max over {args.repeats} interleaved rounds ({threads_note()})")
    print(f"{'query':<11} {'python p50':>20} {'http p50':>20} {'transport':>10} "
          f"{'python / (http - transport)':>28} {f'{args.clients} clients q/s':>15} "
          f"{'p50 ms':>8} {'p99 ms':>8} {'failed':>7}")
    for kind, timings, many in rows:
        python, http, transport = (float(np.median(timings[name]["p50_ms"]))
                                   for name in ("python", "http", "transport"))
        ratio = python / max(http - transport, 1e-9)
        print(f"{kind:<11} {spread(timings['python']['p50_ms']):>20} "
              f"{spread(timings['http']['p50_ms']):>20} {transport:>10.2f} "
              f"{ratio:>22.2f} (goal <= 1.5) {many['per_s']:>9.1f} {many['p50_ms']:>8.1f} "
              f"{many['p99_ms']:>8.1f} {many['failures']:>7}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000, help="generated rows (default: 1M)")
    parser.add_argument("--dim", type=int, default=512, help="joint-space dims (default: 512)")
    parser.add_argument("--clusters", type=int, default=4096,
                        help="centres the rows are drawn around (default: 4096)")
    parser.add_argument("--queries", type=int, default=200, help="held-out queries (default: 200)")
    parser.add_argument("--repeats", type=int, default=5,
                        help="interleaved rounds of every timing (default: 5)")
    parser.add_argument("--workdir", default=None, help="where to write (default: a temp dir)")
    parser.add_argument("--demo", default="runs/demo", help="a demo output (default: runs/demo)")
    parser.add_argument("--clients", type=int, default=32, help="concurrent clients (default: 32)")
    parser.add_argument("--per-client", type=int, default=8,
                        help="requests each client sends at most (default: 8)")
    parser.add_argument("--deadline", type=float, default=60.0,
                        help="seconds after which clients stop sending (default: 60)")
    parser.add_argument("--skip-index", action="store_true", help="only the server part")
    parser.add_argument("--skip-server", action="store_true", help="only the index part")
    args = parser.parse_args()
    if not args.skip_index:
        with tempfile.TemporaryDirectory(dir=args.workdir, prefix="bench-search-") as workdir:
            index_part(args, Path(workdir))
    if not args.skip_server:
        demo = Path(args.demo)
        if not ((demo / "index" / "index.json").is_file() or (demo / "index.json").is_file()):
            sys.exit(f"no index at {args.demo}/index: run 'cmcr demo --out {args.demo}' first")
        server_part(args)


if __name__ == "__main__":
    main()
