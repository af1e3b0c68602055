"""Projectors and ConnectedModel: layer layout, init, eval-mode projection, safe save/load."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch import nn

import cmcr
from cmcr.config import ModelConfig, ProjectorConfig, SpaceSpec, from_dict
from cmcr.errors import CheckpointError, ConfigError
from cmcr.method.model import CONFIG_NAME, WEIGHTS_NAME, ConnectedModel, Projector

DIMS = {"clip": 6, "clap": 5}


def layer_kinds(projector) -> list[type]:
    """The projector's layer types, BatchNorm subclasses (cmcr's thread-stable one) as BatchNorm1d."""
    return [nn.BatchNorm1d if isinstance(m, nn.BatchNorm1d) else type(m) for m in projector.net]


def _small_model(seed: int = 0, warm_batch_norm: bool = True) -> ConnectedModel:
    """Two tiny projectors; BatchNorm running stats moved away from (0, 1) by a few train steps."""
    torch.manual_seed(seed)
    projector = ProjectorConfig(hidden=8, out_dim=4, layers=2)
    config = ModelConfig(
        spaces={"clip": SpaceSpec(modalities=["image", "text"], dim=DIMS["clip"]),
                "clap": SpaceSpec(modalities=["audio", "text"], dim=DIMS["clap"])},
        projectors={"clip": projector, "clap": ProjectorConfig(hidden=8, out_dim=4, layers=2)},
        shared_modality="text", shared_modality_space="clip")
    model = ConnectedModel(config)
    if warm_batch_norm:
        model.train()
        with torch.no_grad():
            for _ in range(5):
                for name, dim in DIMS.items():
                    model.projectors[name](torch.randn(32, dim) * 2 + 1)
        model.eval()
    return model


def _inputs(name: str, rows: int = 7, seed: int = 1) -> torch.Tensor:
    return torch.randn(rows, DIMS[name], generator=torch.Generator().manual_seed(seed))


# -- Projector -------------------------------------------------------------------------------------
def test_clap_clip_preset_builds_linear_bn_relu_linear_bn():
    projector = Projector(512, from_dict(ProjectorConfig, {"preset": "clap-clip"}))
    kinds = (nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear, nn.BatchNorm1d)
    assert len(projector.net) == 5
    assert all(isinstance(m, kind) for m, kind in zip(projector.net, kinds))
    assert projector.net[0].bias is not None  # the authors' heads have a bias before each BN
    assert (projector.net[0].in_features, projector.net[0].out_features) == (512, 1024)
    assert (projector.net[3].in_features, projector.net[3].out_features) == (1024, 512)


def test_ulip_clip_preset_builds_linear_bn_relu():
    projector = Projector(512, from_dict(ProjectorConfig, {"preset": "ulip-clip"}))
    kinds = (nn.Linear, nn.BatchNorm1d, nn.ReLU)
    assert len(projector.net) == 3 and all(isinstance(m, k) for m, k in zip(projector.net, kinds))
    assert (projector.net[0].in_features, projector.net[0].out_features) == (512, 512)


@pytest.mark.parametrize("layers, batch_norm, final_norm, final_activation, dropout, expected", [
    (1, False, False, False, 0.0, [nn.Linear]),
    (3, True, False, False, 0.0, [nn.Linear, nn.BatchNorm1d, nn.ReLU] * 2 + [nn.Linear]),
    (2, False, True, True, 0.5, [nn.Linear, nn.ReLU, nn.Dropout, nn.Linear, nn.ReLU]),
])
def test_projector_layout_follows_its_config(layers, batch_norm, final_norm, final_activation,
                                             dropout, expected):
    config = ProjectorConfig(hidden=16, out_dim=8, layers=layers, batch_norm=batch_norm,
                             final_norm=final_norm, final_activation=final_activation, dropout=dropout)
    assert layer_kinds(Projector(10, config)) == expected


@pytest.mark.parametrize("preset, in_dim", [("clap-clip", 512), ("ulip-clip", 512), ("clap-clip", 64)])
def test_projector_maps_rows_to_unit_rows_of_out_dim(preset, in_dim):
    projector = Projector(in_dim, from_dict(ProjectorConfig, {"preset": preset})).eval()
    out = projector(torch.randn(9, in_dim))
    assert out.shape == (9, 512)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(9))


def test_projector_weights_are_xavier_uniform_and_biases_torchs_default():
    """As the authors' init_weights('xav'): Xavier on parameters with dim > 1 only."""
    torch.manual_seed(0)
    projector = Projector(512, from_dict(ProjectorConfig, {"preset": "clap-clip"}))
    for linear in (m for m in projector.net if isinstance(m, nn.Linear)):
        bound = math.sqrt(6.0 / (linear.in_features + linear.out_features))
        weight = linear.weight.detach()
        assert weight.abs().max() <= bound
        assert weight.abs().max() > 0.99 * bound  # fills the interval (torch's default is narrower)
        assert weight.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.02)
        bias_bound = 1 / math.sqrt(linear.in_features)  # nn.Linear's own bias init
        assert linear.bias.abs().max() <= bias_bound
        assert linear.bias.abs().max() > 0.9 * bias_bound


