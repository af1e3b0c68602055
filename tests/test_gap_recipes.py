"""The gap-aware method options: modality centring (kept in the model), noise calibrated to
the measured text-pseudo residual, and unit pseudo rows before the noise."""

import json

import numpy as np
import pytest
import torch

from cmcr import ConnectedModel
from cmcr.cli import main
from cmcr.config import ConfigError, MethodConfig
from cmcr.spaces.geometry import unit_rows
from cmcr.method.objective import noise_variance
from cmcr.data.store import open_store
from cmcr.data.synthetic import SyntheticSizes, write_synthetic_example
from cmcr.method.train import cmcr_batch_loss

SMALL = SyntheticSizes(texts=1024, images=512, audio=512, test_pairs=64)


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    root = tmp_path_factory.mktemp("gap")
    return write_synthetic_example(root / "data", sizes=SMALL, epochs=2, batch_size=256)


def _connect(config, out, *settings):
    argv = ["connect", str(config), "--out", str(out), "--quiet"]
    for setting in settings:
        argv += ["--set", setting]
    assert main(argv) == 0
    return ConnectedModel.from_pretrained(out)


def test_a_centred_model_keeps_each_modality_mean_and_applies_it(example, tmp_path):
    model = _connect(example, tmp_path / "centred", "method.center_modalities=true")
    emb = example.parent / "emb"
    for space, store, modality in (("clip", "a_text", "text"), ("clip", "a_image", "image"),
                                   ("clap", "b_text", "text"), ("clap", "b_audio", "audio")):
        expected = unit_rows(open_store(emb / store).to_numpy()).mean(axis=0)
        assert np.allclose(model.centres.mean(space, modality).numpy(), expected, atol=1e-6)
    rows = open_store(emb / "test_image").to_numpy()[:8]
    centred = unit_rows(unit_rows(rows) - model.centres.mean("clip", "image").numpy())
    direct = model.projectors["clip"](torch.from_numpy(centred).float())
    assert torch.allclose(model.project("clip", rows, "image"), direct, atol=1e-5)
    with pytest.raises(ConfigError, match="say which of"):
        model.project("clip", rows)
    with pytest.raises(ConfigError, match="not 'audio'"):
        model.project("clip", rows, "audio")


def test_an_uncentred_model_ignores_the_modality(example, tmp_path):
    model = _connect(example, tmp_path / "plain")
    rows = open_store(example.parent / "emb" / "test_image").to_numpy()[:8]
    assert not model.centred
    assert torch.equal(model.project("clip", rows), model.project("clip", rows, "image"))


def test_calibrated_noise_scales_the_measured_residual(example, tmp_path):
    _connect(example, tmp_path / "calibrated", "method.noise_calibration=2.0")
    state = torch.load(tmp_path / "calibrated" / "training" / "checkpoint.pt", weights_only=True)
    residuals = json.loads(state["settings"])["residuals"]
    assert set(residuals) == {"clip", "clap"}
    assert all(0 < value < 0.01 for value in residuals.values())
    method = MethodConfig(noise_calibration=2.0)
    assert noise_variance(method, 64, residuals["clip"]) == pytest.approx(2 * residuals["clip"])
    assert noise_variance(MethodConfig(noise_calibration=2.0, use_noise=False), 64, 1.0) == 0.0


def test_calibrated_noise_needs_pseudo_pairs(example, tmp_path, capsys):
    assert main(["connect", str(example), "--out", str(tmp_path / "x"), "--quiet",
                 "--set", "method.noise_calibration=1.0", "--set", "method.use_memory=false"]) != 0
    assert "needs pseudo pairs" in capsys.readouterr().err


def _loss(method, batch):
    from cmcr.config import ModelConfig, ProjectorConfig, SpaceSpec

    spaces = {n: SpaceSpec(modalities=["text", m], dim=8) for n, m in (("a", "image"), ("b", "audio"))}
    projector = ProjectorConfig(hidden=16, out_dim=8, layers=2)
    torch.manual_seed(0)
    model = ConnectedModel(ModelConfig(spaces=spaces, projectors={"a": projector, "b": projector},
                                       method=method))
    terms = cmcr_batch_loss(("a", "b"), method)(model, batch, torch.Generator().manual_seed(0))
    return float(terms.total.detach())


def test_normalize_pseudo_makes_the_pseudo_rows_length_irrelevant():
    rng = np.random.default_rng(0)
    batch = [torch.from_numpy(unit_rows(rng.standard_normal((16, 8)))).float() for _ in range(4)]
    shorter = batch[:2] + [rows * 0.7 for rows in batch[2:]]
    normalised = MethodConfig(normalize_pseudo=True, noise_var=0.05)
    assert _loss(normalised, batch) == pytest.approx(_loss(normalised, shorter), rel=1e-5)
    paper = MethodConfig(noise_var=0.05)
    assert _loss(paper, batch) != pytest.approx(_loss(paper, shorter), abs=1e-4)


def test_extend_mode_refuses_the_gap_options(tmp_path):
    from cmcr.config import ConnectConfig

    with pytest.raises(ConfigError):
        ConnectConfig.from_dict({"mode": "extend", "shared_modality": "text",
                                 "spaces": {"a": {"queries": "q", "memory": "m", "memory_modality": "image"},
                                            "b": {"queries": "q", "memory": "m", "memory_modality": "audio"}},
                                 "method": {"center_modalities": True}})
