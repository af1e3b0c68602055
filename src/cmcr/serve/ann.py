"""FAISS indexes for one segment of joint-space rows: which kind (a documented rule), training,
tuning the search breadth for a recall target, writing and opening memory-mapped.

The rule behind ``index_type="auto"`` (n rows of d dims, float32 vectors take 4·n·d bytes):

- n <= 100,000: ``Flat`` (exact inner product; a brute-force scan is a few ms per query);
- 4·n·d <= the memory budget: ``IVF{nlist},Flat`` (exact distances inside the probed lists);
- otherwise ``IVF{nlist},PQ{d/8}`` (8x compressed codes: 64 bytes a row at d = 512);

with nlist the power of two nearest to sqrt(n) (at most n / 39, so k-means has 39 training rows a
centroid), trained on at most 64·nlist rows. The number of probed lists is then tuned at build
time: the smallest power of two whose recall@10 against exact search reaches the target (0.95)
with 95 % confidence (the lower end of the mean's interval, so the luck of the draw does not
decide it) on 512 stored rows perturbed to cosine ~0.7 (queries from another modality sit
farther from the rows than the rows sit from each other; new points can still be harder, see
docs/serve.md). When the target needs a quarter of the lists or more, IVF
gives no speed-up on these rows (fuzzy neighbourhoods in many dimensions), so the collection is
rebuilt as ``HNSW32`` (``efSearch`` tuned the same way) when its graph fits the budget; it takes
longer to build. If HNSW misses the target too, the collection gets exact search. Any faiss factory string (``HNSW32``, ``IVF4096,PQ32``, ...) overrides the rule.
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cmcr.data.atomic import atomic_file
from cmcr.errors import ConfigError, MissingDependencyError, StoreError

EXACT_MAX_ROWS = 100_000
TRAIN_ROWS_PER_LIST = 64
MIN_ROWS_PER_LIST = 39
TUNING_QUERIES = 512
TUNING_K = 10
DEFAULT_TARGET_RECALL = 0.95
EXACT_ALIASES = ("exact", "flat", "Flat")
HNSW_LINKS = 32  # the HNSW fallback's graph degree (faiss's HNSW32)


def require_faiss() -> Any:
    """Import faiss or say what to install."""
    try:
        import faiss
    except ImportError:
        raise MissingDependencyError("the search index needs FAISS: pip install faiss-cpu "
                                     "(or faiss-gpu)") from None
    return faiss


@dataclass
class IndexPlan:
    """What one segment's FAISS index is: a factory string and how to train and tune it."""

    factory: str
    train_rows: int  # rows sampled to train it (0: nothing to train)
    search_parameter: str | None  # "nprobe" (IVF), "efSearch" (HNSW) or None (exact)
    reason: str
    lists: int = 0  # IVF lists (0: not IVF)
    automatic: bool = False  # chosen by the rule (so the rule may fall back to HNSW)