# -- ConnectedModel.project ------------------------------------------------------------------------
def test_new_model_is_in_eval_mode():
    assert not _small_model(warm_batch_norm=False).training


@pytest.mark.parametrize("name", sorted(DIMS))
def test_project_gives_unit_rows_of_out_dim(name):
    out = _small_model().project(name, _inputs(name))
    assert out.shape == (7, 4)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(7))


def test_one_row_alone_equals_the_same_row_in_a_batch_even_after_train():
    model = _small_model()
    model.train()
    batch = _inputs("clip")
    together = model.project("clip", batch)
    for i in range(len(batch)):
        torch.testing.assert_close(model.project("clip", batch[i:i + 1]), together[i:i + 1])


def test_project_restores_the_training_mode():
    model = _small_model()
    model.train()
    model.project("clap", _inputs("clap"))
    assert model.projectors["clap"].training


def test_project_uses_batch_norm_running_statistics():
    model = _small_model()
    projector = model.projectors["clip"]
    rows = torch.nn.functional.normalize(_inputs("clip"), dim=1)
    with torch.no_grad():
        expected = projector.eval()(rows)
    torch.testing.assert_close(model.project("clip", rows), expected)


def test_project_normalises_inputs_first():
    model = _small_model()
    rows = _inputs("clap")
    torch.testing.assert_close(model.project("clap", rows * 9.0), model.project("clap", rows))


def test_project_accepts_numpy_and_single_vectors():
    model = _small_model()
    rows = _inputs("clip")
    expected = model.project("clip", rows)
    torch.testing.assert_close(model.project("clip", rows.numpy().astype(np.float64)), expected)
    single = model.project("clip", rows[3].numpy())
    assert single.shape == (1, 4)
    torch.testing.assert_close(single, expected[3:4])


def test_project_unknown_space_error_lists_the_spaces():
    with pytest.raises(ConfigError) as err:
        _small_model().project("ulip", _inputs("clip"))
    assert "ulip" in str(err.value) and "clip" in str(err.value) and "clap" in str(err.value)


@pytest.mark.parametrize("shape", [(3, 5), (6,) * 3, (7,)])
def test_project_wrong_shape_error_names_the_expected_dim(shape):
    with pytest.raises(ConfigError, match=r"\(n, 6\)"):
        _small_model().project("clip", torch.randn(*shape))


# -- space_for -------------------------------------------------------------------------------------
@pytest.mark.parametrize("modality, space", [("image", "clip"), ("audio", "clap"), ("text", "clip")])
def test_space_for_finds_the_space_of_a_modality(modality, space):
    assert _small_model().space_for(modality) == space


