"""Hardening, second round (issue 20): a stale store lock is taken over by one process only, a cut
metrics line does not stop a resume, Ray addresses time out, tiny stores and configs that cannot
train are refused before any work, and hostile config values are one-line errors."""

from __future__ import annotations

import json
import multiprocessing
import socket
import subprocess
import time
from pathlib import Path

import pytest

from cmcr.data.store import LOCK_FILE, store_lock

RACERS, TRIALS = 8, 5


def _dead_pid() -> int:
    gone = subprocess.Popen(["true"])
    gone.wait()
    return gone.pid


def _race(folders: list[str], barrier, record: str) -> None:
    """Enter store_lock on each folder as the others do; write [trial, enter, leave] for each
    trial in which this racer held the lock to ``record``."""
    from cmcr.errors import StoreError

    held = []
    for trial, folder in enumerate(folders):
        barrier.wait()
        try:
            with store_lock(folder):
                entered = time.monotonic()
                time.sleep(0.02)
                held.append([trial, entered, time.monotonic()])
        except StoreError:
            pass  # refused: another racer holds the lock
    Path(record).write_text(json.dumps(held))


def test_a_stale_lock_is_taken_over_by_one_racer_at_a_time(tmp_path):
    folders = []
    for trial in range(TRIALS):
        folder = tmp_path / f"store{trial}"
        folder.mkdir()
        (folder / LOCK_FILE).write_text(json.dumps(
            {"pid": _dead_pid(), "host": socket.gethostname(), "since": "earlier",
             "note": "x" * 2_000_000}))  # slow to read: every racer finds the holder gone
        folders.append(str(folder))
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(RACERS)
    records = [tmp_path / f"racer{number}.json" for number in range(RACERS)]
    racers = [context.Process(target=_race, args=(folders, barrier, str(record)))
              for record in records]
    for racer in racers:
        racer.start()
    for racer in racers:
        racer.join(timeout=120)
    assert all(racer.exitcode == 0 for racer in racers)
    held: dict[int, list[tuple[float, float]]] = {trial: [] for trial in range(TRIALS)}
    for record in records:
        for trial, entered, left in json.loads(record.read_text()):
            held[trial].append((entered, left))
    for trial, spans in held.items():
        assert spans, f"trial {trial}: nobody took over the stale lock"
        spans.sort()
        overlaps = [(a, b) for a, b in zip(spans, spans[1:]) if b[0] < a[1]]
        assert not overlaps, f"trial {trial}: {len(overlaps) + 1} racers held the lock at once"
        assert not (Path(folders[trial]) / LOCK_FILE).exists()


