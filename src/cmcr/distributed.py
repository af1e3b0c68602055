"""The Ray path: ``cmcr embed --ray`` and memory retrieval on Ray, with no computation of its own.

Embedding: each grid batch of ``cmcr embed`` (items [k*b, (k+1)*b)) is one Ray Data row. A CPU
task decodes it with :class:`cmcr.embed.ItemDataset` and :class:`cmcr.embed.Collate`, an actor
that holds the model once encodes it with ``Space.encode``, and the driver hands the encoded
batches, in input order, to :func:`cmcr.embed.embed_items`, whose store writer, errors.jsonl,
lock and resume logic are the single-machine ones: the store is the one a single process writes
(same batches, same model, same bytes), whatever the number of workers.

Retrieval: each query chunk is a Ray task running :func:`cmcr.method.retrieval.retrieve_pseudo_embeddings`
against the whole memory, streamed as on one machine; the driver appends the chunks in order.

Ray is imported only by the functions here, and only when the Ray path is asked for.
"""

from __future__ import annotations

import functools
import os
import pickle
import re
import socket
import tempfile
import time
import warnings
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from cmcr.embed import (Batch, Collate, EmbedSummary, InputItem, ItemDataset, check_unique,
                        item_source, collect_inputs, embed_items, grid_batches)
from cmcr.errors import ConfigError, InputError, MissingDependencyError
from cmcr.method.retrieval import Retriever, RowSource, as_store, retrieve_pseudo_embeddings
from cmcr.spaces.base import Preprocessor
from cmcr.data.store import StoreWriter, open_store

FILE_LISTS = (".txt", ".csv", ".jsonl", ".parquet")  # with --ray: lists of paths or URIs
URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
DECODER_ENVIRONMENT = {"OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


# -- Ray itself ----------------------------------------------------------------------------------
def require_ray() -> Any:
    """Import Ray, or say which extra to install."""
    try:
        import ray
        import ray.data  # Ray Data ships in ray[data], not in plain ray
    except ImportError:
        raise MissingDependencyError("the Ray path (--ray, retrieval.engine: ray) needs Ray Data: "
                                     "pip install 'cmcr[ray]'") from None
    return ray


RAY_TIMEOUT_S = 60.0  # how long a named Ray cluster may take to answer


def connect_ray(address: str | None = None, timeout: float = RAY_TIMEOUT_S) -> Any:
    """Ray, connected: this process's session if it has one, else the cluster at ``address``
    ('auto': the one `ray start` runs on this machine) or RAY_ADDRESS, else a new local Ray on
    this machine's usable cores, stopped when this process exits. A named cluster that does not
    answer within ``timeout`` seconds is an error naming it (Ray itself retries for minutes)."""
    ray = require_ray()
    if not ray.is_initialized():
        named = address or os.environ.get("RAY_ADDRESS")
        if named:
            wait_for_ray(named, timeout)
            ray.init(address=address or None)
        else:
            from cmcr.runtime.threads import usable_cores

            ray.init(address="local", num_cpus=usable_cores(), include_dashboard=False)
    return ray


def ray_endpoint(address: str) -> tuple[str, int] | None:
    """(host, port) of a Ray address 'HOST:PORT' or 'ray://HOST:PORT'; None for the addresses
    Ray resolves itself ('auto', 'local')."""
    text = address.strip()
    client = text.startswith("ray://")
    text = text.removeprefix("ray://")
    if text in ("auto", "local") or "://" in text or (client and ":" not in text):
        return None  # Ray finds these itself (a client address's port defaults)
    host, colon, port = text.rpartition(":")
    if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"Ray address {address!r} must be HOST:PORT (e.g. 10.0.0.5:6379), "
                          "'auto' or ray://HOST:PORT")
    return host.strip("[]"), int(port)