def test_space_for_unknown_modality_lists_the_known_ones():
    with pytest.raises(ConfigError) as err:
        _small_model().space_for("point_cloud")
    for modality in ("audio", "image", "text"):
        assert modality in str(err.value)


# -- save_pretrained / from_pretrained -------------------------------------------------------------
def test_round_trip_gives_identical_projections(tmp_path):
    model = _small_model()
    model.save_pretrained(tmp_path / "model")
    loaded = ConnectedModel.from_pretrained(tmp_path / "model")
    assert not loaded.training
    for name in DIMS:
        torch.testing.assert_close(loaded.project(name, _inputs(name)), model.project(name, _inputs(name)),
                                   rtol=0, atol=0)


def test_save_writes_config_json_and_safetensors_only(tmp_path):
    _small_model().save_pretrained(tmp_path / "model")
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == [CONFIG_NAME, WEIGHTS_NAME]
    assert (CONFIG_NAME, WEIGHTS_NAME) == ("config.json", "model.safetensors")
    state = load_file(str(tmp_path / "model" / WEIGHTS_NAME))  # safetensors: nothing to unpickle
    assert "projectors.clip.net.1.running_mean" in state


def test_saved_config_records_spaces_modalities_dims_projectors_and_version(tmp_path):
    _small_model().save_pretrained(tmp_path / "model")
    config = json.loads((tmp_path / "model" / CONFIG_NAME).read_text())
    unknown = {"frozen": None, "weights_sha256": None}  # not trained here: which space is unknown
    assert config["spaces"] == {"clip": {"modalities": ["image", "text"], "dim": 6, **unknown},
                                "clap": {"modalities": ["audio", "text"], "dim": 5, **unknown}}
    assert config["projectors"]["clap"]["hidden"] == 8
    assert config["projectors"]["clip"]["out_dim"] == 4
    assert config["shared_modality"] == "text" and config["shared_modality_space"] == "clip"
    assert config["cmcr_version"] == cmcr.__version__


def test_from_pretrained_missing_directory_names_it(tmp_path):
    with pytest.raises(CheckpointError, match=str(tmp_path / "absent")):
        ConnectedModel.from_pretrained(tmp_path / "absent")


def test_from_pretrained_directory_without_config_names_the_file(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match=str(tmp_path / "empty" / CONFIG_NAME)):
        ConnectedModel.from_pretrained(tmp_path / "empty")


@pytest.mark.parametrize("text", ["{broken", json.dumps({"spaces": {}, "projectors": {}, "extra": 1}),
                                  json.dumps([1, 2])], ids=["not-json", "unknown-key", "not-a-mapping"])
def test_from_pretrained_corrupt_config_names_the_file(tmp_path, text):
    _small_model().save_pretrained(tmp_path / "model")
    (tmp_path / "model" / CONFIG_NAME).write_text(text)
    with pytest.raises(CheckpointError, match=str(tmp_path / "model" / CONFIG_NAME)):
        ConnectedModel.from_pretrained(tmp_path / "model")


@pytest.mark.parametrize("content", [b"", b"not safetensors at all" * 20], ids=["empty", "garbage"])
def test_from_pretrained_corrupt_weights_names_the_file(tmp_path, content):
    _small_model().save_pretrained(tmp_path / "model")
    (tmp_path / "model" / WEIGHTS_NAME).write_bytes(content)
    with pytest.raises(CheckpointError, match=str(tmp_path / "model" / WEIGHTS_NAME)):
        ConnectedModel.from_pretrained(tmp_path / "model")


def test_from_pretrained_missing_weights_names_the_file(tmp_path):
    _small_model().save_pretrained(tmp_path / "model")
    (tmp_path / "model" / WEIGHTS_NAME).unlink()
    with pytest.raises(CheckpointError, match=str(tmp_path / "model" / WEIGHTS_NAME)):
        ConnectedModel.from_pretrained(tmp_path / "model")


