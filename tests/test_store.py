"""Embedding stores: round trips, memory mapping, sharded reads, resumable writing, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cmcr.errors import StoreError
from cmcr.data.store import MANIFEST, StoreWriter, open_store, write_store

ROWS, DIM, SHARD_ROWS = 23, 6, 5


def _matrix(rows: int = ROWS, dim: int = DIM, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((rows, dim)).astype(np.float32)


def _files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
    """A 23-row store in shards of 5 (5, 5, 5, 5, 3) and the matrix it holds."""
    matrix = _matrix()
    store = write_store(tmp_path_factory.mktemp("sharded") / "store", matrix, shard_rows=SHARD_ROWS)
    return store, matrix


# -- round trips -----------------------------------------------------------------------------------
def test_float32_round_trip_is_exact(tmp_path):
    matrix = _matrix()
    store = open_store(write_store(tmp_path / "s", matrix, dtype="float32").path)
    assert store.info.dtype == "float32"
    np.testing.assert_array_equal(store.to_numpy(), matrix)


def test_float16_round_trip_equals_float16_rounding(tmp_path):
    matrix = _matrix()
    store = open_store(write_store(tmp_path / "s", matrix, dtype="float16").path)
    assert np.load(tmp_path / "s" / "shard-00000.npy").dtype == np.float16
    out = store.to_numpy()
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, matrix.astype(np.float16).astype(np.float32))


def test_unsupported_dtype_is_refused(tmp_path):
    with pytest.raises(StoreError, match="float64"):
        StoreWriter(tmp_path / "s", dim=4, dtype="float64")


def test_rows_are_split_into_shards_of_shard_rows(sharded):
    store, _ = sharded
    assert [s["rows"] for s in store.info.shards] == [5, 5, 5, 5, 3]
    assert sorted(p.name for p in store.path.glob("shard-*.npy")) == [
        f"shard-{i:05d}.npy" for i in range(5)]
    assert len(store) == ROWS and store.dim == DIM


def test_manifest_records_space_modality_and_normalisation(tmp_path):
    matrix = _matrix()
    unit = matrix / np.linalg.norm(matrix, axis=1, keepdims=True)
    store = write_store(tmp_path / "s", unit, space="clip", modality="image")
    manifest = json.loads((tmp_path / "s" / MANIFEST).read_text())
    assert (manifest["space"], manifest["modality"], manifest["dim"]) == ("clip", "image", DIM)
    assert manifest["complete"] is True and manifest["normalized"] is True
    assert (store.space, store.modality) == ("clip", "image")
    assert write_store(tmp_path / "raw", matrix * 3).info.normalized is False


def test_ids_and_metadata_round_trip_across_shards(tmp_path):
    ids = [f"item-{i}" for i in range(ROWS)]
    metadata = [{"caption": f"caption {i}", "index": i} for i in range(ROWS)]
    write_store(tmp_path / "s", _matrix(), ids, metadata=metadata, shard_rows=SHARD_ROWS)
    store = open_store(tmp_path / "s")
    assert store.ids == ids
    assert store.metadata() == metadata


def test_store_without_metadata_returns_none(sharded):
    store, _ = sharded
    assert store.metadata() is None
    assert store.ids == [str(i) for i in range(ROWS)]


def test_writer_refuses_rows_without_metadata_once_it_records_metadata(tmp_path):
    writer = StoreWriter(tmp_path / "s", dim=DIM)
    writer.append(_matrix(2), ["a", "b"], [{"k": 1}, {"k": 2}])
    with pytest.raises(StoreError, match="metadata"):
        writer.append(_matrix(2), ["c", "d"])


def test_writer_refuses_rows_of_the_wrong_width(tmp_path):
    writer = StoreWriter(tmp_path / "s", dim=DIM)
    with pytest.raises(StoreError, match=str(tmp_path / "s")):
        writer.append(_matrix(2, DIM + 1), ["a", "b"])


def test_writer_refuses_ids_that_do_not_match_the_rows(tmp_path):
    writer = StoreWriter(tmp_path / "s", dim=DIM)
    with pytest.raises(StoreError, match="ids"):
        writer.append(_matrix(3), ["a", "b"])


# -- memory mapping and reads ----------------------------------------------------------------------
def test_shards_are_memory_mapped(sharded):
    store, _ = sharded
    assert all(isinstance(shard, np.memmap) for shard in store._shards)


def test_npy_file_is_memory_mapped(tmp_path):
    np.save(tmp_path / "m.npy", _matrix())
    assert isinstance(open_store(tmp_path / "m.npy")._shards[0], np.memmap)


@settings(max_examples=60, deadline=None)
@given(start=st.integers(-3, ROWS + 3), stop=st.integers(-3, ROWS + 3))
def test_rows_across_shard_boundaries_equal_a_plain_array(sharded, start, stop):
    store, matrix = sharded
    expected = matrix[max(0, start):max(0, min(ROWS, stop))]
    out = store.rows(start, stop)
    assert out.dtype == np.float32 and out.shape == (len(expected), DIM)
    np.testing.assert_array_equal(out, expected)


@settings(max_examples=60, deadline=None)
@given(indices=st.lists(st.integers(0, ROWS - 1), max_size=40))
def test_take_in_any_order_with_repeats_equals_fancy_indexing(sharded, indices):
    store, matrix = sharded
    out = store.take(indices)
    assert out.shape == (len(indices), DIM)
    np.testing.assert_array_equal(out, matrix[np.asarray(indices, dtype=np.int64)])


@pytest.mark.parametrize("chunk_rows", [1, 3, 5, 7, 23, 100])
def test_iter_chunks_covers_all_rows_in_order(sharded, chunk_rows):
    store, matrix = sharded
    chunks = list(store.iter_chunks(chunk_rows))
    assert [start for start, _ in chunks] == list(range(0, ROWS, chunk_rows))
    assert all(len(block) == min(chunk_rows, ROWS - start) for start, block in chunks)
    np.testing.assert_array_equal(np.concatenate([block for _, block in chunks]), matrix)


# -- plain .npy ------------------------------------------------------------------------------------
def test_open_store_accepts_a_plain_npy_matrix(tmp_path):
    matrix = _matrix()
    np.save(tmp_path / "m.npy", matrix)
    store = open_store(tmp_path / "m.npy")
    assert (len(store), store.dim) == (ROWS, DIM)
    assert store.ids == [str(i) for i in range(ROWS)]
    assert store.info.normalized is None
    np.testing.assert_array_equal(store.rows(3, 9), matrix[3:9])
    np.testing.assert_array_equal(store.take([7, 1]), matrix[[7, 1]])
    assert store.first_nonfinite_row() is None
    assert store.describe()["rows"] == ROWS


def test_float16_npy_is_read_as_float32(tmp_path):
    matrix = _matrix().astype(np.float16)
    np.save(tmp_path / "m.npy", matrix)
    np.testing.assert_array_equal(open_store(tmp_path / "m.npy").to_numpy(), matrix.astype(np.float32))


# -- resumable writing -----------------------------------------------------------------------------
def _write_all(path: Path, matrix: np.ndarray, ids, metadata, batch: int) -> None:
    writer = StoreWriter(path, dim=DIM, space="clip", modality="text", shard_rows=SHARD_ROWS)
    for start in range(0, len(matrix), batch):
        writer.append(matrix[start:start + batch], ids[start:start + batch],
                      metadata[start:start + batch])
    writer.close()


def test_resumed_writer_gives_byte_identical_files(tmp_path):
    matrix = _matrix()
    ids = [f"id{i}" for i in range(ROWS)]
    metadata = [{"i": i} for i in range(ROWS)]
    _write_all(tmp_path / "uninterrupted", matrix, ids, metadata, batch=4)

    interrupted = tmp_path / "interrupted"
    writer = StoreWriter(interrupted, dim=DIM, space="clip", modality="text", shard_rows=SHARD_ROWS)
    writer.append(matrix[:13], ids[:13], metadata[:13])  # two shards on disk, 3 rows pending
    del writer  # abandoned: no close()
    assert json.loads((interrupted / MANIFEST).read_text())["complete"] is False

    resumed = StoreWriter(interrupted, dim=DIM, space="clip", modality="text", shard_rows=SHARD_ROWS)
    restart = resumed.num_rows
    assert restart == 10
    for start in range(restart, ROWS, 6):
        resumed.append(matrix[start:start + 6], ids[start:start + 6], metadata[start:start + 6])
    resumed.close()
    assert _files(interrupted) == _files(tmp_path / "uninterrupted")


def test_incomplete_store_reads_only_whole_shards_and_says_incomplete(tmp_path):
    writer = StoreWriter(tmp_path / "s", dim=DIM, shard_rows=SHARD_ROWS)
    writer.append(_matrix(7), [str(i) for i in range(7)])
    store = open_store(tmp_path / "s")
    assert store.info.complete is False
    assert len(store) == 5  # only whole shards reached the disk


def test_complete_store_refuses_to_reopen_without_overwrite(tmp_path):
    write_store(tmp_path / "s", _matrix())
    with pytest.raises(StoreError) as err:
        StoreWriter(tmp_path / "s", dim=DIM)
    assert str(tmp_path / "s") in str(err.value)
    assert "overwrite" in str(err.value)


def test_overwrite_replaces_a_complete_store(tmp_path):
    write_store(tmp_path / "s", _matrix(ROWS), shard_rows=SHARD_ROWS)
    replacement = _matrix(4, seed=1)
    writer = StoreWriter(tmp_path / "s", dim=DIM, overwrite=True)
    writer.append(replacement, list("abcd"))
    store = writer.close()
    np.testing.assert_array_equal(store.to_numpy(), replacement)
    assert sorted(p.name for p in (tmp_path / "s").glob("shard-*")) == ["shard-00000.npy"]


@pytest.mark.parametrize("key, value", [("dim", DIM + 1), ("dtype", "float16"), ("shard_rows", 4),
                                        ("space", "clap")])
def test_resume_with_different_settings_is_an_error_naming_the_setting(tmp_path, key, value):
    settings_ = {"dim": DIM, "dtype": "float32", "shard_rows": SHARD_ROWS, "space": "clip"}
    writer = StoreWriter(tmp_path / "s", **settings_)
    writer.append(_matrix(7), [str(i) for i in range(7)])
    with pytest.raises(StoreError) as err:
        StoreWriter(tmp_path / "s", **{**settings_, key: value})
    assert key in str(err.value) and str(tmp_path / "s") in str(err.value)


# -- errors name the path --------------------------------------------------------------------------
def _store_error(path) -> str:
    with pytest.raises(StoreError) as err:
        open_store(path)
    return str(err.value)


def test_missing_path_error_names_it(tmp_path):
    assert str(tmp_path / "nowhere") in _store_error(tmp_path / "nowhere")


def test_directory_without_manifest_error_names_it(tmp_path):
    (tmp_path / "empty").mkdir()
    message = _store_error(tmp_path / "empty")
    assert str(tmp_path / "empty") in message and MANIFEST in message


def test_corrupt_manifest_error_names_it(tmp_path):
    write_store(tmp_path / "s", _matrix())
    (tmp_path / "s" / MANIFEST).write_text("{not json", encoding="utf-8")
    assert str(tmp_path / "s" / MANIFEST) in _store_error(tmp_path / "s")


def test_manifest_of_another_format_error_names_it(tmp_path):
    write_store(tmp_path / "s", _matrix())
    (tmp_path / "s" / MANIFEST).write_text(json.dumps({"rows": 3}), encoding="utf-8")
    assert str(tmp_path / "s" / MANIFEST) in _store_error(tmp_path / "s")


def test_missing_shard_error_names_the_shard(tmp_path):
    write_store(tmp_path / "s", _matrix(), shard_rows=SHARD_ROWS)
    (tmp_path / "s" / "shard-00002.npy").unlink()
    assert str(tmp_path / "s" / "shard-00002.npy") in _store_error(tmp_path / "s")


def test_shard_of_wrong_shape_error_names_the_shard(tmp_path):
    write_store(tmp_path / "s", _matrix(), shard_rows=SHARD_ROWS)
    np.save(tmp_path / "s" / "shard-00001.npy", _matrix(4))
    message = _store_error(tmp_path / "s")
    assert str(tmp_path / "s" / "shard-00001.npy") in message and "shape" in message


@pytest.mark.parametrize("array, phrase", [
    (np.arange(12, dtype=np.int64).reshape(3, 4), "float"),
    (np.ones(5, dtype=np.float32), "2-D"),
    (np.ones((2, 3, 4), dtype=np.float32), "2-D"),
])
def test_npy_that_is_not_a_float_matrix_error_names_it(tmp_path, array, phrase):
    np.save(tmp_path / "bad.npy", array)
    message = _store_error(tmp_path / "bad.npy")
    assert str(tmp_path / "bad.npy") in message and phrase in message


def test_truncated_npy_error_names_it(tmp_path):
    np.save(tmp_path / "cut.npy", _matrix(100, 16))
    data = (tmp_path / "cut.npy").read_bytes()
    (tmp_path / "cut.npy").write_bytes(data[: len(data) // 2])
    assert str(tmp_path / "cut.npy") in _store_error(tmp_path / "cut.npy")


def test_corrupt_npy_error_names_it(tmp_path):
    (tmp_path / "junk.npy").write_bytes(b"this is not a numpy file\x00\x01\x02" * 10)
    assert str(tmp_path / "junk.npy") in _store_error(tmp_path / "junk.npy")


def test_truncated_shard_inside_a_store_error_names_the_shard(tmp_path):
    write_store(tmp_path / "s", _matrix(), shard_rows=SHARD_ROWS)
    shard = tmp_path / "s" / "shard-00003.npy"
    shard.write_bytes(shard.read_bytes()[:-17])
    assert str(shard) in _store_error(tmp_path / "s")


# -- non-finite rows -------------------------------------------------------------------------------
@pytest.mark.parametrize("bad_value", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("chunk_rows", [1, 4, 65536])
def test_first_nonfinite_row_finds_the_first_bad_row(tmp_path, bad_value, chunk_rows):
    matrix = _matrix()
    matrix[17, 2] = bad_value
    matrix[11, 5] = bad_value
    matrix[19, 0] = bad_value
    store = write_store(tmp_path / "s", matrix, shard_rows=SHARD_ROWS)
    assert store.first_nonfinite_row(chunk_rows) == 11


def test_first_nonfinite_row_is_none_for_finite_rows(sharded):
    store, _ = sharded
    assert store.first_nonfinite_row(4) is None
