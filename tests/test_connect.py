"""`cmcr connect` end to end: it learns the emergent pair, and bad input gets a clear error."""

import json

from pathlib import Path

import numpy as np
import pytest
import yaml
from safetensors.numpy import load_file

from cmcr import ConnectedModel
from cmcr.cli import main
from cmcr.eval.metrics import retrieval_metrics
from cmcr.data.store import open_store, write_store
from cmcr.eval.baselines import apply_linear_map, fit_linear_map
from cmcr.data.synthetic import SyntheticSizes, write_synthetic_example

SMALL = SyntheticSizes(texts=3000, images=1500, audio=1500, test_pairs=300)


def _audio_to_image(model, emb):
    image = model.project("clip", open_store(emb / "test_image").to_numpy()).numpy()
    audio = model.project("clap", open_store(emb / "test_audio").to_numpy()).numpy()
    return retrieval_metrics(audio @ image.T)


def _linear_baseline(emb):
    weights = fit_linear_map(open_store(emb / "b_text").to_numpy(),
                             open_store(emb / "a_text").to_numpy())
    audio = apply_linear_map(weights, open_store(emb / "test_audio").to_numpy())
    return retrieval_metrics(audio @ open_store(emb / "test_image").to_numpy().T)


@pytest.mark.parametrize("seed", [0, 7])
def test_connect_learns_the_never_paired_modalities(tmp_path, seed):
    config = write_synthetic_example(tmp_path / "data", seed=seed, sizes=SMALL, epochs=15,
                                     batch_size=256)
    assert main(["connect", str(config), "--out", str(tmp_path / "model"), "--quiet"]) == 0
    model = ConnectedModel.from_pretrained(tmp_path / "model")
    cmcr = _audio_to_image(model, tmp_path / "data" / "emb")
    linear = _linear_baseline(tmp_path / "data" / "emb")
    chance_r1 = 100.0 / SMALL.test_pairs
    assert cmcr["R@1"] > 20 * chance_r1
    assert cmcr["R@1"] > linear["R@1"] + 10
    assert cmcr["mAP"] > linear["mAP"]


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    root = tmp_path_factory.mktemp("example")
    sizes = SyntheticSizes(texts=400, images=200, audio=200, test_pairs=50, dim_a=16, dim_b=12)
    config_path = write_synthetic_example(root, seed=1, sizes=sizes, epochs=2, batch_size=64)
    return root, config_path


def _run_connect(config_path, out, *extra):
    return main(["connect", str(config_path), "--out", str(out), "--quiet", *extra])


def test_connect_writes_model_log_checkpoint_and_record(example, tmp_path):
    _, config_path = example
    assert _run_connect(config_path, tmp_path / "run") == 0
    for name in ("config.json", "model.safetensors", "connect_config.yaml", "run.json",
                 "training/metrics.jsonl", "training/checkpoint.pt"):
        assert (tmp_path / "run" / name).is_file(), name
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert set(config["spaces"]) == {"clip", "clap"}
    assert config["spaces"]["clap"]["modalities"] == ["text", "audio"]
    assert config["cmcr_version"]
    assert config["train"]["epochs"] == 2


def test_a_saved_config_reruns_from_anywhere_and_gives_the_same_model(example, tmp_path,
                                                                     monkeypatch):
    """A run made with store paths relative to the working directory (as `cmcr demo --out runs/x`
    does) saves a config whose paths are relative to itself: re-run from another directory, or
    after moving the run's parent folder, it reproduces the weights."""
    import shutil

    from cmcr.config import ConnectConfig, read_config_file
    from cmcr.pipeline import connect

    root, config_path = example
    project = tmp_path / "project"
    shutil.copytree(root, project / "data")
    data = read_config_file(config_path)
    for space in data["spaces"].values():
        space["queries"] = f"data/{space['queries']}"
        space["memory"] = f"data/{space['memory']}"
    monkeypatch.chdir(project)
    connect(ConnectConfig.from_dict(data), Path("runs/first"), device="cpu", progress=False)
    moved = tmp_path / "moved"
    shutil.move(project, moved)
    monkeypatch.chdir(tmp_path)
    saved = moved / "runs" / "first" / "connect_config.yaml"
    assert main(["connect", str(saved), "--out", str(tmp_path / "again"), "--quiet"]) == 0
    first = load_file(str(moved / "runs" / "first" / "model.safetensors"))
    again = load_file(str(tmp_path / "again" / "model.safetensors"))
    assert [key for key in first if not np.array_equal(first[key], again[key])] == []