def test_weights_of_the_wrong_shape_name_the_file_and_key(tmp_path):
    _small_model().save_pretrained(tmp_path / "model")
    path = tmp_path / "model" / CONFIG_NAME
    config = json.loads(path.read_text())
    config["spaces"]["clip"]["dim"] = 9
    path.write_text(json.dumps(config))
    with pytest.raises(CheckpointError) as err:
        ConnectedModel.from_pretrained(tmp_path / "model")
    assert str(tmp_path / "model" / WEIGHTS_NAME) in str(err.value)
    assert "projectors.clip.net.0.weight" in str(err.value)


def test_weights_with_other_layers_name_the_file(tmp_path):
    _small_model().save_pretrained(tmp_path / "model")
    path = tmp_path / "model" / CONFIG_NAME
    config = json.loads(path.read_text())
    config["projectors"]["clap"]["layers"] = 1
    config["projectors"]["clap"]["out_dim"] = 4
    path.write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=str(tmp_path / "model" / WEIGHTS_NAME)):
        ConnectedModel.from_pretrained(tmp_path / "model")


def test_thread_stable_batch_norm_matches_torchs_and_does_not_depend_on_threads():
    from cmcr.extend.heads import ThreadStableBatchNorm1d

    rows = torch.randn(256, 512, generator=torch.Generator().manual_seed(0)) * 3 + 1
    stable, reference = ThreadStableBatchNorm1d(512), nn.BatchNorm1d(512)
    with torch.no_grad():
        for norm in (stable, reference):
            norm.weight.uniform_(0.5, 1.5, generator=torch.Generator().manual_seed(1))
            norm.bias.uniform_(-1, 1, generator=torch.Generator().manual_seed(2))
    outputs = {}
    before = torch.get_num_threads()
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            copy = ThreadStableBatchNorm1d(512)
            copy.load_state_dict(stable.state_dict())
            given = rows.clone().requires_grad_()
            out = copy(given)
            (out * torch.linspace(-1, 1, 512)).sum().backward()
            outputs[threads] = (out.detach(), given.grad, copy.weight.grad, copy.running_var)
    finally:
        torch.set_num_threads(before)
    assert all(torch.equal(a, b) for a, b in zip(outputs[1], outputs[2]))
    expected = reference(rows)
    assert torch.allclose(stable(rows), expected, atol=1e-5)
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        assert torch.allclose(getattr(stable, name).float(), getattr(reference, name).float(),
                              atol=1e-6), name
    stable.eval(), reference.eval()
    assert torch.allclose(stable(rows), reference(rows), atol=1e-5)
    assert set(stable.state_dict()) == set(reference.state_dict())


def test_new_projectors_have_no_bias_before_batch_norm_and_old_models_still_load(tmp_path):
    config = ProjectorConfig(hidden=16, out_dim=8)
    projector = Projector(10, config)
    assert projector.net[0].bias is None and projector.net[3].bias is None
    legacy = Projector(10, ProjectorConfig(hidden=16, out_dim=8, bias_before_norm=True))
    assert legacy.net[0].bias is not None
    # a model saved before the key existed (config.json without it) has those biases and loads
    old = ProjectorConfig(hidden=8, out_dim=4, bias_before_norm=True)
    model = ConnectedModel(ModelConfig(
        spaces={"clip": SpaceSpec(modalities=["image", "text"], dim=DIMS["clip"]),
                "clap": SpaceSpec(modalities=["audio", "text"], dim=DIMS["clap"])},
        projectors={"clip": old, "clap": old}))
    model.save_pretrained(tmp_path / "old")
    saved = json.loads((tmp_path / "old" / CONFIG_NAME).read_text())
    for projector in saved["projectors"].values():
        del projector["bias_before_norm"]
    (tmp_path / "old" / CONFIG_NAME).write_text(json.dumps(saved))
    loaded = ConnectedModel.from_pretrained(tmp_path / "old")
    rows = _inputs("clip")
    assert torch.equal(loaded.project("clip", rows), model.eval().project("clip", rows))
