"""Models that would silently give NaN or mix spaces (issue 20, items 8 and 9): imported heads
with impossible BatchNorm statistics or overflowing weights are refused, naming the tensor; models
record the frozen base they were trained on, and unify refuses different bases and two leaves
that embed one modality, naming both."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from cmcr.cli import main
from cmcr.config import ConnectConfig, SpaceSpec
from cmcr.pipeline import connect
from cmcr.errors import CheckpointError, ConfigError
from cmcr.method.model import ConnectedModel
from cmcr.method.official import _cmcr_to_official_key, _model_config, OFFICIAL_KINDS, import_official
from cmcr.extend.official import _extended_model, import_exmcr_head, official_key
from cmcr.data.store import write_store
from cmcr.extend.unified import unify
from cmcr.world.toy_spaces import packaged_space_dir

TOY_CLIP = packaged_space_dir("clip")
OPENAI_CLIP = "clip:openai/clip-vit-base-patch32"


def random_state(template: dict[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
    """Random weights and plausible BatchNorm statistics (variances in [0.5, 1.5))."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, tensor in template.items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(11)
        elif key.endswith("running_var"):
            state[key] = torch.rand(tensor.shape, generator=generator) + 0.5
        else:
            state[key] = torch.randn(tensor.shape, generator=generator) * 0.05
    return state


def official_exclap_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """An ex_clap.pt state dict (Head1.*, Head2.mlp*.net*.*) with random values."""
    own = {key: value for key, value in _extended_model("ex-clap").state_dict().items()
           if key.startswith("projectors.clap.")}
    return random_state({official_key(key): value for key, value in own.items()}, seed)


def cli_error(argv: list[str], capsys) -> str:
    code = main(argv)
    captured = capsys.readouterr()
    assert code == 2, captured.err
    assert captured.err.startswith("cmcr: error: ") and "internal error" not in captured.err
    return captured.err


# -- item 8: imported heads that can only give NaN ------------------------------------------------
@pytest.mark.parametrize("key, change, words", [
    ("Head2.mlp1.net1.1.running_var", lambda t: t.__setitem__(5, -1.0),
     r"'Head2.mlp1.net1.1.running_var' holds 1 negative value\(s\) \(of 1024\)"),
    ("Head2.mlp2.net2.1.running_var", lambda t: t.fill_(-1.0),
     r"'Head2.mlp2.net2.1.running_var' holds 512 negative value\(s\)"),
    ("Head1.weight", lambda t: t.fill_(3e38),
     r"'clap' head come out NaN/inf \(first at the layer of Head1.weight, Head1.bias\)"),
    ("Head2.mlp1.net2.0.weight", lambda t: t.fill_(3e38),
     r"first at the layer of Head2.mlp1.net2.0.weight, Head2.mlp1.net2.0.bias"),
])
def test_an_ex_clap_head_that_projects_to_nan_is_refused_naming_the_tensor(tmp_path, capsys,
                                                                          key, change, words):
    state = official_exclap_state()
    change(state[key])
    path = tmp_path / "ex_clap.pt"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=words):
        import_exmcr_head(path, "ex-clap")
    out = tmp_path / "imported"
    error = cli_error(["import-official", str(path), "--kind", "ex-clap", "--out", str(out)],
                      capsys)
    assert str(path) in error and key.split(".running")[0] in error and not out.exists()


def test_a_sound_ex_clap_head_imports_and_projects_finite_rows(tmp_path):
    path = tmp_path / "ex_clap.pt"
    torch.save(official_exclap_state(), path)
    model = import_exmcr_head(path, "ex-clap")
    rows = torch.nn.functional.normalize(torch.randn(32, 512), dim=-1)
    assert torch.isfinite(model.project("clap", rows)).all()


def test_a_clap_clip_checkpoint_with_a_negative_variance_is_refused(tmp_path):
    spec = OFFICIAL_KINDS["clap-clip"]
    template = ConnectedModel(_model_config("clap-clip")).state_dict()
    state = random_state({_cmcr_to_official_key(key, spec): value
                          for key, value in template.items()}, 1)
    state["Head_B.net1.1.running_var"][0] = -1.0
    torch.save(state, tmp_path / "clap_clip.pt")
    with pytest.raises(CheckpointError, match=r"'Head_B.net1.1.running_var' holds 1 negative"):
        import_official(tmp_path / "clap_clip.pt", "clap-clip")