def default_memory_budget() -> int:
    """Half the machine's physical memory, in bytes."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2
    except (ValueError, OSError, AttributeError):
        return 8 * 2**30


def list_count(rows: int) -> int:
    """IVF lists for ``rows`` rows: the power of two nearest sqrt(rows), at most rows / 39."""
    nearest = 2 ** round(math.log2(max(1.0, math.sqrt(rows))))
    return int(max(1, min(nearest, 65536, rows // MIN_ROWS_PER_LIST)))


def pq_subquantizers(dim: int) -> int:
    """Sub-quantizers for PQ: dim / 8 when it divides, else the largest divisor of dim below it."""
    target = max(1, dim // 8)
    return next(m for m in range(target, 0, -1) if dim % m == 0)


def choose_index(rows: int, dim: int, index_type: str = "auto",
                 memory_budget: int | None = None) -> IndexPlan:
    """The index for a segment of ``rows`` x ``dim`` rows (the module docstring's rule)."""
    if index_type in EXACT_ALIASES:
        return IndexPlan("Flat", 0, None, "exact search was asked for")
    if index_type != "auto":
        return _custom_plan(index_type, rows, dim)
    budget = default_memory_budget() if memory_budget is None else memory_budget
    if rows <= EXACT_MAX_ROWS:
        return IndexPlan("Flat", 0, None, f"{rows:,} rows <= {EXACT_MAX_ROWS:,}: exact search")
    nlist = list_count(rows)
    train = min(rows, TRAIN_ROWS_PER_LIST * nlist)
    flat_bytes = 4 * rows * dim
    if flat_bytes <= budget:
        return IndexPlan(f"IVF{nlist},Flat", train, "nprobe",
                         f"{rows:,} rows; float32 vectors ({flat_bytes / 2**30:.1f} GiB) fit the "
                         f"memory budget ({budget / 2**30:.1f} GiB)", nlist, automatic=True)
    return IndexPlan(f"IVF{nlist},PQ{pq_subquantizers(dim)}", train, "nprobe",
                     f"{rows:,} rows; float32 vectors ({flat_bytes / 2**30:.1f} GiB) exceed the "
                     f"memory budget ({budget / 2**30:.1f} GiB): compressed codes", nlist,
                     automatic=True)


def fallback_plan(plan: IndexPlan, tuned_value: int | None, rows: int, dim: int,
                  memory_budget: int | None = None) -> IndexPlan | None:
    """HNSW32 when the rule's IVF had to probe a quarter of its lists or more for the target
    recall (rows without neighbourhoods IVF can use) and the graph fits the budget; else None."""
    budget = default_memory_budget() if memory_budget is None else memory_budget
    graph_bytes = rows * (4 * dim + 2 * HNSW_LINKS * 4)
    if not (plan.automatic and scans_most_lists(plan, tuned_value)) or graph_bytes > budget:
        return None
    return IndexPlan(f"HNSW{HNSW_LINKS}", 0, "efSearch",
                     f"{plan.reason}; {plan.factory} needed nprobe={tuned_value} of {plan.lists} "
                     f"lists for the target recall (no speed-up on these rows): HNSW{HNSW_LINKS}")


def _custom_plan(factory: str, rows: int, dim: int) -> IndexPlan:
    index = new_index(factory, dim)  # validates the string
    parameter = "nprobe" if "IVF" in factory else "efSearch" if "HNSW" in factory else None
    nlist = _ivf_lists(index)
    train = 0 if index.is_trained else min(rows, TRAIN_ROWS_PER_LIST * max(nlist, 256))
    return IndexPlan(factory, train, parameter, f"--index-type {factory}", nlist)


def _ivf_lists(index: Any) -> int:
    faiss = require_faiss()
    try:
        return int(faiss.extract_index_ivf(index).nlist)
    except RuntimeError:
        return 0


def new_index(factory: str, dim: int) -> Any:
    """An empty inner-product index from a faiss factory string (ConfigError when invalid)."""
    faiss = require_faiss()
    try:
        return faiss.index_factory(int(dim), factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as err:
        first = str(err).strip().splitlines()[-1] if str(err).strip() else "invalid"
        raise ConfigError(f"--index-type '{factory}' is not a FAISS index factory string this "
                          f"build understands ({first}); use auto, exact, or e.g. "
                          "IVF1024,Flat / HNSW32 / IVF4096,PQ64") from None


def train_index(index: Any, sample: np.ndarray) -> None:
    """Train an index that needs it (k-means for IVF, codebooks for PQ) on ``sample`` rows."""
    if not index.is_trained:
        index.train(np.ascontiguousarray(sample, dtype=np.float32))


def perturbed_queries(rows: np.ndarray, seed: int = 0) -> np.ndarray:
    """Unit rows pushed to cosine ~0.7 from stored rows: stand-ins for cross-modal queries."""
    generator = np.random.default_rng(seed)
    noise = generator.standard_normal(rows.shape).astype(np.float32) / math.sqrt(rows.shape[1])
    queries = rows + noise
    return queries / np.linalg.norm(queries, axis=1, keepdims=True)


class ExactTopK:
    """Running exact top-k of fixed queries over rows that arrive in chunks (for tuning); RAM is
    bounded by FAISS's blocked brute-force search, never a (queries, chunk) index matrix."""

    def __init__(self, queries: np.ndarray, k: int):
        self.queries = np.ascontiguousarray(queries, dtype=np.float32)
        self.k = k
        self.scores = np.full((len(queries), 0), -np.inf, dtype=np.float32)
        self.labels = np.zeros((len(queries), 0), dtype=np.int64)

    def update(self, start: int, rows: np.ndarray) -> None:
        faiss = require_faiss()
        k = min(self.k, len(rows))
        scores, labels = faiss.knn(self.queries, np.ascontiguousarray(rows, dtype=np.float32), k,
                                   metric=faiss.METRIC_INNER_PRODUCT)
        scores = np.concatenate([self.scores, scores], axis=1)
        labels = np.concatenate([self.labels, labels + start], axis=1)
        keep = np.argsort(-scores, axis=1, kind="stable")[:, :self.k]
        self.scores = np.take_along_axis(scores, keep, axis=1)
        self.labels = np.take_along_axis(labels, keep, axis=1)


def flat_storage(index: Any, rows: int) -> np.ndarray | None:
    """A writable (rows, d) view of a Flat index's vectors, allocated once at full size (adding
    chunk by chunk would grow the buffer by doubling: up to twice the index in RAM); None for
    other kinds of index."""
    faiss = require_faiss()
    if type(index) not in (faiss.IndexFlatIP, faiss.IndexFlat) or index.ntotal:
        return None
    index.codes.resize(rows * index.d * 4)
    index.ntotal = rows
    return faiss.rev_swig_ptr(index.get_xb(), rows * index.d).reshape(rows, index.d)


def query_recalls(found: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Each query's share of its exact top-k that the approximate top-k contains."""
    return np.array([len(set(f[f >= 0].tolist()) & set(t.tolist())) / len(t)
                     for f, t in zip(found, truth)], dtype=np.float64)


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean share of each query's exact top-k that the approximate top-k contains."""
    hits = query_recalls(found, truth)
    return float(hits.mean()) if len(hits) else 1.0


def recall_lower_bound(hits: np.ndarray) -> float:
    """The lower end of a 95 % interval of the mean recall over these queries (normal
    approximation): what tuning must reach, so that the luck of the draw does not decide it."""
    if len(hits) < 2:
        return float(hits.mean()) if len(hits) else 1.0
    return float(hits.mean() - 1.96 * hits.std(ddof=1) / math.sqrt(len(hits)))


def set_search_parameter(index: Any, name: str | None, value: int | None) -> None:
    """Set nprobe / efSearch on a CPU index, or on a GPU one (which has its own parameter space)."""
    if not (name and value):
        return
    faiss = require_faiss()
    on_gpu = hasattr(faiss, "GpuIndex") and isinstance(index, faiss.GpuIndex)
    space = faiss.GpuParameterSpace() if on_gpu else faiss.ParameterSpace()
    space.set_index_parameter(index, name, int(value))


def tune_search(index: Any, plan: IndexPlan, truth: ExactTopK,
                target: float = DEFAULT_TARGET_RECALL) -> tuple[int | None, float]:
    """The smallest power-of-two breadth whose recall@k reaches ``target`` with 95 % confidence
    (the lower end of the mean's interval over the tuning queries), and its mean recall."""
    if plan.search_parameter is None or len(truth.queries) == 0:
        return None, 1.0
    limit = max(1, _ivf_lists(index)) if plan.search_parameter == "nprobe" else 4096
    value = 1
    while True:
        set_search_parameter(index, plan.search_parameter, value)
        _, found = index.search(truth.queries, truth.k)
        hits = query_recalls(found, truth.labels)
        if recall_lower_bound(hits) >= target or value >= limit:
            return value, float(hits.mean())
        value = min(value * 2, limit)


def scans_most_lists(plan: IndexPlan, value: int | None) -> bool:
    """Whether the tuned IVF search probes a quarter of the lists or more (little speed-up)."""
    return bool(plan.lists and value) and value * 4 >= plan.lists


def write_index(index: Any, path: Path) -> None:
    """Write atomically (a temporary name, then a rename)."""
    with atomic_file(path) as tmp:
        require_faiss().write_index(index, str(tmp))


def to_gpu_if_present(index: Any, device: str = "auto") -> Any:
    """The index on all GPUs when FAISS was built with GPU support and ``device`` allows it
    (``auto``, ``cuda``, ``cuda:N``); else (or when FAISS cannot move this kind) unchanged."""
    faiss = require_faiss()
    wants_gpu = device == "auto" or str(device).startswith("cuda")
    if not wants_gpu or not hasattr(faiss, "index_cpu_to_all_gpus") or faiss.get_num_gpus() < 1:
        return index
    try:
        return faiss.index_cpu_to_all_gpus(index)
    except RuntimeError as err:
        print(f"cmcr: note: searching on the CPU: FAISS cannot move this index to the GPU "
              f"({str(err).strip()[-120:]})", file=sys.stderr)
        return index


def read_index(path: Path, factory: str, mmap: bool = True) -> Any:
    """Open a segment's index; memory-mapped (Flat: its vectors, IVF: its lists) by default."""
    faiss = require_faiss()
    flags = 0
    if mmap:
        flags = faiss.IO_FLAG_READ_ONLY | (faiss.IO_FLAG_MMAP if "IVF" in factory
                                           else faiss.IO_FLAG_MMAP_IFC)
    try:
        return faiss.read_index(str(path), flags)
    except RuntimeError as err:
        if mmap:  # index kinds without a memory-mapped reader load into RAM
            return read_index(path, factory, mmap=False)
        raise StoreError(f"{path}: unreadable FAISS index ({str(err).strip()[-200:]})") from None


def index_kind(index: Any) -> str:
    """What family a FAISS index is (IVF, HNSW, Flat, or its class name), to compare an index
    read from disk with the factory string recorded for it."""
    faiss = require_faiss()
    try:
        faiss.extract_index_ivf(index)
        return "IVF"
    except RuntimeError:
        pass
    index = faiss.downcast_index(index)
    if isinstance(index, faiss.IndexHNSW):
        return "HNSW"
    if isinstance(index, faiss.IndexFlat):
        return "Flat"
    return type(index).__name__
