"""Hostile and damaged indexes (issue 20, items 6, 8 and 16): index.json is checked key by key
like store.json, segments are checked against the sha256 and rows recorded at build time,
non-finite rows are refused at build and at search, and a build killed with SIGKILL is resumed
(or replaced) by running it again."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from cmcr import Index
from cmcr.cli import main
from cmcr.errors import CheckpointError, StoreError
from cmcr.method.model import ConnectedModel
from cmcr.data.store import write_store
from search_fixtures import build_joint_model, free_port


def unit_rows(count: int, dim: int, seed: int) -> np.ndarray:
    rows = np.random.default_rng(seed).standard_normal((count, dim)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return build_joint_model(tmp_path_factory.mktemp("joint-model"))


@pytest.fixture(scope="module")
def stores(tmp_path_factory) -> list[Path]:
    """Two image stores of the same size (so swapped segments keep their row counts) and one
    audio store, with texts for sources."""
    root = tmp_path_factory.mktemp("stores")
    made = []
    for number, (modality, space, rows) in enumerate([("image", "clip:x", 60), ("image", "clip:x", 60),
                                                      ("audio", "clap:y", 40)]):
        made.append(write_store(root / f"s{number}", unit_rows(rows, 16, number),
                                [f"{number}-{i}" for i in range(rows)], space=space,
                                modality=modality, metadata=[{"source": f"/m/{number}/{i}.x"}
                                                             for i in range(rows)]).path)
    return made


@pytest.fixture(scope="module")
def built(tmp_path_factory, model, stores) -> Path:
    out = tmp_path_factory.mktemp("built") / "idx"
    assert main(["index", "build", "--model", str(model), "--out", str(out), "--quiet",
                 *[arg for store in stores for arg in ("--store", str(store))]]) == 0
    return out


@pytest.fixture
def index_copy(built, tmp_path) -> Path:
    return Path(shutil.copytree(built, tmp_path / "idx"))


def edit_manifest(directory: Path, change) -> None:
    path = directory / "index.json"
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))


def one_line_cli_error(argv: list[str], capsys) -> str:
    code = main(argv)
    captured = capsys.readouterr()
    assert code == 2, captured.err
    error = captured.err.strip().splitlines()[-1]
    assert error.startswith("cmcr: error: ") and "internal error" not in captured.err
    assert "Traceback" not in captured.err
    return error


# -- item 6: index.json checked like store.json -------------------------------------------------
@pytest.mark.parametrize("segment", ["../../other/segment-00000", "/tmp/segment-00000", "..", ""])
def test_a_segment_name_outside_the_index_folder_is_refused(index_copy, tmp_path, capsys,
                                                           segment):
    outside = tmp_path / "other"
    outside.mkdir()
    for path in index_copy.glob("segment-00000.*"):  # a valid segment to read, outside the index
        shutil.copy(path, outside / path.name)
    edit_manifest(index_copy, lambda m: m["collections"][0].update(segment=segment))
    with pytest.raises(StoreError, match=r"index.json: 'collections\[0\].segment' must be a plain "
                                         "file name inside the index folder"):
        Index.open(index_copy)
    assert "collections[0].segment" in one_line_cli_error(["index", "info", str(index_copy)], capsys)


@pytest.mark.parametrize("change, words", [
    (lambda m: m["collections"][0].update(rows=-10), r"'collections\[0\].rows' must be a positive"),
    (lambda m: m["collections"][0].update(rows="60"), r"'collections\[0\].rows' must be a positive"),
    (lambda m: m.update(dim="256"), r"'dim' must be a positive integer, got '256'"),
    (lambda m: m.update(dim=True), r"'dim' must be a positive integer"),
    (lambda m: m["collections"][1].update(start=7), r"'collections\[1\].start' is 7, but the "
                                                    "collections before it hold 60 rows"),
    (lambda m: m["collections"][0].update(search_parameter="nprobe", search_value=4),
     r"'collections\[0\].search_parameter' must be null for a 'Flat' index"),
    (lambda m: m["collections"][0].update(search_value=-1), r"'collections\[0\].search_value'"),
    (lambda m: m["collections"][0].update(name=["x"]), r"'collections\[0\].name' must be a non-empty"),
    (lambda m: m["collections"][0].update(extra=1), r"unknown key 'collections\[0\].extra'"),
    (lambda m: m["collections"][0].pop("store"), r"missing key 'collections\[0\].store'"),
    (lambda m: m["collections"][0].update(sha256={"faiss": "00"}), r"'collections\[0\].sha256'"),
    (lambda m: m.update(collections={}), r"'collections' must be a list"),
    (lambda m: m.update(model_digest=5), r"'model_digest' must be a sha256"),
    (lambda m: m.update(complete="yes"), r"'complete' must be true or false"),
    (lambda m: m["collections"][1].update(segment="segment-00000"), r"used by another collection"),
])
def test_malformed_index_manifests_name_the_file_and_the_key(index_copy, capsys, change, words):
    edit_manifest(index_copy, change)
    with pytest.raises(StoreError, match=words) as err:
        Index.open(index_copy)
    assert str(index_copy / "index.json") in str(err.value)
    one_line_cli_error(["search", str(index_copy), "--like", "0"], capsys)


def test_a_deeply_nested_manifest_is_refused_in_one_line(index_copy):
    (index_copy / "index.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(StoreError, match="index.json: not a"):
        Index.open(index_copy)


def test_an_ivf_factory_recorded_on_a_flat_segment_is_refused_naming_the_segment(index_copy,
                                                                                 capsys):
    edit_manifest(index_copy, lambda m: m["collections"][2].update(factory="IVF4,Flat"))
    with pytest.raises(StoreError, match=r"segment-00002.faiss: segment 'segment-00002' is a "
                                         r"Flat index, but index.json records factory 'IVF4,Flat'"):
        Index.open(index_copy)
    edit_manifest(index_copy, lambda m: m["collections"][2].update(factory="NoSuchKind9"))
    with pytest.raises(StoreError, match="'NoSuchKind9' is not a valid FAISS factory"):
        Index.open(index_copy)


def test_swapped_segments_of_equal_size_are_refused_naming_the_segment(index_copy):
    for suffix in ("faiss", "ids.bin", "ids.offsets.npy", "sources.bin", "sources.offsets.npy"):
        first, second = (index_copy / f"segment-0000{n}.{suffix}" for n in (0, 1))
        first.rename(index_copy / "swap")
        second.rename(first)
        (index_copy / "swap").rename(second)
    with pytest.raises(StoreError, match=r"segment-00000.faiss: segment 'segment-00000' was "
                                         r"changed or swapped after the build"):
        Index.open(index_copy)


def test_edited_rows_and_starts_are_refused_naming_the_segment(index_copy):
    def shrink(manifest):
        manifest["collections"][0]["rows"] = 50
        manifest["collections"][1]["start"] = 50
        manifest["collections"][2]["start"] = 110

    edit_manifest(index_copy, shrink)
    with pytest.raises(StoreError, match=r"segment-00000.faiss: segment 'segment-00000' holds "
                                         r"60 8-d rows, but index.json records 50"):
        Index.open(index_copy)


def test_invalid_utf8_in_a_sources_table_is_refused_at_open(index_copy, capsys):
    table = index_copy / "segment-00001.sources.bin"
    data = bytearray(table.read_bytes())
    data[3] = 0xFF
    table.write_bytes(bytes(data))
    with pytest.raises(StoreError, match="segment-00001.sources.bin: segment 'segment-00001' was "
                                         "changed or swapped"):
        Index.open(index_copy)
    edit_manifest(index_copy, lambda m: [c.update(sha256=None) for c in m["collections"]])
    with pytest.raises(StoreError, match="segment-00001.sources.bin: not valid UTF-8"):
        Index.open(index_copy)
    assert "not valid UTF-8" in one_line_cli_error(["serve", str(index_copy), "--port",
                                                    str(free_port())], capsys)


def test_an_old_index_without_checksums_opens_with_a_note_and_searches(index_copy, built, capsys):
    edit_manifest(index_copy, lambda m: [c.pop("sha256") for c in m["collections"]])
    index = Index.open(index_copy)
    assert "did not record its segments' sha256" in capsys.readouterr().err
    query = unit_rows(1, 8, 9)[0]
    assert ([hit.row for hit in index.search(vector=query, k=5)]
            == [hit.row for hit in Index.open(built).search(vector=query, k=5)])
    edit_manifest(index_copy, lambda m: m["collections"][2].update(rows=39))
    with pytest.raises(StoreError, match="segment 'segment-00002' holds 40"):
        Index.open(index_copy)


def test_a_fresh_index_records_each_segments_sha256(built):
    manifest = json.loads((built / "index.json").read_text())
    assert manifest["complete"] is True
    for collection in manifest["collections"]:
        assert set(collection["sha256"]) == {"faiss", "ids.bin", "ids.offsets.npy", "sources.bin",
                                             "sources.offsets.npy"}


# -- item 8: non-finite rows at build and at search ----------------------------------------------
def test_a_store_row_holding_nan_is_refused_at_build_naming_store_and_row(tmp_path, model,
                                                                          capsys):
    rows = unit_rows(30, 16, 5)
    rows[17, 3] = np.nan
    store = write_store(tmp_path / "nan-store", rows, space="clip:x", modality="image")
    with pytest.raises(StoreError, match=r"nan-store: row 17 \(id '17'\) holds NaN/inf"):
        Index.build(tmp_path / "idx", model, [str(store.path)], progress=False)
    error = one_line_cli_error(["index", "build", "--model", str(model), "--out",
                                str(tmp_path / "idx2"), "--store", str(store.path), "--quiet"],
                               capsys)
    assert "row 17" in error and "nan-store" in error


@pytest.mark.parametrize("index_type", ["exact", "IVF2,Flat"])
def test_a_model_projecting_to_nan_is_refused_at_build_naming_the_first_row(tmp_path, stores,
                                                                           index_type):
    loaded = ConnectedModel.from_pretrained(build_joint_model(tmp_path / "m"))
    with torch.no_grad():
        next(loaded.projectors["clip"].parameters()).fill_(3e38)  # finite, but overflows
    broken = loaded.save_pretrained(tmp_path / "broken")
    joint = loaded.project("clip", np.load(stores[0] / "shard-00000.npy")).numpy()
    first = int(np.flatnonzero(~np.isfinite(joint).all(axis=1))[0])
    with pytest.raises(StoreError, match=rf"s0: row {first} \(id '0-{first}'\) projects to "
                                         r"NaN/inf through the model's 'clip' projector"):
        Index.build(tmp_path / "idx", broken, [str(stores[0])], progress=False,
                    index_type=index_type)


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_a_non_finite_query_vector_is_refused_not_answered_empty(built, value):
    query = unit_rows(1, 8, 3)[0]
    query[2] = value
    with pytest.raises(CheckpointError, match=r"query's joint-space vector holds 1 NaN/inf"):
        Index.open(built).search(vector=query, k=5)


# -- item 16: a killed build is resumed or replaced ----------------------------------------------
def killed_build(out: Path, model: Path, stores: list[Path], kill_at: int) -> None:
    """Run 'cmcr index build' in a child process that SIGKILLs itself when it is about to write
    the FAISS file of segment number ``kill_at`` (0-based; its tables are written, its .faiss.tmp
    is half-written): what a kill -9 leaves behind, a stale lock included."""
    script = textwrap.dedent(f"""
        import os, signal
        from cmcr.serve import ann
        from cmcr.cli import main
        real, calls = ann.write_index, []
        def write_index(index, path):
            calls.append(path)
            if len(calls) > {kill_at}:
                open(str(path) + ".tmp", "wb").write(b"half")
                os.kill(os.getpid(), signal.SIGKILL)
            return real(index, path)
        ann.write_index = write_index
        main({["index", "build", "--model", str(model), "--out", str(out), "--quiet",
               *[a for s in stores for a in ("--store", str(s))]]!r})
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=300)
    assert result.returncode == -9, result.stderr.decode()[-2000:]
    assert (out / "index.json").is_file() and (out / ".cmcr-lock").is_file()
    assert (out / f"segment-0000{kill_at}.ids.bin").is_file()


