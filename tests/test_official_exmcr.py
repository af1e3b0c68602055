"""Ex-MCR's heads: cmcr's ExMcrHead, and the import of the authors' ex_clap.pt / ex_ulip.pt.

The released files are not reachable here, so checkpoints are built with the official class
layout (re-typed below from MCR-PEFT/Ex-MCR exmcr/exmcr_projector.py and exmcr_model.py) and
random weights and BatchNorm statistics, saved with torch.save, imported through the CLI, and
compared with the official forward.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cmcr.cli import main
from cmcr.config import ProjectorConfig, from_dict
from cmcr.errors import CheckpointError
from cmcr.extend.heads import ExMcrHead, inner_and_output
from cmcr.method.model import ConnectedModel
from cmcr.extend.official import import_exmcr, import_exmcr_head
from tiny_models import randomised


# -- a re-typed copy of the official classes and forward -----------------------------------------
class OfficialMLP(nn.Module):
    def __init__(self, channel: int = 512, res_expansion: float = 2.0):
        super().__init__()
        hidden = int(channel * res_expansion)
        self.net1 = nn.Sequential(nn.Linear(channel, hidden), nn.BatchNorm1d(hidden),
                                  nn.ReLU(inplace=True))
        self.net2 = nn.Sequential(nn.Linear(hidden, channel), nn.BatchNorm1d(channel))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net2(self.net1(x))


class OfficialProjector(nn.Module):
    def __init__(self):
        super().__init__()
        self.mlp1 = OfficialMLP()
        self.mlp2 = OfficialMLP()

    def forward(self, embs: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.mlp2(self.mlp1(embs)), dim=-1)


class OfficialExMcrHead(nn.Module):
    def __init__(self):
        super().__init__()
        self.Head1 = nn.Linear(512, 512, bias=True)
        self.Head2 = OfficialProjector()


def official_embedding(head: OfficialExMcrHead, features: torch.Tensor) -> torch.Tensor:
    """exmcr_model.py: trunk features are L2-normalised, then Head1, Head2, normalise again."""
    with torch.no_grad():
        return F.normalize(head.Head2(head.Head1(F.normalize(features, dim=-1))), dim=-1)


def _randomised(seed: int) -> OfficialExMcrHead:
    """An official head whose every parameter and BatchNorm statistic is random."""
    return randomised(OfficialExMcrHead(), seed, scale=0.05, batches_tracked=11)


@pytest.fixture(scope="module")
def official_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ex-mcr")
    heads = {"ex-clap": _randomised(1), "ex-ulip": _randomised(2)}
    paths = {}
    for kind, head in heads.items():
        paths[kind] = folder / f"{kind.replace('-', '_')}.pt"
        torch.save(head.state_dict(), paths[kind])
    return heads, paths


# -- the head ---------------------------------------------------------------------------------------
def test_ex_mcr_preset_is_identity_linear_then_two_residual_free_blocks():
    head = ExMcrHead(512, from_dict(ProjectorConfig, {"preset": "ex-mcr"}))
    torch.testing.assert_close(head.linear.weight, torch.eye(512))
    assert len(head.blocks) == 2
    for block in head.blocks:
        kinds = [nn.BatchNorm1d if isinstance(m, nn.BatchNorm1d) else type(m)
                 for m in (*block.net1, *block.net2)]
        assert kinds == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear, nn.BatchNorm1d]
        assert block.net1[0].weight.shape == (1024, 512) and block.net2[0].weight.shape == (512, 1024)
    own = {k for k in head.state_dict()}
    official = {k.replace("Head1.", "linear.").replace("Head2.mlp1.", "blocks.0.")
                .replace("Head2.mlp2.", "blocks.1.") for k in OfficialExMcrHead().state_dict()}
    assert own == official


def test_head_blocks_are_xavier_uniform_with_default_biases():
    torch.manual_seed(0)
    head = ExMcrHead(64, ProjectorConfig(kind="exmcr", hidden=128, out_dim=32, layers=2))
    first = head.blocks[0].net1[0]
    bound = (6 / (64 + 128)) ** 0.5
    assert first.weight.abs().max() <= bound and first.weight.abs().max() > 0.9 * bound
    assert first.bias.abs().max() <= 1 / 64 ** 0.5  # torch's default bias init


def test_inner_and_output_equal_the_forward():
    head = ExMcrHead(16, ProjectorConfig(kind="exmcr", hidden=32, out_dim=8, layers=2)).eval()
    rows = torch.randn(5, 16)
    inner, output = inner_and_output(head, rows)
    torch.testing.assert_close(inner, head.linear(rows))
    torch.testing.assert_close(output, head(rows))
    torch.testing.assert_close(output.norm(dim=-1), torch.ones(5))


# -- importing the official files -------------------------------------------------------------------
def test_cli_imports_both_heads_into_one_unified_model_matching_the_official_forward(
        official_files, tmp_path):
    heads, paths = official_files
    out = tmp_path / "ex-mcr"
    assert main(["import-official", str(paths["ex-clap"]), str(paths["ex-ulip"]), "--kind",
                 "ex-clap", "--kind", "ex-ulip", "--out", str(out)]) == 0
    model = ConnectedModel.from_pretrained(out)
    assert model.base_space == "clip" and model.space_names == ["clip", "clap", "ulip"]
    features = torch.randn(16, 512) * 3  # not unit rows: both sides normalise first
    for kind, leaf in (("ex-clap", "clap"), ("ex-ulip", "ulip")):
        expected = official_embedding(heads[kind], features)
        assert (model.project(leaf, features) - expected).abs().max() < 1e-6
    torch.testing.assert_close(model.project("clip", features), F.normalize(features, dim=-1),
                               atol=1e-7, rtol=0)
    assert [model.space_for(m) for m in ("image", "text", "audio", "point_cloud")] == \
        ["clip", "clip", "clap", "ulip"]


def test_one_row_alone_equals_the_row_in_a_batch(official_files):
    _, paths = official_files
    model = import_exmcr({"ex-clap": paths["ex-clap"]})
    rows = torch.randn(6, 512)
    torch.testing.assert_close(model.project("clap", rows[2:3])[0], model.project("clap", rows)[2])


def test_a_c_mcr_checkpoint_given_as_an_ex_mcr_head_names_the_file_and_its_kind(tmp_path):
    state = {f"Head_{side}.net.{i}.weight": torch.zeros(4) for side in "AB" for i in range(3)}
    path = tmp_path / "ulip_clip.pt"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"ulip_clip\.pt: not an official Ex-MCR head: it "
                                              r"looks like a C-MCR 'ulip-clip' checkpoint"):
        import_exmcr_head(path, "ex-clap")


def test_a_missing_official_key_is_named(official_files, tmp_path):
    heads, _ = official_files
    state = heads["ex-clap"].state_dict()
    del state["Head2.mlp2.net1.1.running_var"]
    path = tmp_path / "short.pt"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"short\.pt: missing 1 key\(s\): "
                                              r"Head2\.mlp2\.net1\.1\.running_var"):
        import_exmcr_head(path, "ex-clap")


def test_a_wrong_shape_names_the_official_key(official_files, tmp_path):
    heads, _ = official_files
    state = heads["ex-ulip"].state_dict()
    state["Head1.weight"] = torch.zeros(512, 256)
    path = tmp_path / "narrow.pt"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"'Head1\.weight' has shape \(512, 256\)"):
        import_exmcr_head(path, "ex-ulip")


def test_cli_needs_one_kind_per_file_and_no_c_mcr_mix(official_files, tmp_path, capsys):
    _, paths = official_files
    assert main(["import-official", str(paths["ex-clap"]), str(paths["ex-ulip"]), "--kind",
                 "ex-clap", "--out", str(tmp_path / "m")]) == 2
    assert "give one --kind per checkpoint: 2 file(s), 1 --kind" in capsys.readouterr().err
    assert main(["import-official", str(paths["ex-clap"]), str(paths["ex-ulip"]), "--kind",
                 "clap-clip", "--kind", "ex-ulip", "--out", str(tmp_path / "m")]) == 2
    assert "imported one at a time" in capsys.readouterr().err
