"""Thread counts chosen on purpose: usable cores, --threads, and results that do not depend on
the thread count beyond float tolerance."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from cmcr.cli import main, pop_threads_option
from cmcr.errors import CmcrError, ConfigError
from cmcr.runtime.threads import cgroup_cpu_limit, configure_threads, requested_threads, usable_cores


@pytest.fixture(autouse=True)
def _restore_threads(monkeypatch):
    before = torch.get_num_threads()
    for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        monkeypatch.setenv(variable, os.environ.get(variable, ""))
    yield
    torch.set_num_threads(before)


def test_usable_cores_respect_the_affinity():
    assert 1 <= usable_cores() <= len(os.sched_getaffinity(0))


def test_cgroup_quotas_are_read_in_both_versions(tmp_path):
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert cgroup_cpu_limit(tmp_path) == 1.5
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_limit(tmp_path) is None
    (tmp_path / "cpu.max").unlink()
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("50000\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_cpu_limit(tmp_path) == 0.5
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    assert cgroup_cpu_limit(tmp_path) is None


def test_the_users_omp_num_threads_is_the_default(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert requested_threads(None) == 3
    assert requested_threads(1) == 1
    with pytest.raises(ConfigError, match="at least 1"):
        requested_threads(0)


def test_configure_threads_sizes_torch_and_the_environment():
    assert configure_threads(1) == 1
    assert torch.get_num_threads() == 1 and os.environ["OMP_NUM_THREADS"] == "1"


def test_cores_busy_with_other_work_are_left_out(tmp_path, monkeypatch):
    """Two samples of /proc/stat: CPU 0 idle throughout, CPU 1 busy throughout."""
    import cmcr.runtime.threads as threads_module

    samples = iter(["cpu0 10 0 0 100 0 0 0\ncpu1 10 0 0 100 0 0 0\n",
                    "cpu0 10 0 0 200 0 0 0\ncpu1 110 0 0 100 0 0 0\n"])
    stat = tmp_path / "stat"
    monkeypatch.setattr(threads_module.time, "sleep",
                        lambda seconds: stat.write_text(next(samples)))
    stat.write_text(next(samples))
    monkeypatch.setattr(threads_module, "allowed_cpus", lambda: {0, 1})
    assert threads_module.busy_cores(stat=stat) == 1
    monkeypatch.setattr(threads_module, "busy_cores", lambda: 1)
    monkeypatch.setattr(threads_module, "usable_cores", lambda: 2)
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert requested_threads(None) == 1
    monkeypatch.setattr(threads_module, "busy_cores", lambda: 5)
    assert requested_threads(None) == 1  # never below one


def test_threads_option_is_taken_anywhere_on_the_command_line():
    assert pop_threads_option(["demo", "--threads", "2", "--seed", "1"]) == (2, ["demo", "--seed", "1"])
    assert pop_threads_option(["--threads=1", "example"]) == (1, ["example"])
    assert pop_threads_option(["example"]) == (None, ["example"])
    with pytest.raises(CmcrError, match="positive whole number"):
        pop_threads_option(["demo", "--threads", "zero"])


def test_cli_runs_with_the_threads_it_is_given(tmp_path, capsys):
    assert main(["store", "info", str(_tiny_store(tmp_path)), "--threads", "1"]) == 0
    assert torch.get_num_threads() == 1
    with pytest.raises(SystemExit):
        main(["--threads", "-2", "store", "info", str(tmp_path)])
    assert "positive whole number" in capsys.readouterr().err


def _tiny_store(tmp_path):
    from cmcr.data.store import write_store

    return write_store(tmp_path / "s", np.eye(4, dtype=np.float32)).path


def test_training_gives_the_same_model_whatever_the_thread_count(tmp_path):
    """One vs two intra-op threads: the same weights, bit for bit. (torch's fused BatchNorm split
    its sums by thread, and Adam stepped the Linear biases BatchNorm cancels on that rounding
    noise: weights differed by up to 2e-3 before the projector's own column-mean BatchNorm.)"""
    from cmcr.config import ConnectConfig
    from cmcr.pipeline import build_model
    from cmcr.method.retrieval import as_store
    from cmcr.method.train import TrainingData, train_projectors

    rng = np.random.default_rng(0)

    def unit(count: int, dim: int) -> np.ndarray:
        rows = rng.normal(size=(count, dim)).astype(np.float32)
        return rows / np.linalg.norm(rows, axis=1, keepdims=True)

    data = TrainingData(space_names=("clip", "clap"),
                        queries=(as_store(unit(512, 64)), as_store(unit(512, 48))),
                        pseudo=(as_store(unit(512, 64)), as_store(unit(512, 48))))
    config = ConnectConfig.from_dict({
        "spaces": {"clip": {"queries": "a", "memory": "b", "memory_modality": "image"},
                   "clap": {"queries": "c", "memory": "d", "memory_modality": "audio"}},
        "train": {"epochs": 3, "batch_size": 256, "seed": 1},
        "projector": {"hidden": 512, "out_dim": 32, "layers": 2}})
    models = {}
    for threads in (1, 2):
        torch.set_num_threads(threads)
        torch.manual_seed(config.train.seed)
        model = build_model(config, dict(zip(data.space_names, data.queries)))
        models[threads] = train_projectors(model, data, config.train, config.method,
                                           tmp_path / str(threads), progress=False)
    one, two = models[1].state_dict(), models[2].state_dict()
    assert [key for key in one if not torch.equal(one[key], two[key])] == []


def test_a_long_stage_says_what_it_runs_on(monkeypatch):
    import cmcr.runtime.threads as threads_module

    torch.set_num_threads(1)
    monkeypatch.setattr(threads_module, "usable_cores", lambda: 2)
    monkeypatch.setattr(threads_module, "busy_cores", lambda: 0)
    assert threads_module.cores_note() == "1 thread, 2 usable cores"
    monkeypatch.setattr(threads_module, "busy_cores", lambda: 1)
    assert threads_module.cores_note() == ("1 thread, 2 usable cores, 1 busy with other work right "
                                           "now: expect it to take longer")