@pytest.mark.parametrize("kill_at", [0, 2])
def test_a_build_killed_after_index_json_appeared_is_resumed_by_running_it_again(
        tmp_path, model, stores, built, capsys, kill_at):
    out = tmp_path / "idx"
    killed_build(out, model, stores, kill_at)
    assert len(json.loads((out / "index.json").read_text())["collections"]) == kill_at
    assert main(["index", "build", "--model", str(model), "--out", str(out), "--quiet",
                 *[a for s in stores for a in ("--store", str(s))]]) == 0
    assert f"({kill_at} of 3 stores were done)" in capsys.readouterr().err
    assert not list(out.glob("*.tmp")) and not (out / ".cmcr-lock").exists()
    for name in ("segment-00000.faiss", "segment-00001.sources.bin", "segment-00002.ids.bin"):
        assert (out / name).read_bytes() == (built / name).read_bytes()
    resumed, whole = Index.open(out), Index.open(built)
    assert resumed.manifest.complete and len(resumed) == 160
    query = unit_rows(1, 8, 4)[0]
    assert ([(h.row, h.id) for h in resumed.search(vector=query, k=8)]
            == [(h.row, h.id) for h in whole.search(vector=query, k=8)])


def test_a_killed_build_begun_with_other_stores_is_replaced_without_overwrite(tmp_path, model,
                                                                             stores, capsys):
    out = tmp_path / "idx"
    killed_build(out, model, stores, 1)
    assert main(["index", "build", "--model", str(model), "--out", str(out), "--quiet",
                 "--store", str(stores[2])]) == 0
    assert "replacing an unfinished index (it was begun with other stores)" in capsys.readouterr().err
    index = Index.open(out)
    assert len(index) == 40 and index.modalities == ["audio"]
    assert sorted(p.name for p in out.glob("segment-*")) == sorted(
        f"segment-00000.{suffix}" for suffix in ("faiss", "ids.bin", "ids.offsets.npy",
                                                 "sources.bin", "sources.offsets.npy",
                                                 *index.manifest.collections[0].extra_files))


def test_a_finished_index_is_still_kept_without_overwrite(built, model, stores, capsys):
    error = one_line_cli_error(["index", "build", "--model", str(model), "--out", str(built),
                                "--quiet", "--store", str(stores[0])], capsys)
    assert "an index is already there" in error