# -- item 10: a cut last line of training/metrics.jsonl ------------------------------------------
def _unit_rows(count: int, dim: int, seed: int = 0):
    import numpy as np

    rows = np.random.default_rng(seed).standard_normal((count, dim)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def _tiny_training(epochs: int = 3):
    from cmcr.config import ConnectConfig
    from cmcr.method.retrieval import as_store
    from cmcr.method.train import TrainingData

    data = TrainingData(space_names=("clip", "clap"),
                        queries=(as_store(_unit_rows(64, 16, 1)), as_store(_unit_rows(64, 12, 2))),
                        pseudo=(as_store(_unit_rows(64, 16, 3)), as_store(_unit_rows(64, 12, 4))))
    config = ConnectConfig.from_dict({
        "spaces": {"clip": {"queries": "a", "memory": "b", "memory_modality": "image"},
                   "clap": {"queries": "c", "memory": "d", "memory_modality": "audio"}},
        "train": {"epochs": epochs, "batch_size": 32, "seed": 3},
        "projector": {"hidden": 16, "out_dim": 8, "layers": 2}})
    return data, config


def _train(data, config, out, **options):
    import torch

    from cmcr.pipeline import build_model
    from cmcr.method.train import train_projectors

    torch.manual_seed(config.train.seed)
    model = build_model(config, dict(zip(data.space_names, data.queries)))
    return train_projectors(model, data, config.train, config.method, out, progress=False,
                            **options)


class _Killed(Exception):
    pass


def _epochs_logged(path: Path) -> list[int]:
    return [json.loads(line)["epoch"] for line in path.read_text().splitlines()]


def test_a_cut_last_metrics_line_is_dropped_and_the_resume_trains_that_epoch_again(tmp_path,
                                                                                    capsys):
    from cmcr.method.train import METRICS_NAME

    data, config = _tiny_training()
    whole = _train(data, config, tmp_path / "whole").state_dict()

    def killed_after(epoch, _model):
        if epoch == 1:
            raise _Killed

    with pytest.raises(_Killed):
        _train(data, config, tmp_path / "cut", on_epoch=killed_after)
    metrics = tmp_path / "cut" / METRICS_NAME
    with open(metrics, "a", encoding="utf-8") as log:
        log.write('{"epoch": 2, "steps": 4, "lr": 0.000')  # a kill while epoch 2 was logged
    resumed = _train(data, config, tmp_path / "cut", resume=True).state_dict()
    assert "dropped a last line cut short" in capsys.readouterr().err
    assert _epochs_logged(metrics) == [1, 2, 3]
    assert all((whole[key] == resumed[key]).all() for key in whole)


def test_a_bad_metrics_line_in_the_middle_is_named_with_its_line(tmp_path):
    from cmcr.errors import CheckpointError
    from cmcr.method.train import METRICS_NAME

    data, config = _tiny_training()
    _train(data, config, tmp_path / "run")
    metrics = tmp_path / "run" / METRICS_NAME
    lines = metrics.read_text().splitlines()
    metrics.write_text("\n".join([lines[0], "not json", *lines[1:]]) + "\n")
    with pytest.raises(CheckpointError, match=r"metrics.jsonl, line 2: not a JSON record"):
        _train(data, config, tmp_path / "run", resume=True)


def test_connect_resume_after_a_cut_metrics_line_is_not_an_internal_error(tmp_path, capsys):
    from cmcr.cli import main

    config = _example(tmp_path)
    out = tmp_path / "run"
    assert main(["connect", str(config), "--out", str(out), "--quiet"]) == 0
    metrics = out / "training" / "metrics.jsonl"
    text = metrics.read_text()
    metrics.write_text(text[:len(text) - 20])  # the last record cut short
    assert main(["connect", str(config), "--out", str(out), "--quiet", "--resume"]) == 0
    assert "dropped a last line cut short" in capsys.readouterr().err
    assert _epochs_logged(metrics) == [1]


def _example(tmp_path: Path, **sizes) -> Path:
    """A tiny generated connect problem (2 epochs); returns its config file."""
    from cmcr.data.synthetic import SyntheticSizes, write_synthetic_example

    shape = dict(texts=40, images=20, audio=20, test_pairs=10, dim_a=16, dim_b=12) | sizes
    return write_synthetic_example(tmp_path / "data", seed=1, sizes=SyntheticSizes(**shape),
                                   epochs=2, batch_size=16)


# -- item 11: a Ray address where nothing listens ------------------------------------------------
def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]  # free once closed: nobody listens there


