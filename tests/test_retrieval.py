"""Memory retrieval: the chunked streaming softmax against the naive full softmax, top-k, caching."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import cmcr.method.retrieval as retrieval
from cmcr.method.retrieval import cached_pseudo_embeddings, retrieve_pseudo_embeddings
from cmcr.data.store import StoreWriter, open_store, write_store

DIM = 8


def _random(rows: int, seed: int, dim: int = DIM, scale: float = 1.0) -> np.ndarray:
    return (scale * np.random.default_rng(seed).standard_normal((rows, dim))).astype(np.float32)


def _naive_full(queries: np.ndarray, memory: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(Q M^T / tau) M on normalised rows, in float64, all at once."""
    q = torch.nn.functional.normalize(torch.as_tensor(queries, dtype=torch.float64), dim=1)
    m = torch.nn.functional.normalize(torch.as_tensor(memory, dtype=torch.float64), dim=1)
    return (torch.softmax(q @ m.T / temperature, dim=1) @ m).numpy()


def _naive_top_k(queries: np.ndarray, memory: np.ndarray, temperature: float, k: int) -> np.ndarray:
    q = torch.nn.functional.normalize(torch.as_tensor(queries, dtype=torch.float64), dim=1)
    m = torch.nn.functional.normalize(torch.as_tensor(memory, dtype=torch.float64), dim=1)
    values, index = (q @ m.T).topk(k, dim=1)
    weights = torch.softmax(values / temperature, dim=1)
    return torch.einsum("nk,nkd->nd", weights, m[index]).numpy()


def _retrieve(queries, memory, temperature=0.05, top_k=None, **kwargs):
    return retrieve_pseudo_embeddings(queries, memory, temperature, top_k, device="cpu", **kwargs)


# -- exact (full softmax) --------------------------------------------------------------------------
@pytest.mark.parametrize("query_chunk, memory_chunk", [
    (1, 1), (3, 7), (5, 64), (23, 37), (4, 36), (7, 38), (4096, 16384)])
@pytest.mark.parametrize("resident_memory_bytes", [0, 512 * 2**20], ids=["streamed", "resident"])
def test_chunked_retrieval_equals_the_full_softmax(query_chunk, memory_chunk, resident_memory_bytes):
    queries, memory = _random(23, 0), _random(37, 1)
    out = _retrieve(queries, memory, 0.05, query_chunk=query_chunk, memory_chunk=memory_chunk,
                    resident_memory_bytes=resident_memory_bytes)
    assert out.dtype == np.float32 and out.shape == (23, DIM)
    np.testing.assert_allclose(out, _naive_full(queries, memory, 0.05), atol=2e-6, rtol=0)


@settings(max_examples=30, deadline=None)
@given(n_queries=st.integers(1, 20), n_memory=st.integers(1, 40), query_chunk=st.integers(1, 25),
       memory_chunk=st.integers(1, 45), streamed=st.booleans(), seed=st.integers(0, 2**16),
       temperature=st.sampled_from([1.0, 0.1, 0.01]))
def test_chunked_retrieval_equals_the_full_softmax_for_any_sizes(
        n_queries, n_memory, query_chunk, memory_chunk, streamed, seed, temperature):
    queries, memory = _random(n_queries, seed), _random(n_memory, seed + 1)
    out = _retrieve(queries, memory, temperature, query_chunk=query_chunk, memory_chunk=memory_chunk,
                    resident_memory_bytes=0 if streamed else 2**30)
    np.testing.assert_allclose(out, _naive_full(queries, memory, temperature), atol=1e-5, rtol=0)


@pytest.mark.parametrize("temperature", [0.01, 0.001])
def test_retrieval_is_stable_for_large_logits(temperature):
    # Memory rows close to the queries give logits near 1/tau (100 or 1000): exp overflows float32
    # without a running max.
    queries = _random(16, 2, scale=1e3)
    memory = np.concatenate([queries + _random(16, 3, scale=10.0), _random(48, 4, scale=1e3)])
    out = _retrieve(queries, memory, temperature, query_chunk=5, memory_chunk=7,
                    resident_memory_bytes=0)
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out, _naive_full(queries, memory, temperature), atol=1e-5, rtol=0)


def test_retrieval_normalises_inputs_first():
    queries, memory = _random(9, 5), _random(20, 6)
    scaled = _retrieve(queries * 7.0, memory * np.linspace(0.1, 10, 20, dtype=np.float32)[:, None])
    np.testing.assert_allclose(scaled, _retrieve(queries, memory), atol=2e-6)