def wait_for_ray(address: str, timeout: float) -> None:
    """Return once something accepts connections at ``address``; after ``timeout`` seconds of
    refusals, an error naming the address."""
    endpoint = ray_endpoint(address)
    if endpoint is None:
        return
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        try:
            with socket.create_connection(endpoint, timeout=max(0.1, min(5.0, left))):
                return
        except OSError as err:
            reason = err.strerror or str(err) or type(err).__name__
        if time.monotonic() >= deadline:
            raise ConfigError(f"no Ray cluster answers at {address} (tried for {timeout:g} s: "
                              f"{reason}); start one there with 'ray start --head', check the "
                              "address, or wait longer with --ray-timeout")
        time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))


def _node_id() -> str:
    import ray

    return ray.get_runtime_context().get_node_id()


def _one_thread() -> None:
    """A task or actor uses the one CPU Ray gave it (torch's default of one spinning thread per
    core is up to 10x slower on a busy machine; see cmcr.runtime.threads)."""
    import torch

    torch.set_num_threads(1)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


# -- inputs: everything cmcr embed reads, plus lists of URIs -----------------------------------
def is_uri(source: str) -> bool:
    """Whether an input names a URI (``scheme://...``) rather than a local path."""
    return bool(URI.match(source))


def list_inputs(path: str | Path, modality: str, *, column: str | None = None,
                id_column: str | None = None,
                extensions: Sequence[str] | None = None) -> list[InputItem]:
    """What ``cmcr embed --ray`` reads: what :func:`collect_inputs` reads (identical items), plus
    file lists as .csv/.jsonl/.parquet tables (``column``, default 'path'; ids: the entries or
    ``id_column``) and entries that are URIs (s3://, gs://, file://: read with pyarrow)."""
    path = Path(path).expanduser()
    if modality == "text" or path.suffix.lower() not in FILE_LISTS:
        return collect_inputs(path, modality, column=column, id_column=id_column,
                              extensions=extensions)
    from cmcr.data.processing import read_texts

    if path.suffix.lower() == ".txt":
        entries = [(text, text) for _, text in read_texts(path) if not text.startswith("#")]
        if not any(is_uri(entry) for _, entry in entries):
            return collect_inputs(path, modality, extensions=extensions)
    else:
        entries = [(item_id if id_column else text, text)
                   for item_id, text in read_texts(path, column or "path", id_column)]
    items = [InputItem(item_id, entry if is_uri(entry)
                       else item_source(path.parent / Path(entry).expanduser()))
             for item_id, entry in entries]
    if not items:
        raise InputError(f"{path}: holds no items (the file list is empty)")
    check_unique(path, items)
    return items


def _fetch(uri: str, folder: Path, number: int) -> Path:
    """Copy a URI's file (any pyarrow filesystem) to ``folder``, keeping its extension."""
    from pyarrow import fs

    filesystem, remote = fs.FileSystem.from_uri(uri)
    local = folder / f"{number}{PurePosixPath(remote).suffix}"
    with filesystem.open_input_stream(remote) as source, open(local, "wb") as target:
        while chunk := source.read(1 << 20):
            target.write(chunk)
    return local


# -- decoding (tasks) and encoding (actors) -------------------------------------------------------
def decode_grid_batch(row: dict[str, Any], preprocessor: Preprocessor,
                      modality: str) -> dict[str, Any]:
    """A Ray Data task: one grid batch's sources -> its collated model inputs and its errors,
    decoded by cmcr.embed's own ItemDataset and Collate (a bad file never raises)."""
    _one_thread()
    began = time.perf_counter()
    first = int(row["first"])
    sources = [bytes(s).decode("utf-8", "surrogateescape") for s in row["sources"]]
    with tempfile.TemporaryDirectory(prefix="cmcr-fetch-") as folder:
        local, failed = [], {}
        for number, source in enumerate(sources):
            try:
                fetched = _fetch(source, Path(folder), number) if (
                    modality != "text" and is_uri(source)) else source
            except Exception as err:  # a missing object, no credentials: that item fails only
                failed[number] = f"{source}: cannot fetch: {type(err).__name__}: {err}"
                fetched = source
            local.append(InputItem(str(first + number), str(fetched)))
        dataset = ItemDataset(local, preprocessor, modality)
        samples = [(first + n, None, failed[n]) if n in failed
                   else _renamed(dataset[n], first, sources[n], local[n].source)
                   for n in range(len(local))]
        batch = Collate(preprocessor)(samples)
    payload = {"indices": batch.indices, "inputs": batch.inputs, "errors": batch.errors,
               "decode": time.perf_counter() - began, "nodes": [_node_id()]}
    return {"first": first, "payload": pickle.dumps(payload, protocol=5)}


