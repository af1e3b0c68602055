"""The training loop: determinism, resume, logs, schedule."""

import json

import numpy as np
import pytest
import torch

from cmcr.config import ConnectConfig, MethodConfig, TrainConfig
from cmcr.pipeline import build_model
from cmcr.method.retrieval import as_store
from cmcr.method.train import (CHECKPOINT_NAME, METRICS_NAME, TrainingData, cosine_lr_factor,
                        steps_per_epoch, train_projectors)


def _unit(rng, n, d):
    rows = rng.normal(size=(n, d)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


@pytest.fixture()
def problem():
    rng = np.random.default_rng(0)
    text_a, text_b = _unit(rng, 96, 16), _unit(rng, 96, 12)
    data = TrainingData(space_names=("clip", "clap"),
                        queries=(as_store(text_a), as_store(text_b)),
                        pseudo=(as_store(_unit(rng, 96, 16)), as_store(_unit(rng, 96, 12))))
    config = ConnectConfig.from_dict({
        "spaces": {"clip": {"queries": "a", "memory": "b", "memory_modality": "image"},
                   "clap": {"queries": "c", "memory": "d", "memory_modality": "audio"}},
        "train": {"epochs": 4, "batch_size": 32, "seed": 3},
        "projector": {"hidden": 24, "out_dim": 8, "layers": 2},
    })
    return data, config


def _fresh_model(data, config):
    torch.manual_seed(config.train.seed)
    return build_model(config, dict(zip(data.space_names, data.queries)))


def _weights(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _train(data, config, out, **kwargs):
    model = _fresh_model(data, config)
    return train_projectors(model, data, config.train, config.method, out, progress=False, **kwargs)


def test_same_seed_gives_identical_weights(problem, tmp_path):
    data, config = problem
    first = _weights(_train(data, config, tmp_path / "a"))
    second = _weights(_train(data, config, tmp_path / "b"))
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_different_seed_gives_different_weights(problem, tmp_path):
    data, config = problem
    first = _weights(_train(data, config, tmp_path / "a"))
    config.train.seed = 4
    second = _weights(_train(data, config, tmp_path / "b"))
    assert not all(torch.equal(first[k], second[k]) for k in first)


class _Interrupt(Exception):
    pass


def test_resume_gives_identical_weights(problem, tmp_path, monkeypatch):
    data, config = problem
    reference = _weights(_train(data, config, tmp_path / "full"))

    import cmcr.method.train as train_module

    real_step, calls = train_module._train_step, {"n": 0}

    def interrupted_step(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2 * 3 + 2:  # in the middle of the third epoch (3 steps per epoch)
            raise _Interrupt
        return real_step(*args, **kwargs)

    monkeypatch.setattr(train_module, "_train_step", interrupted_step)
    with pytest.raises(_Interrupt):
        _train(data, config, tmp_path / "resumed")
    monkeypatch.setattr(train_module, "_train_step", real_step)
    log = (tmp_path / "resumed" / METRICS_NAME).read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in log] == [1, 2]
    resumed = _weights(_train(data, config, tmp_path / "resumed", resume=True))
    assert all(torch.equal(reference[k], resumed[k]) for k in reference)
    log = (tmp_path / "resumed" / METRICS_NAME).read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in log] == [1, 2, 3, 4]


def test_resume_with_other_settings_is_refused(problem, tmp_path):
    from cmcr.errors import CheckpointError

    data, config = problem
    _train(data, config, tmp_path / "run")
    config.train.lr = 0.5
    with pytest.raises(CheckpointError, match="different settings"):
        _train(data, config, tmp_path / "run", resume=True)


def test_checkpoint_and_metrics_written_every_epoch(problem, tmp_path):
    data, config = problem
    _train(data, config, tmp_path)
    records = [json.loads(line) for line in (tmp_path / METRICS_NAME).read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2, 3, 4]
    assert {"total", "inter_query", "inter_pseudo", "intra", "lr"} <= set(records[0])
    state = torch.load(tmp_path / CHECKPOINT_NAME, weights_only=True)
    assert state["epoch"] == 4


def test_loss_decreases(problem, tmp_path):
    data, config = problem
    config.train.epochs = 15
    _train(data, config, tmp_path)
    records = [json.loads(line) for line in (tmp_path / METRICS_NAME).read_text().splitlines()]
    assert records[-1]["total"] < records[0]["total"]


def test_without_memory_only_the_text_term_is_trained(problem, tmp_path):
    data, config = problem
    config.method = MethodConfig(use_memory=False)
    data.pseudo = None
    _train(data, config, tmp_path)
    record = json.loads((tmp_path / METRICS_NAME).read_text().splitlines()[0])
    assert record["inter_pseudo"] == 0.0 and record["intra"] == 0.0 and record["inter_query"] > 0


def test_cosine_schedule_shape():
    factors = [cosine_lr_factor(s, 100, 10, 0.1) for s in range(101)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert factors[10] == pytest.approx(1.0) and factors[100] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(factors[10:], factors[11:]))


def test_steps_per_epoch_drop_last():
    assert steps_per_epoch(100, 32, drop_last=True) == 3
    assert steps_per_epoch(100, 32, drop_last=False) == 4
    assert steps_per_epoch(20, 32, drop_last=True) == 1  # smaller than a batch: one batch


def test_train_config_defaults_are_the_papers():
    train = TrainConfig()
    assert (train.epochs, train.batch_size, train.lr) == (36, 4096, 1e-3)


def test_an_epoch_of_one_step_is_warned_about(capsys):
    from cmcr.method.train import steps_per_epoch, warn_if_short_epochs

    warn_if_short_epochs(400, 4096, steps_per_epoch(400, 4096, True))
    assert "an epoch is 1 step; lower train.batch_size (e.g. 50)" in capsys.readouterr().err
    warn_if_short_epochs(400, 128, steps_per_epoch(400, 128, True))
    assert capsys.readouterr().err == ""