def test_retrieval_accepts_stores_npy_and_tensors(tmp_path):
    queries, memory = _random(11, 7), _random(30, 8)
    np.save(tmp_path / "q.npy", queries)
    memory_store = write_store(tmp_path / "memory", memory, shard_rows=7)
    expected = _naive_full(queries, memory, 0.05)
    from_files = _retrieve(open_store(tmp_path / "q.npy"), memory_store, memory_chunk=4)
    from_tensors = _retrieve(torch.from_numpy(queries), torch.from_numpy(memory))
    np.testing.assert_allclose(from_files, expected, atol=2e-6)
    np.testing.assert_allclose(from_tensors, expected, atol=2e-6)


# -- top-k -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("top_k", [1, 2, 5, 17])
@pytest.mark.parametrize("memory_chunk", [3, 10, 64])
def test_top_k_equals_a_naive_top_k_softmax(top_k, memory_chunk):
    queries, memory = _random(19, 9), _random(40, 10)
    out = _retrieve(queries, memory, 0.05, top_k, query_chunk=6, memory_chunk=memory_chunk)
    np.testing.assert_allclose(out, _naive_top_k(queries, memory, 0.05, top_k), atol=2e-6, rtol=0)


@pytest.mark.parametrize("top_k", [40, 41, 1000])
def test_top_k_at_least_the_memory_size_equals_the_full_softmax(top_k):
    queries, memory = _random(12, 11), _random(40, 12)
    out = _retrieve(queries, memory, 0.05, top_k, memory_chunk=9)
    np.testing.assert_allclose(out, _naive_full(queries, memory, 0.05), atol=2e-6, rtol=0)


def test_top_k_one_returns_the_nearest_memory_row():
    queries, memory = _random(10, 13), _random(25, 14)
    unit_memory = memory / np.linalg.norm(memory, axis=1, keepdims=True)
    nearest = (queries @ unit_memory.T).argmax(axis=1)
    out = _retrieve(queries, memory, 0.05, 1, memory_chunk=4)
    np.testing.assert_allclose(out, unit_memory[nearest], atol=1e-6)


# -- errors ----------------------------------------------------------------------------------------
def test_dimension_mismatch_raises():
    with pytest.raises(ValueError, match="dim"):
        _retrieve(_random(4, 0, dim=8), _random(5, 1, dim=6))


def test_empty_memory_raises():
    with pytest.raises(ValueError, match="empty"):
        _retrieve(_random(4, 0), np.zeros((0, DIM), dtype=np.float32))


# -- writer output and resuming --------------------------------------------------------------------
def _query_store(tmp_path, rows=40):
    queries = _random(rows, 20)
    return write_store(tmp_path / "queries", queries, [f"q{i}" for i in range(rows)]), queries


def test_writer_output_equals_the_in_ram_result(tmp_path):
    queries_store, queries = _query_store(tmp_path)
    memory = _random(33, 21)
    writer = StoreWriter(tmp_path / "pseudo", dim=DIM, shard_rows=8)
    assert _retrieve(queries_store, memory, query_chunk=4, out=writer) is None
    store = writer.close()
    np.testing.assert_array_equal(store.to_numpy(), _retrieve(queries_store, memory, query_chunk=4))
    assert store.ids == queries_store.ids


def test_interrupted_writer_output_resumes_to_the_in_ram_result(tmp_path):
    queries_store, queries = _query_store(tmp_path)
    memory = _random(33, 21)
    in_ram = _retrieve(queries_store, memory, query_chunk=4)

    first = StoreWriter(tmp_path / "pseudo", dim=DIM, shard_rows=8)
    first.append(in_ram[:19], queries_store.ids[:19])  # 16 rows on disk, 3 pending: then "crash"
    del first
    resumed = StoreWriter(tmp_path / "pseudo", dim=DIM, shard_rows=8)
    assert resumed.num_rows == 16
    _retrieve(queries_store, memory, query_chunk=4, out=resumed)
    store = resumed.close()
    np.testing.assert_array_equal(store.to_numpy(), in_ram)
    assert store.ids == queries_store.ids


def test_resumed_retrieval_keeps_rows_already_on_disk(tmp_path):
    queries_store, _ = _query_store(tmp_path)
    memory = _random(33, 21)
    first = StoreWriter(tmp_path / "pseudo", dim=DIM, shard_rows=8)
    sentinel = np.full((8, DIM), 7.0, dtype=np.float32)
    first.append(sentinel, queries_store.ids[:8])
    resumed = StoreWriter(tmp_path / "pseudo", dim=DIM, shard_rows=8)
    _retrieve(queries_store, memory, query_chunk=4, out=resumed)
    rows = resumed.close().to_numpy()
    np.testing.assert_array_equal(rows[:8], sentinel)
    np.testing.assert_allclose(rows[8:], _retrieve(queries_store, memory, query_chunk=4)[8:], atol=1e-6)


def test_resume_point_not_on_a_query_chunk_boundary_is_refused(tmp_path):
    queries_store, _ = _query_store(tmp_path)
    writer = StoreWriter(tmp_path / "pseudo", dim=DIM, shard_rows=6)
    writer.append(_random(6, 0), queries_store.ids[:6])
    with pytest.raises(ValueError, match="query_chunk"):
        _retrieve(queries_store, _random(10, 1), query_chunk=4, out=writer)