def _renamed(sample: tuple[int, Any, str | None], first: int, source: str,
             read_from: str) -> tuple[int, Any, str | None]:
    """A sample at its place in the whole input list; a fetched copy's reason names its URI."""
    index, decoded, reason = sample
    if reason is not None and read_from != source:
        reason = reason.replace(read_from, source)
    return first + index, decoded, reason


class Encoder:
    """A Ray actor that holds one space's model (loaded once) and encodes decoded grid batches
    with ``Space.encode``, as the single-machine path does: (n, d) float32 unit rows."""

    def __init__(self, spec: str, options: dict[str, Any], modality: str):
        from cmcr.spaces import load_space

        _one_thread()
        self.space = load_space(spec, **options)
        self.modality = modality
        if hasattr(self.space, "tower"):
            self.space.tower(modality)  # load the weights now, not inside the first batch

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        payloads = [self._encode(pickle.loads(payload)) for payload in batch["payload"]]
        return {"first": batch["first"], "payload": np.array(payloads, dtype=object)}

    def _encode(self, payload: dict[str, Any]) -> bytes:
        began = time.perf_counter()
        inputs = payload.pop("inputs")
        payload["rows"] = None if inputs is None else self.space.encode(self.modality,
                                                                        inputs).numpy()
        payload["encode"] = time.perf_counter() - began
        payload["nodes"].append(_node_id())
        return pickle.dumps(payload, protocol=5)


# -- the driver ----------------------------------------------------------------------------------
@dataclass
class StageSeconds:
    """Where a Ray run's time went, summed over its batches: decoding (tasks), encoding (actors)
    and writing (the driver storing rows and errors), and the Ray nodes that did the work."""

    decode: float = 0.0
    encode: float = 0.0
    write: float = 0.0
    batches: int = 0
    items: int = 0
    nodes: set[str] = field(default_factory=set)

    def add(self, payload: dict[str, Any]) -> None:
        self.decode += payload["decode"]
        self.encode += payload["encode"]
        self.batches += 1
        self.items += len(payload["indices"]) + len(payload["errors"])
        self.nodes.update(payload["nodes"])


@dataclass(frozen=True)
class EncoderPlan:
    """The encoding actors: how many, and the GPUs (fraction or whole) and CPUs each holds."""

    actors: int
    gpus_per_actor: float = 0.0
    cpus_per_actor: float = 1.0


