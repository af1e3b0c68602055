"""Hostile and careless inputs (issue 9, first part): nothing outside a store is read, configs
cannot exhaust memory, pickles are never suggested, overwrite deletes only a store's own files,
and unfinished stores are not trained on by accident."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch

from cmcr.cli import main
from cmcr.errors import CheckpointError, ConfigError, StoreError
from cmcr.data.store import StoreWriter, open_store, write_store


def unit_rows(count: int, dim: int) -> np.ndarray:
    rows = np.random.default_rng(0).standard_normal((count, dim)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def tampered(tmp_path, change) -> str:
    store = write_store(tmp_path / "store", unit_rows(4, 8), ["a", "b", "c", "d"], space="clip:x",
                        modality="text")
    manifest = json.loads((store.path / "store.json").read_text())
    change(manifest)
    (store.path / "store.json").write_text(json.dumps(manifest))
    return str(store.path)


@pytest.mark.parametrize("key, value", [("file", "../outside.npy"), ("file", "/etc/hostname"),
                                        ("ids", "/etc/hostname"), ("ids", "../../x.jsonl"),
                                        ("file", ".."), ("ids", "sub/ids.jsonl")])
def test_manifest_entries_cannot_point_outside_the_store(tmp_path, capsys, key, value):
    outside = tmp_path / "outside.npy"
    np.save(outside, unit_rows(4, 8))
    path = tampered(tmp_path, lambda m: m["shards"][0].update({key: value}))
    with pytest.raises(StoreError, match=f"shard 0 '{key}'.*plain names inside the store"):
        open_store(path)
    assert main(["store", "info", path]) == 2
    assert "plain names inside the store" in capsys.readouterr().err


@pytest.mark.parametrize("change, words", [
    (lambda m: m.update(shards=None), "'shards' must be a list"),
    (lambda m: m["shards"][0].pop("file"), "must name its 'file'"),
    (lambda m: m.update(dim="8"), "'dim' must be a positive integer"),
    (lambda m: m.update(num_rows=5), "'num_rows' says 5"),
    (lambda m: m.update(dtype="int8"), "'dtype' must be one of"),
])
def test_malformed_manifests_are_named_not_tracebacks(tmp_path, change, words):
    with pytest.raises(StoreError, match=words):
        open_store(tampered(tmp_path, change))


def test_a_yaml_alias_bomb_is_refused_at_once(tmp_path, capsys):
    levels = ["&a [" + ",".join(["lol"] * 9) + "]"]
    levels += [f"&{chr(98 + i)} [" + ",".join([f"*{chr(97 + i)}"] * 9) + "]" for i in range(8)]
    config = tmp_path / "bomb.yaml"
    config.write_text("spaces:\n  clip: {queries: a}\n  clap: {queries: b}\n"
                      f"train:\n  epochs: [{', '.join(levels)}]\n")
    began = time.perf_counter()
    assert main(["connect", str(config), "--out", str(tmp_path / "out")]) == 2
    assert time.perf_counter() - began < 10
    assert "aliases (*name) are not accepted" in capsys.readouterr().err


def test_error_messages_show_bounded_values(tmp_path):
    from cmcr.config import load_connect_config

    config = tmp_path / "long.yaml"
    config.write_text("spaces:\n  clip: {queries: a}\n  clap: {queries: b}\n"
                      f"train:\n  epochs: [{list(range(5000))}, '{'x' * 100000}']\n")
    with pytest.raises(ConfigError) as caught:
        load_connect_config(config)
    assert "'train.epochs' must be an integer" in str(caught.value)
    assert len(str(caught.value)) < 400


class Payload:
    """An arbitrary Python object: loading it would mean running the pickle's code."""


def test_a_checkpoint_with_python_objects_is_not_unpickled_or_excused(tmp_path, capsys):
    from cmcr.data.weights import read_torch_state

    path = tmp_path / "objects.pt"
    torch.save({"Head_A.net.0.weight": torch.zeros(2, 2), "extra": Payload()}, path)
    with pytest.raises(CheckpointError, match="not a plain tensor checkpoint") as caught:
        read_torch_state(path)
    assert "weights_only" not in str(caught.value).replace("weights_only=True", "")
    assert main(["import-official", str(path), "--kind", "ulip-clip", "--out",
                 str(tmp_path / "m")]) == 2
    assert "False" not in capsys.readouterr().err


def test_overwrite_refuses_a_folder_that_holds_no_store(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("shard-holiday.jpg", "ids-2024.txt", "meta-notes.md"):
        (folder / name).write_text("mine")
    with pytest.raises(StoreError, match="not a store .* refusing to overwrite"):
        write_store(folder, unit_rows(3, 8), overwrite=True)
    assert sorted(p.name for p in folder.iterdir()) == ["ids-2024.txt", "meta-notes.md",
                                                         "shard-holiday.jpg"]


def test_overwrite_deletes_only_what_the_manifest_lists(tmp_path):
    store = write_store(tmp_path / "s", unit_rows(6, 8), shard_rows=2)
    (store.path / "shard-notes.txt").write_text("mine")
    again = write_store(tmp_path / "s", unit_rows(3, 8), shard_rows=4, overwrite=True)
    assert len(again) == 3 and (store.path / "shard-notes.txt").read_text() == "mine"
    assert not (store.path / "shard-00002.npy").exists()  # the old store's last shard is gone


def test_connect_refuses_an_unfinished_store_unless_told(tmp_path, capsys):
    rows = unit_rows(64, 8)
    write_store(tmp_path / "a", rows, space="clip:x", modality="text")
    partial = StoreWriter(tmp_path / "b", dim=8, space="clap:x", modality="text", shard_rows=32)
    partial.append(np.vstack([rows, rows])[:70], [str(i) for i in range(70)])  # 64 rows on disk
    config = tmp_path / "c.yaml"
    config.write_text(f"spaces:\n  clip: {{queries: {tmp_path / 'a'}}}\n"
                      f"  clap: {{queries: {tmp_path / 'b'}}}\n"
                      "method: {use_memory: false}\ntrain: {epochs: 1, batch_size: 32}\n"
                      "projector: {hidden: 16, out_dim: 8}\n")
    assert main(["connect", str(config), "--out", str(tmp_path / "m"), "--quiet"]) == 2
    assert "incomplete (64 rows so far" in capsys.readouterr().err
    assert main(["connect", str(config), "--out", str(tmp_path / "m"), "--quiet",
                 "--allow-incomplete"]) == 0