def test_set_overrides_reach_the_training(example, tmp_path):
    _, config_path = example
    assert _run_connect(config_path, tmp_path / "run", "--set", "train.epochs=1",
                        "--set", "projector.out_dim=6") == 0
    model = ConnectedModel.from_pretrained(tmp_path / "run")
    assert model.out_dim == 6 and model.config.train.epochs == 1


def test_pseudo_embeddings_are_cached_between_runs(example, tmp_path):
    _, config_path = example
    cache = tmp_path / "cache"
    assert _run_connect(config_path, tmp_path / "a", "--cache-dir", str(cache)) == 0
    stamps = {p: p.stat().st_mtime_ns for p in cache.rglob("*.npy")}
    assert len(stamps) == 2
    assert _run_connect(config_path, tmp_path / "b", "--cache-dir", str(cache)) == 0
    assert {p: p.stat().st_mtime_ns for p in cache.rglob("*.npy")} == stamps


def _config_with(example, tmp_path, **stores):
    root, config_path = example
    data = yaml.safe_load(config_path.read_text())
    for key, value in stores.items():
        space, field = key.split("__")
        data["spaces"][space][field] = str(value)
    for space in data["spaces"].values():
        for field in ("queries", "memory"):
            if not space[field].startswith("/"):
                space[field] = str(root / space[field])
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _error_of(capsys, config_path, tmp_path):
    assert _run_connect(config_path, tmp_path / "out") == 2
    return capsys.readouterr().err


def test_queries_of_different_lengths_are_named(example, tmp_path, capsys):
    root, _ = example
    short = write_store(tmp_path / "short", open_store(root / "emb/b_text").rows(0, 100),
                        modality="text")
    err = _error_of(capsys, _config_with(example, tmp_path, clap__queries=short.path), tmp_path)
    assert "differ in length" in err and str(short.path) in err and "Traceback" not in err


def test_memory_of_wrong_dim_is_named(example, tmp_path, capsys):
    rng = np.random.default_rng(0)
    wrong = tmp_path / "wrong.npy"
    np.save(wrong, rng.normal(size=(50, 5)).astype(np.float32))
    err = _error_of(capsys, _config_with(example, tmp_path, clip__memory=wrong), tmp_path)
    assert str(wrong) in err and "dim 5" in err


def test_nan_row_is_named_with_its_row(example, tmp_path, capsys):
    root, _ = example
    rows = open_store(root / "emb/a_image").to_numpy()
    rows[17, 3] = np.nan
    bad = tmp_path / "nan.npy"
    np.save(bad, rows)
    err = _error_of(capsys, _config_with(example, tmp_path, clip__memory=bad), tmp_path)
    assert str(bad) in err and "row 17" in err and "NaN" in err


def test_empty_store_is_refused(example, tmp_path, capsys):
    empty = tmp_path / "empty.npy"
    np.save(empty, np.zeros((0, 16), dtype=np.float32))
    err = _error_of(capsys, _config_with(example, tmp_path, clip__memory=empty), tmp_path)
    assert str(empty) in err and "empty" in err


def test_unreadable_store_is_named(example, tmp_path, capsys):
    broken = tmp_path / "broken.npy"
    broken.write_bytes(b"this is not numpy")
    err = _error_of(capsys, _config_with(example, tmp_path, clip__queries=broken), tmp_path)
    assert str(broken) in err and "Traceback" not in err


def test_missing_store_is_named(example, tmp_path, capsys):
    missing = tmp_path / "nowhere"
    err = _error_of(capsys, _config_with(example, tmp_path, clap__memory=missing), tmp_path)
    assert str(missing) in err


def test_store_of_wrong_modality_is_refused(example, tmp_path, capsys):
    root, _ = example
    err = _error_of(capsys, _config_with(example, tmp_path, clip__memory=root / "emb/a_text"),
                    tmp_path)
    assert "modality 'text'" in err and "'image'" in err


def test_unknown_config_key_lists_valid_keys(example, tmp_path, capsys):
    _, config_path = example
    assert _run_connect(config_path, tmp_path / "out", "--set", "train.epoch=3") == 2
    err = capsys.readouterr().err
    assert "train.epoch" in err and "epochs" in err and "batch_size" in err