def plan_encoders(actors: int | None = None, gpus_per_actor: float | None = None) -> EncoderPlan:
    """One actor per GPU (``gpus_per_actor`` 0.5: two a GPU) when the cluster has GPUs, else
    one per CPU for three quarters of them; at least one CPU is always left to decoding."""
    resources = require_ray().cluster_resources()
    gpus, cpus = float(resources.get("GPU", 0)), int(resources.get("CPU", 0))
    per_actor = (1.0 if gpus else 0.0) if gpus_per_actor is None else float(gpus_per_actor)
    if per_actor > gpus:
        raise ConfigError(f"--gpus-per-actor {per_actor:g}: the Ray cluster has {gpus:g} GPUs")
    if actors is None:
        actors = int(gpus // per_actor) if per_actor else cpus - max(1, cpus // 4)
    actors = max(1, actors)
    if actors >= cpus:
        raise ConfigError(f"{actors} encoding actors would hold all {cpus} CPUs of the Ray cluster "
                          "and leave none to decode: use --actors "
                          f"{max(1, cpus - 1)} or fewer (a cluster needs at least 2 CPUs)")
    return EncoderPlan(actors, per_actor)


class RayBatches:
    """cmcr.embed's batch source on Ray Data: decoding tasks -> encoding actors -> the driver,
    one grid batch a row, in input order, from the grid batch that holds ``start``."""

    def __init__(self, spec: str, options: dict[str, Any], modality: str,
                 items: Sequence[InputItem], batch_size: int, preprocessor: Preprocessor,
                 plan: EncoderPlan, stages: StageSeconds):
        self.spec, self.options, self.modality = spec, options, modality
        self.items, self.batch_size, self.preprocessor = items, batch_size, preprocessor
        self.plan, self.stages = plan, stages

    def __call__(self, start: int) -> Iterator[Batch]:
        grid = grid_batches(start, len(self.items), self.batch_size)
        if not grid:
            return
        # no prefetching: it would hold each batch back until the next one is encoded
        for block in self.dataset(grid).iter_batches(batch_size=None, prefetch_batches=0,
                                                     batch_format="numpy"):
            for encoded in block["payload"]:
                payload = pickle.loads(encoded)
                self.stages.add(payload)
                handed = time.perf_counter()
                yield Batch(payload["indices"], None, payload["errors"], payload["rows"])
                self.stages.write += time.perf_counter() - handed

    def dataset(self, grid: list[list[int]]) -> Any:
        """The Ray Data pipeline over these grid batches (executed lazily, streamed)."""
        ray = require_ray()
        context = ray.data.DataContext.get_current()
        context.execution_options.preserve_order = True  # the store is written in input order
        context.enable_progress_bars = False  # cmcr's own bar counts the items
        rows = [{"first": batch[0],  # names that are not UTF-8 travel as their bytes
                 "sources": [self.items[i].source.encode("utf-8", "surrogateescape")
                             for i in batch]} for batch in grid]
        # Ray Data retries a task whose worker died, and restarts a dead actor, by default.
        # The decoders' own environment (one thread each) also keeps Ray Data from fusing them
        # into the actors, which would decode and encode one after the other.
        decoded = ray.data.from_items(rows, override_num_blocks=min(len(rows), 10_000)).map(
            decode_grid_batch, fn_kwargs={"preprocessor": self.preprocessor,
                                          "modality": self.modality},
            num_cpus=1, runtime_env={"env_vars": DECODER_ENVIRONMENT})
        return decoded.map_batches(
            Encoder, fn_constructor_kwargs={"spec": self.spec, "options": self.options,
                                            "modality": self.modality},
            batch_size=1, batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=self.plan.actors),
            num_cpus=self.plan.cpus_per_actor, num_gpus=self.plan.gpus_per_actor or None)


def embed_on_ray(spec: str, modality: str, items: Sequence[InputItem], out: str | Path, *,
                 address: str | None = None, space_options: dict[str, Any] | None = None,
                 batch_size: int = 64, actors: int | None = None,
                 gpus_per_actor: float | None = None, shard_rows: int = 65536,
                 store_dtype: str = "float32", overwrite: bool = False, progress: bool = True,
                 on_batch: Callable[[int], None] | None = None,
                 stages: StageSeconds | None = None,
                 ray_timeout: float = RAY_TIMEOUT_S) -> EmbedSummary:
    """:func:`cmcr.embed.embed_items` with decoding and encoding on Ray: the same store, byte for
    byte, resumed the same way. ``space_options`` (device, dtype, frame_time) go to each actor's
    space (device 'auto': the GPU Ray gives it, in float16); ``stages`` collects the costs;
    ``ray_timeout``: seconds the cluster at ``address`` may take to answer."""
    from cmcr.spaces import load_space

    connect_ray(address, ray_timeout)
    options = dict(space_options or {})
    space = load_space(spec, **{**options, "device": "cpu"})  # the driver loads no weights
    modality = space.check_modality(modality)
    source = RayBatches(spec, options, modality, items, batch_size, space.preprocessor(modality),
                        plan_encoders(actors, gpus_per_actor), stages or StageSeconds())
    return embed_items(space, modality, items, out, batch_size=batch_size, shard_rows=shard_rows,
                       store_dtype=store_dtype, overwrite=overwrite, progress=progress,
                       on_batch=on_batch, batches=source,
                       label=f"embed {modality} on Ray ({space.name.rpartition('/')[2]})")