def _stops_within_its_ray_timeout(command: list[str]) -> None:
    """``cmcr COMMAND --ray ADDRESS --ray-timeout 2`` where nothing listens at ADDRESS: exit 2
    within the timeout, with one line naming the address."""
    import os
    import sys

    address = f"127.0.0.1:{_closed_port()}"
    began = time.monotonic()
    run = subprocess.run(
        [sys.executable, "-m", "cmcr", *command, "--quiet", "--ray", address, "--ray-timeout", "2"],
        capture_output=True, text=True, timeout=50,
        env={key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"})
    assert time.monotonic() - began < 45
    assert run.returncode == 2
    assert f"no Ray cluster answers at {address} (tried for 2 s" in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1 and "internal error" not in run.stderr


def test_embed_on_a_ray_address_where_nothing_listens_stops_within_its_timeout(
        tiny_clip_dir, image_dir, tmp_path):
    _stops_within_its_ray_timeout(["embed", "--space", f"clip:{tiny_clip_dir}", "--modality",
                                   "image", "--input", str(image_dir), "--out",
                                   str(tmp_path / "out")])


def test_connect_on_a_ray_address_where_nothing_listens_stops_within_its_timeout(tmp_path):
    from cmcr.cli import main
    from cmcr.data.synthetic import SyntheticSizes, write_synthetic_example

    sizes = SyntheticSizes(texts=64, images=32, audio=32, test_pairs=8, dim_a=8, dim_b=8)
    config = write_synthetic_example(tmp_path / "data", seed=0, sizes=sizes, epochs=1,
                                     batch_size=16)
    _stops_within_its_ray_timeout(["connect", str(config), "--out", str(tmp_path / "out")])
    assert main(["connect", str(config), "--out", str(tmp_path / "out"),
                 "--ray-timeout", "2"]) == 2  # without --ray: refused, naming --ray


@pytest.mark.parametrize("address", ["127.0.0.1", "127.0.0.1:0", "127.0.0.1:99999", ":6379"])
def test_a_ray_address_without_a_usable_port_is_named(address):
    from cmcr.distributed import ray_endpoint
    from cmcr.errors import ConfigError

    with pytest.raises(ConfigError, match=f"Ray address '{address}' must be HOST:PORT"):
        ray_endpoint(address)


# -- item 12: stores too small to train on --------------------------------------------------------
def _one_row_config(tmp_path: Path, **extra) -> Path:
    import yaml

    from cmcr.data.store import write_store

    for name, rows, dim, modality in (("a_text", 1, 16, "text"), ("b_text", 1, 12, "text"),
                                      ("a_image", 5, 16, "image"), ("b_audio", 5, 12, "audio")):
        write_store(tmp_path / name, _unit_rows(rows, dim), modality=modality)
    config = {"spaces": {"clip": {"queries": "a_text", "memory": "a_image",
                                  "memory_modality": "image"},
                         "clap": {"queries": "b_text", "memory": "b_audio",
                                  "memory_modality": "audio"}},
              "train": {"epochs": 1, "batch_size": 2},
              "projector": {"hidden": 8, "out_dim": 8, "layers": 1}, **extra}
    path = tmp_path / "connect.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@pytest.mark.parametrize("extra", [{}, {"mode": "extend", "extend": {"queries": ["text"]},
                                        "projector": {"hidden": 8, "out_dim": 16, "layers": 1}}])