def test_writer_output_accepts_in_ram_queries(tmp_path):
    # The signature accepts arrays for queries; with ``out`` their ids are the row numbers.
    queries, memory = _random(10, 30), _random(12, 31)
    writer = StoreWriter(tmp_path / "pseudo", dim=DIM, shard_rows=4)
    _retrieve(queries, memory, query_chunk=4, out=writer)
    store = writer.close()
    np.testing.assert_allclose(store.to_numpy(), _naive_full(queries, memory, 0.05), atol=2e-6)
    assert store.ids == [str(i) for i in range(10)]


# -- cache -----------------------------------------------------------------------------------------
def _cached(queries, memory, cache_dir, temperature=0.05, top_k=None):
    return cached_pseudo_embeddings(queries, memory, temperature, top_k, cache_dir, space="clip",
                                    modality="image", device="cpu", query_chunk=4, progress=False)


def test_cache_holds_the_retrieval_result(tmp_path):
    queries_store, queries = _query_store(tmp_path)
    memory = _random(33, 22)
    memory_store = write_store(tmp_path / "memory", memory, shard_rows=10)
    cached = _cached(queries_store, memory_store, tmp_path / "cache")
    assert cached.info.complete
    np.testing.assert_allclose(cached.to_numpy(), _naive_full(queries, memory, 0.05), atol=2e-6)
    assert cached.ids == queries_store.ids


def test_cache_is_reused_without_recomputing(tmp_path, monkeypatch):
    queries_store, _ = _query_store(tmp_path)
    memory_store = write_store(tmp_path / "memory", _random(33, 22))
    first = _cached(queries_store, memory_store, tmp_path / "cache")
    mtimes = {p: p.stat().st_mtime_ns for p in first.path.iterdir()}

    def fail(*args, **kwargs):
        raise AssertionError("retrieval ran again although the cache was complete")

    monkeypatch.setattr(retrieval, "retrieve_pseudo_embeddings", fail)
    second = _cached(queries_store, memory_store, tmp_path / "cache")
    assert second.path == first.path
    np.testing.assert_array_equal(second.to_numpy(), first.to_numpy())
    assert {p: p.stat().st_mtime_ns for p in first.path.iterdir()} == mtimes


def test_cache_recomputes_when_the_memory_store_changes(tmp_path, monkeypatch):
    queries_store, queries = _query_store(tmp_path)
    _cached(queries_store, write_store(tmp_path / "memory", _random(33, 22)), tmp_path / "cache")
    new_memory = _random(33, 23)
    changed = write_store(tmp_path / "memory", new_memory, overwrite=True)
    calls = []
    original = retrieval.retrieve_pseudo_embeddings

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(retrieval, "retrieve_pseudo_embeddings", counting)
    recomputed = _cached(queries_store, changed, tmp_path / "cache")
    assert calls
    np.testing.assert_allclose(recomputed.to_numpy(), _naive_full(queries, new_memory, 0.05), atol=2e-6)


def test_cache_distinguishes_temperature_and_top_k(tmp_path):
    queries_store, queries = _query_store(tmp_path)
    memory = _random(33, 22)
    memory_store = write_store(tmp_path / "memory", memory)
    full = _cached(queries_store, memory_store, tmp_path / "cache", 0.05)
    colder = _cached(queries_store, memory_store, tmp_path / "cache", 0.01)
    top = _cached(queries_store, memory_store, tmp_path / "cache", 0.05, top_k=3)
    assert len({full.path, colder.path, top.path}) == 3
    np.testing.assert_allclose(colder.to_numpy(), _naive_full(queries, memory, 0.01), atol=1e-5)
    np.testing.assert_allclose(top.to_numpy(), _naive_top_k(queries, memory, 0.05, 3), atol=2e-6)


def test_interrupted_cache_resumes_to_the_full_result(tmp_path):
    queries_store, queries = _query_store(tmp_path, rows=80)
    memory = _random(33, 22)
    memory_store = write_store(tmp_path / "memory", memory)
    first = _cached(queries_store, memory_store, tmp_path / "cache")
    # Make it look interrupted: drop the last shard and mark the store incomplete.
    import json
    manifest = json.loads((first.path / "store.json").read_text())
    dropped = manifest["shards"].pop()
    (first.path / dropped["file"]).unlink()
    manifest["num_rows"] -= dropped["rows"]
    manifest["complete"] = False
    (first.path / "store.json").write_text(json.dumps(manifest))
    resumed = _cached(queries_store, memory_store, tmp_path / "cache")
    assert resumed.path == first.path and resumed.info.complete
    np.testing.assert_allclose(resumed.to_numpy(), _naive_full(queries, memory, 0.05), atol=2e-6)