# -- memory retrieval ----------------------------------------------------------------------------
def pseudo_chunk(query_rows: np.ndarray, memory: str | np.ndarray, temperature: float,
                 top_k: int | None, memory_chunk: int) -> np.ndarray:
    """A Ray task: one query chunk against the whole memory (a store path, or rows), exactly as
    on one machine: (len(query_rows), dim) pseudo embeddings."""
    _one_thread()
    memory_rows = open_store(memory) if isinstance(memory, str) else memory
    with warnings.catch_warnings():  # rows from Ray's object store are read-only; only read
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return retrieve_pseudo_embeddings(query_rows, memory_rows, temperature, top_k,
                                          query_chunk=len(query_rows), memory_chunk=memory_chunk,
                                          device="auto")


def retrieve_on_ray(queries: RowSource, memory: RowSource, temperature: float = 0.01,
                    top_k: int | None = None, *, query_chunk: int = 4096,
                    memory_chunk: int = 16384, device: Any = "auto",
                    out: StoreWriter | None = None, progress: bool = False,
                    label: str = "memory retrieval", address: str | None = None,
                    ray_timeout: float = RAY_TIMEOUT_S) -> np.ndarray | None:
    """:func:`retrieve_pseudo_embeddings` with each query chunk a Ray task over the whole memory,
    same signature and results (within float rounding). A memory store on disk is streamed by
    each task from its path (the same on every node); in-RAM rows go through Ray's object store.
    A task uses the GPU Ray gives it (one each when the cluster has GPUs); ``device`` is unused.
    ``ray_timeout``: seconds the cluster at ``address`` may take to answer."""
    from tqdm.auto import tqdm

    ray = connect_ray(address, ray_timeout)
    queries, memory = as_store(queries), as_store(memory)
    if queries.dim != memory.dim:
        raise ValueError(f"queries have dim {queries.dim} but memory has dim {memory.dim}")
    if len(memory) == 0:
        raise ValueError("the memory is empty")
    start_row = out.num_rows if out is not None else 0
    if start_row % query_chunk:
        raise ValueError(f"store shard_rows must be a multiple of query_chunk={query_chunk}")
    resources = ray.cluster_resources()
    task = ray.remote(pseudo_chunk).options(num_cpus=1, num_gpus=1 if resources.get("GPU") else 0,
                                            max_retries=-1)
    source = (str(memory.path.resolve()) if memory.path.exists()
              else ray.put(memory.to_numpy()))
    result = None if out is not None else np.empty((len(queries), queries.dim), np.float32)
    keep = functools.partial(_keep_chunk, ray, queries, out, result)
    pending: deque = deque()
    window = 2 * max(1, int(resources.get("CPU", 1)))  # chunks in flight (bounded RAM)
    starts = range(start_row, len(queries), query_chunk)
    for start in tqdm(starts, desc=f"{label} on Ray", unit="chunk", disable=not progress):
        rows = queries.rows(start, start + query_chunk)
        pending.append((start, task.remote(rows, source, temperature, top_k, memory_chunk)))
        if len(pending) >= window:
            keep(*pending.popleft())
    while pending:
        keep(*pending.popleft())
    return result


def _keep_chunk(ray: Any, queries: Any, out: StoreWriter | None, result: np.ndarray | None,
                start: int, reference: Any) -> None:
    """Wait for one chunk's pseudo embeddings and store them (chunks are kept in order)."""
    pseudo_rows = ray.get(reference)
    if out is not None:
        out.append(pseudo_rows, queries.ids[start:start + len(pseudo_rows)])
    else:
        result[start:start + len(pseudo_rows)] = pseudo_rows


def ray_retriever(address: str | None = None, timeout: float = RAY_TIMEOUT_S) -> Retriever:
    """A retriever for :func:`cmcr.method.retrieval.cached_pseudo_embeddings` that runs on Ray."""
    return functools.partial(retrieve_on_ray, address=address, ray_timeout=timeout)