def test_one_row_stores_are_refused_before_any_retrieval(tmp_path, capsys, extra):
    from cmcr.cli import main

    config = _one_row_config(tmp_path, **extra)
    assert main(["connect", str(config), "--out", str(tmp_path / "out"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "_text: 1 row to train on; training needs at least 2" in err
    assert len(err.strip().splitlines()) == 1 and "internal error" not in err
    assert not (tmp_path / "out" / "cache").exists()  # nothing was retrieved


# -- item 13: ranges and combinations that cannot train -----------------------------------------
@pytest.mark.parametrize("overrides, words", [
    (["method.same_text_threshold=-1"], "'method.same_text_threshold' must be in (0, 1], got -1"),
    (["method.same_text_threshold=0"], "'method.same_text_threshold' must be in (0, 1], got 0"),
    (["method.pseudo_rounds=2", "method.use_memory=false"],
     "'method.pseudo_rounds' needs pseudo pairs, but 'method.use_memory' is false"),
    (["method.normalize_pseudo=true", "method.use_memory=false"],
     "'method.normalize_pseudo' needs pseudo pairs"),
    (["method.center_modalities=true", "method.use_memory=false"],
     "'method.center_modalities' needs pseudo pairs"),
    (["method.same_text_threshold=0.9", "method.soft_target_temperature=0.1"],
     "ignores the mask of 'method.same_text_threshold'"),
    (["method.noise_cosine=0.9", "method.noise_calibration=1.0"],
     "'method.noise_cosine' and 'method.noise_calibration' both set the noise"),
])
def test_settings_that_cannot_train_are_refused_before_any_work(tmp_path, capsys, overrides,
                                                                words):
    from cmcr.cli import main

    config = _example(tmp_path)
    sets = [part for override in overrides for part in ("--set", override)]
    assert main(["connect", str(config), "--out", str(tmp_path / "out"), "--quiet", *sets]) == 2
    err = capsys.readouterr().err
    assert words in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_a_threshold_inside_the_range_still_trains(tmp_path):
    from cmcr.cli import main

    config = _example(tmp_path)
    assert main(["connect", str(config), "--out", str(tmp_path / "out"), "--quiet",
                 "--set", "method.same_text_threshold=0.95", "--set", "train.epochs=1"]) == 0


# -- item 14: space names ------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["../../EVIL", "", "a.b", "a/b", "x y"])
def test_a_space_name_that_is_not_one_safe_path_component_is_refused(tmp_path, capsys, name):
    import yaml

    from cmcr.cli import main

    config = _example(tmp_path)
    data = yaml.safe_load(config.read_text())
    data["spaces"] = {name: data["spaces"]["clip"], "clap": data["spaces"]["clap"]}
    config.write_text(yaml.safe_dump(data))
    out = tmp_path / "run" / "out"
    assert main(["connect", str(config), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "a space name must be letters, digits, '_' and '-' only" in err
    assert len(err.strip().splitlines()) == 1
    assert not out.exists() and not list(tmp_path.rglob("*EVIL*"))


# -- item 15: hostile values, one line each ------------------------------------------------------
@pytest.mark.parametrize("override, words", [
    ("method.noise_cosine=1e-300", "'method.noise_cosine' must be in [0.01, 1), got 1e-300"),
    ("train.lr=" + "9" * 400, "'train.lr' must be in (0, 1000], got 999"),
    ("train.epochs=" + "9" * 400, "'train.epochs' must be an integer below 2^63"),
    ("projector.hidden=1e10", "'projector.hidden' must be an integer"),
    ("projector.hidden=10000000000", "'projector.hidden' must be in [1, 65536]"),
    ("train.epochs=" + "[" * 100_000 + "]" * 100_000, "'train.epochs': lists or mappings nested "
                                                      "too deeply"),
])
def test_hostile_config_values_are_one_line_naming_the_key(tmp_path, capsys, override, words):
    from cmcr.cli import main

    config = _example(tmp_path)
    assert main(["connect", str(config), "--out", str(tmp_path / "out"), "--quiet",
                 "--set", override]) == 2
    err = capsys.readouterr().err
    assert words in err and len(err.strip().splitlines()) == 1 and len(err) < 400


def test_a_deeply_nested_config_file_is_one_line(tmp_path, capsys):
    from cmcr.cli import main

    config = tmp_path / "deep.yaml"
    config.write_text("spaces:\n  clip: {queries: a}\n  clap: {queries: b}\n"
                      f"train:\n  epochs: {'[' * 100_000}{']' * 100_000}\n")
    assert main(["connect", str(config), "--out", str(tmp_path / "out"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert f"{config}: lists or mappings nested too deeply" in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("file", ["store.json", "ids-00000.jsonl"])
def test_a_deeply_nested_store_file_is_one_line(tmp_path, capsys, file):
    from cmcr.cli import main
    from cmcr.data.store import write_store

    store = write_store(tmp_path / "store", _unit_rows(3, 4), ["a", "b", "c"], modality="text")
    deep = "[" * 100_000 + "]" * 100_000
    if file == "store.json":
        manifest = store.path / file
        manifest.write_text(manifest.read_text().replace('"dim": 4', f'"dim": {deep}'))
    else:
        (store.path / file).write_text(f'"a"\n{deep}\n"c"\n')
    assert main(["store", "info", str(store.path)]) == 2  # info shows the first ids
    err = capsys.readouterr().err
    assert f"{file}: " in err and "nested too deeply" in err
    assert len(err.strip().splitlines()) == 1


def test_integer_keys_in_an_official_checkpoint_are_named(tmp_path, capsys):
    import torch

    from cmcr.cli import main

    path = tmp_path / "odd.pt"
    torch.save({0: torch.zeros(3), "Head_A.net.0.weight": torch.zeros(2)}, path)
    assert main(["import-official", str(path), "--kind", "clap-clip", "--out",
                 str(tmp_path / "model")]) == 2
    err = capsys.readouterr().err
    assert "state dict key 0 is not a string" in err and len(err.strip().splitlines()) == 1
