"""Importing the authors' released C-MCR checkpoints: reference vectors, the CLI, head mapping."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cmcr.cli import main
from cmcr.errors import CheckpointError
from cmcr.method.model import ConnectedModel
from cmcr.method.official import import_official
from tiny_models import randomised

OFFICIAL_DIR = Path(__file__).resolve().parent / "data" / "official-cmcr"  # CC-BY 4.0, see README there
ULIP_CLIP = OFFICIAL_DIR / "ulip_clip.pt"
ULIP_CLIP_VECTORS = OFFICIAL_DIR / "ulip_clip_vectors.npz"

needs_official = pytest.mark.skipif(
    not (ULIP_CLIP.is_file() and ULIP_CLIP_VECTORS.is_file()),
    reason=f"official ULIP-CLIP checkpoint and reference vectors not found in {OFFICIAL_DIR}")


# -- an independent re-implementation of the official CLAP-CLIP heads --------------------------------
class OfficialClapClipHead(nn.Module):
    """net1 = Linear BN ReLU, net2 = Linear BN, then L2 norm (the authors' CLAP-CLIP head)."""

    def __init__(self, in_dim: int = 512, hidden: int = 1024, out_dim: int = 512):
        super().__init__()
        self.net1 = nn.Sequential(nn.Linear(in_dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU())
        self.net2 = nn.Sequential(nn.Linear(hidden, out_dim), nn.BatchNorm1d(out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.net2(self.net1(x)), dim=-1)


class OfficialClapClip(nn.Module):
    def __init__(self):
        super().__init__()
        self.Head_A = OfficialClapClipHead()  # CLAP side
        self.Head_B = OfficialClapClipHead()  # CLIP side


@pytest.fixture(scope="module")
def clap_clip_checkpoint(tmp_path_factory):
    """A synthetic official CLAP-CLIP file (torch.save of a plain state dict) and its modules."""
    official = randomised(OfficialClapClip(), seed=0)
    path = tmp_path_factory.mktemp("official") / "clap_clip.pt"
    torch.save(official.state_dict(), path)
    return path, official


def layer_kinds(projector) -> list[type]:
    """The projector's layer types, BatchNorm subclasses (cmcr's thread-stable one) as BatchNorm1d."""
    return [nn.BatchNorm1d if isinstance(m, nn.BatchNorm1d) else type(m) for m in projector.net]


def _unit_inputs(rows: int = 10, dim: int = 512, seed: int = 1) -> torch.Tensor:
    return F.normalize(torch.randn(rows, dim, generator=torch.Generator().manual_seed(seed)), dim=1)


# -- the released ULIP-CLIP checkpoint ---------------------------------------------------------------
@needs_official
def test_ulip_clip_import_reproduces_the_official_outputs():
    vectors = np.load(ULIP_CLIP_VECTORS)
    model = import_official(ULIP_CLIP, "ulip-clip")
    np.testing.assert_allclose(model.project("clip", vectors["clip_in"]).numpy(), vectors["clip_out"],
                               atol=1e-5, rtol=0)
    np.testing.assert_allclose(model.project("ulip", vectors["ulip_in"]).numpy(), vectors["ulip_out"],
                               atol=1e-5, rtol=0)


@needs_official
def test_ulip_clip_import_maps_head_a_to_clip_and_head_b_to_ulip():
    state = torch.load(ULIP_CLIP, map_location="cpu", weights_only=True)
    weights = import_official(ULIP_CLIP, "ulip-clip").state_dict()
    torch.testing.assert_close(weights["projectors.clip.net.0.weight"], state["Head_A.net.0.weight"])
    torch.testing.assert_close(weights["projectors.ulip.net.1.running_var"],
                               state["Head_B.net.1.running_var"])


@needs_official
def test_ulip_clip_import_records_its_source_and_modalities():
    model = import_official(ULIP_CLIP, "ulip-clip")
    assert model.config.source == "official:ulip-clip"
    assert model.space_for("point_cloud") == "ulip"
    assert model.space_for("text") == "clip"
    assert {name: spec.dim for name, spec in model.config.spaces.items()} == {"clip": 512, "ulip": 512}


@needs_official
def test_cli_import_official_writes_a_model_that_loads_and_projects_identically(tmp_path, capsys):
    out = tmp_path / "ulip-clip"
    assert main(["import-official", str(ULIP_CLIP), "--kind", "ulip-clip", "--out", str(out)]) == 0
    assert "ulip-clip" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    loaded = ConnectedModel.from_pretrained(out)
    vectors = np.load(ULIP_CLIP_VECTORS)
    direct = import_official(ULIP_CLIP, "ulip-clip")
    for space, key in (("clip", "clip_in"), ("ulip", "ulip_in")):
        torch.testing.assert_close(loaded.project(space, vectors[key]), direct.project(space, vectors[key]),
                                   rtol=0, atol=0)
    np.testing.assert_allclose(loaded.project("clip", vectors["clip_in"]).numpy(), vectors["clip_out"],
                               atol=1e-5, rtol=0)


@needs_official
def test_ulip_clip_file_imported_as_clap_clip_names_the_file_and_its_kind():
    with pytest.raises(CheckpointError) as err:
        import_official(ULIP_CLIP, "clap-clip")
    assert str(ULIP_CLIP) in str(err.value) and "ulip-clip" in str(err.value)


@needs_official
def test_cli_reports_a_wrong_kind_as_an_error(tmp_path, capsys):
    code = main(["import-official", str(ULIP_CLIP), "--kind", "clap-clip", "--out", str(tmp_path / "m")])
    assert code == 2
    assert "ulip-clip" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


# -- a synthetic CLAP-CLIP checkpoint ----------------------------------------------------------------
def test_synthetic_clap_clip_checkpoint_has_the_documented_keys(clap_clip_checkpoint):
    path, _ = clap_clip_checkpoint
    keys = set(torch.load(path, weights_only=True))
    for head in ("Head_A", "Head_B"):
        for block in ("net1.0", "net2.0"):
            assert {f"{head}.{block}.weight", f"{head}.{block}.bias"} <= keys
        for block in ("net1.1", "net2.1"):
            for name in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
                assert f"{head}.{block}.{name}" in keys


def test_clap_clip_import_matches_the_official_forward_pass(clap_clip_checkpoint):
    path, official = clap_clip_checkpoint
    model = import_official(path, "clap-clip")
    clap_in, clip_in = _unit_inputs(seed=1), _unit_inputs(seed=2)
    with torch.no_grad():
        expected_clap, expected_clip = official.Head_A(clap_in), official.Head_B(clip_in)
    torch.testing.assert_close(model.project("clap", clap_in), expected_clap, atol=1e-5, rtol=0)
    torch.testing.assert_close(model.project("clip", clip_in), expected_clip, atol=1e-5, rtol=0)


def test_clap_clip_import_uses_the_clap_clip_layout(clap_clip_checkpoint):
    model = import_official(clap_clip_checkpoint[0], "clap-clip")
    for name in ("clap", "clip"):
        assert layer_kinds(model.projectors[name]) == [
            nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear, nn.BatchNorm1d]
    assert model.space_for("audio") == "clap" and model.space_for("image") == "clip"
    assert model.config.source == "official:clap-clip"


def test_clap_clip_import_unwraps_state_dict_containers_and_module_prefixes(clap_clip_checkpoint,
                                                                               tmp_path):
    path, official = clap_clip_checkpoint
    wrapped = {"state_dict": {f"module.{k}": v for k, v in official.state_dict().items()}}
    torch.save(wrapped, tmp_path / "wrapped.pt")
    model = import_official(tmp_path / "wrapped.pt", "clap-clip")
    x = _unit_inputs()
    with torch.no_grad():
        torch.testing.assert_close(model.project("clap", x), official.Head_A(x), atol=1e-5, rtol=0)


def test_clap_clip_import_survives_save_and_load(clap_clip_checkpoint, tmp_path):
    model = import_official(clap_clip_checkpoint[0], "clap-clip")
    model.save_pretrained(tmp_path / "m")
    loaded = ConnectedModel.from_pretrained(tmp_path / "m")
    x = _unit_inputs()
    torch.testing.assert_close(loaded.project("clip", x), model.project("clip", x), rtol=0, atol=0)


def test_clap_clip_file_imported_as_ulip_clip_names_the_file_and_its_kind(clap_clip_checkpoint):
    path, _ = clap_clip_checkpoint
    with pytest.raises(CheckpointError) as err:
        import_official(path, "ulip-clip")
    assert str(path) in str(err.value) and "clap-clip" in str(err.value)


def test_unknown_kind_lists_the_valid_kinds(clap_clip_checkpoint):
    with pytest.raises(CheckpointError) as err:
        import_official(clap_clip_checkpoint[0], "imagebind")
    assert "clap-clip" in str(err.value) and "ulip-clip" in str(err.value)


def test_state_dict_of_another_model_names_the_file(tmp_path):
    torch.save(nn.Linear(3, 2).state_dict(), tmp_path / "linear.pt")
    with pytest.raises(CheckpointError, match=str(tmp_path / "linear.pt")):
        import_official(tmp_path / "linear.pt", "clap-clip")


# -- files that are not checkpoints ------------------------------------------------------------------
@pytest.mark.parametrize("name, content", [
    ("random.pt", np.random.default_rng(0).bytes(4096)),
    ("notes.pt", b"these are my notes, not a checkpoint\n"),
    ("empty.pt", b""),
], ids=["random-bytes", "text", "empty"])
def test_non_checkpoint_file_names_the_file(tmp_path, name, content):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(CheckpointError, match=str(tmp_path / name)):
        import_official(tmp_path / name, "clap-clip")


def test_missing_checkpoint_names_the_file(tmp_path):
    with pytest.raises(CheckpointError, match=str(tmp_path / "absent.pt")):
        import_official(tmp_path / "absent.pt", "ulip-clip")


def test_checkpoint_holding_non_tensors_names_the_file(tmp_path):
    torch.save({"Head_A.net.0.weight": [1.0, 2.0]}, tmp_path / "lists.pt")
    with pytest.raises(CheckpointError, match=str(tmp_path / "lists.pt")):
        import_official(tmp_path / "lists.pt", "ulip-clip")