# -- item 9: unify checks the bases and the leaves ------------------------------------------------
def unit_rows(count: int, dim: int, seed: int) -> np.ndarray:
    rows = np.random.default_rng(seed).standard_normal((count, dim)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def extension(root: Path, leaf: str, modality: str, base_space: str) -> Path:
    """An extension of ``leaf`` (texts + ``modality``) into a 512-d base 'clip' whose stores
    say they were made by ``base_space``, trained for one epoch through 'cmcr connect'."""
    stores = root / f"{leaf}-stores"
    made = {"base_q": (base_space, "text"), "base_m": (base_space, "image"),
            "leaf_q": (f"other:{leaf}", "text"), "leaf_m": (f"other:{leaf}", modality)}
    for seed, (name, (space, kind)) in enumerate(made.items()):
        write_store(stores / name, unit_rows(64, 512, seed), space=space, modality=kind)
    config = ConnectConfig.from_dict({
        "mode": "extend", "shared_modality": "text",
        "spaces": {"clip": {"queries": str(stores / "base_q"), "memory": str(stores / "base_m"),
                            "memory_modality": "image"},
                   leaf: {"queries": str(stores / "leaf_q"), "memory": str(stores / "leaf_m"),
                          "memory_modality": modality}},
        "train": {"epochs": 1, "batch_size": 32, "seed": 0},
        "projector": {"kind": "exmcr", "hidden": 16, "out_dim": 512, "layers": 1}})
    connect(config, root / leaf, device="cpu", progress=False)
    return root / leaf


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("unify")
    official = root / "ex_clap.pt"
    torch.save(official_exclap_state(), official)
    assert main(["import-official", str(official), "--kind", "ex-clap", "--out",
                 str(root / "official")]) == 0
    return {"official": root / "official",
            "toy-depth": extension(root, "depth", "depth", f"clip:{TOY_CLIP}"),
            "toy-thermal": extension(root, "thermal", "thermal", "clip:toy"),
            "openai-sound": extension(root, "sound", "audio", OPENAI_CLIP)}


def test_models_record_the_frozen_base_they_were_trained_on(models):
    toy = ConnectedModel.from_pretrained(models["toy-depth"]).config.spaces["clip"]
    digest = hashlib.sha256((TOY_CLIP / "model.safetensors").read_bytes()).hexdigest()
    assert toy.frozen == f"clip:{TOY_CLIP.resolve()}" and toy.weights_sha256 == digest
    assert ConnectedModel.from_pretrained(models["toy-thermal"]).config.spaces["clip"] == toy
    official = ConnectedModel.from_pretrained(models["official"]).config.spaces["clip"]
    assert official.frozen == OPENAI_CLIP


def test_unify_refuses_a_toy_clip_extension_with_an_official_openai_clip_head(models, tmp_path,
                                                                              capsys):
    error = cli_error(["unify", str(models["toy-depth"]), str(models["official"]), "--out",
                       str(tmp_path / "u")], capsys)
    assert "model 1 (cmcr:extend, leaf depth) was trained on base 'clip' = clip:" in error
    assert f"{TOY_CLIP.resolve()} (weights sha256 " in error
    assert f"model 2 (official:ex-clap, leaf clap) on {OPENAI_CLIP}" in error
    assert not (tmp_path / "u").exists()


def test_unify_refuses_two_leaves_that_both_embed_audio(models, tmp_path, capsys):
    with pytest.raises(ConfigError, match="leaf 'sound' of model 1 and leaf 'clap' of model 2 "
                                          "both embed 'audio'"):
        unify([ConnectedModel.from_pretrained(models[name])
               for name in ("openai-sound", "official")])
    error = cli_error(["unify", str(models["official"]), str(models["openai-sound"]), "--out",
                       str(tmp_path / "u")], capsys)
    assert "leaf 'clap' of model 1 and leaf 'sound' of model 2 both embed 'audio'" in error


def test_extensions_of_one_base_unify_and_the_unified_model_records_it(models, tmp_path):
    assert main(["unify", str(models["toy-depth"]), str(models["toy-thermal"]), "--out",
                 str(tmp_path / "u")]) == 0
    unified = ConnectedModel.from_pretrained(tmp_path / "u")
    digest = hashlib.sha256((TOY_CLIP / "model.safetensors").read_bytes()).hexdigest()
    assert unified.config.spaces["clip"] == SpaceSpec(
        modalities=["text", "image"], dim=512, frozen=f"clip:{TOY_CLIP.resolve()}",
        weights_sha256=digest)
    assert unified.space_for("depth") == "depth" and unified.space_for("thermal") == "thermal"


def test_a_model_saved_without_base_records_loads_and_unifies_with_a_warning(models, tmp_path,
                                                                             capsys):
    old = tmp_path / "old"
    old.mkdir()
    (old / "model.safetensors").write_bytes((models["toy-thermal"] / "model.safetensors").read_bytes())
    config = json.loads((models["toy-thermal"] / "config.json").read_text())
    for spec in config["spaces"].values():
        del spec["frozen"], spec["weights_sha256"]
    (old / "config.json").write_text(json.dumps(config))
    loaded = ConnectedModel.from_pretrained(old)
    assert loaded.config.spaces["clip"].frozen is None
    assert main(["unify", str(models["official"]), str(old), "--out", str(tmp_path / "u")]) == 0
    assert ("model 2 (cmcr:extend, leaf thermal) does not record which frozen 'clip' space"
            in capsys.readouterr().err)
