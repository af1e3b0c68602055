"""Damaged checkpoints give a CheckpointError naming the file and the fault; saves are
byte-reproducible. Every bad file is made from a real one (the official ULIP-CLIP checkpoint, a
model saved from it, the shipped toy CLIP space)."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from cmcr.cli import main
from cmcr.errors import CheckpointError
from cmcr.method.model import ConnectedModel
from cmcr.method.official import import_official
from cmcr.data.weights import save_safetensors
from cmcr.spaces import load_space
from cmcr.world.toy_spaces import packaged_space_dir

ULIP_CLIP = Path(__file__).resolve().parent / "data" / "official-cmcr" / "ulip_clip.pt"
needs_official = pytest.mark.skipif(not ULIP_CLIP.is_file(),
                                    reason=f"official checkpoint not found: {ULIP_CLIP}")
TOY_CLIP = packaged_space_dir("clip")
needs_toy_clip = pytest.mark.skipif(not (TOY_CLIP / "model.safetensors").is_file(),
                                    reason=f"toy CLIP weights not found in {TOY_CLIP}")


def cli_error(argv: list[str], capsys) -> str:
    """Run the CLI; assert it failed as a user error (exit 2, one line, no traceback)."""
    code = main(argv)
    captured = capsys.readouterr()
    assert code == 2, captured.err
    assert captured.err.startswith("cmcr: error: ")
    assert "Traceback" not in captured.err + captured.out and "internal error" not in captured.err
    return captured.err


# -- import-official ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def official_state():
    return torch.load(ULIP_CLIP, map_location="cpu", weights_only=True)


def _import_error(tmp_path: Path, state: dict, capsys) -> tuple[Path, str, str]:
    """Save ``state`` as an official file; return (path, library message, CLI message)."""
    path = tmp_path / "ulip_clip_bad.pt"
    torch.save(state, path)
    with pytest.raises(CheckpointError) as err:
        import_official(path, "ulip-clip")
    out = tmp_path / "imported"
    cli = cli_error(["import-official", str(path), "--kind", "ulip-clip", "--out", str(out)], capsys)
    assert not out.exists()
    return path, str(err.value), cli


@needs_official
def test_import_without_one_head_names_the_head_and_the_keys_found(official_state, tmp_path, capsys):
    state = {k: v for k, v in official_state.items() if not k.startswith("Head_B.")}
    path, message, cli = _import_error(tmp_path, state, capsys)
    for text in (message, cli):
        assert f"{path}: head 'Head_B' (the ulip side) is missing" in text
        assert "the file has 7 key(s): Head_A.net.0.bias, Head_A.net.0.weight" in text


@needs_official
def test_import_missing_one_key_names_it_and_bounds_the_list_of_keys(official_state, tmp_path,
                                                                     capsys):
    state = {k: v for k, v in official_state.items() if k != "Head_B.net.0.weight"}
    path, message, cli = _import_error(tmp_path, state, capsys)
    for text in (message, cli):
        assert f"{path}: missing 1 key(s): Head_B.net.0.weight; the file has 13:" in text
        assert "... (+7 more)" in text


@needs_official
@pytest.mark.parametrize("shape", [(512, 500), (262144,), (256, 1024)])
def test_import_of_a_wrongly_shaped_weight_names_its_shape_and_the_expected_one(
        official_state, tmp_path, capsys, shape):
    weight = official_state["Head_A.net.0.weight"]
    state = {**official_state, "Head_A.net.0.weight": weight.reshape(-1)[:int(torch.tensor(shape).prod())]
             .reshape(shape)}
    path, message, cli = _import_error(tmp_path, state, capsys)
    expected = f"{path}: 'Head_A.net.0.weight' has shape {shape}, expected (512, 512)"
    assert expected in message and expected in cli


@needs_official
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_import_of_a_non_finite_weight_names_the_tensor(official_state, tmp_path, capsys, value):
    running_var = official_state["Head_B.net.1.running_var"].clone()
    running_var[7] = value
    path, message, cli = _import_error(tmp_path, {**official_state,
                                                  "Head_B.net.1.running_var": running_var}, capsys)
    expected = f"{path}: 'Head_B.net.1.running_var' holds 1 NaN/inf value(s) (of 512)"
    assert expected in message and expected in cli


@needs_official
def test_import_of_an_extra_layer_names_the_unexpected_key(official_state, tmp_path, capsys):
    state = {**official_state, "Head_A.net.2.weight": torch.zeros(4)}
    path, message, cli = _import_error(tmp_path, state, capsys)
    assert f"{path}: unexpected key(s) Head_A.net.2.weight" in message and "Head_A.net.2.weight" in cli


@needs_official
def test_import_of_integer_weights_names_the_tensor(official_state, tmp_path, capsys):
    state = {**official_state, "Head_A.net.0.weight": official_state["Head_A.net.0.weight"].long()}
    path, message, _ = _import_error(tmp_path, state, capsys)
    assert f"{path}: 'Head_A.net.0.weight' holds torch.int64 values, expected floating point" in message


def test_import_of_a_pickle_with_python_objects_is_refused_unrun(tmp_path, capsys):
    marker = tmp_path / "was-run"
    path = tmp_path / "evil.pt"
    torch.save({"Head_A.net.0.weight": _RunsOnLoad(marker)}, path)
    err = cli_error(["import-official", str(path), "--kind", "ulip-clip", "--out",
                     str(tmp_path / "out")], capsys)
    assert str(path) in err and "does not unpickle" in err
    assert not marker.exists()


class _RunsOnLoad:
    """Unpickling this would create ``marker``: weights_only must refuse it."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


# -- a saved model directory ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    if not ULIP_CLIP.is_file():
        pytest.skip(f"official checkpoint not found: {ULIP_CLIP}")
    return import_official(ULIP_CLIP, "ulip-clip").save_pretrained(tmp_path_factory.mktemp("model"))


def _model_copy(model_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(model_dir, tmp_path / "model"))


def _model_error(directory: Path, capsys) -> tuple[str, str]:
    """(library message, CLI message) of loading the model in ``directory``."""
    with pytest.raises(CheckpointError) as err:
        ConnectedModel.from_pretrained(directory)
    cli = cli_error(["similarity", "--model", str(directory), "--text", "a", "b", "--image", "x.png"],
                    capsys)
    return str(err.value), cli


@pytest.mark.parametrize("keep", [0, 5, 8, 100, "half", "all-but-one"])
def test_truncated_model_weights_are_named_as_truncated(model_dir, tmp_path, capsys, keep):
    directory = _model_copy(model_dir, tmp_path)
    weights = directory / "model.safetensors"
    data = weights.read_bytes()
    size = {"half": len(data) // 2, "all-but-one": len(data) - 1}.get(keep, keep)
    weights.write_bytes(data[:size])
    message, cli = _model_error(directory, capsys)
    expected = f"{weights}: truncated or not a safetensors file"
    assert expected in message and expected in cli


def test_model_weights_that_are_not_safetensors_are_named(model_dir, tmp_path, capsys):
    directory = _model_copy(model_dir, tmp_path)
    (directory / "model.safetensors").write_bytes(ULIP_CLIP.read_bytes()[:4096])  # a zip, not safetensors
    message, _ = _model_error(directory, capsys)
    assert f"{directory / 'model.safetensors'}: truncated or not a safetensors file" in message


def _rewrite_weights(directory: Path, change) -> Path:
    weights = directory / "model.safetensors"
    state = load_file(str(weights))
    change(state)
    save_safetensors(state, weights)
    return weights


def test_model_weights_with_nan_name_the_tensor(model_dir, tmp_path, capsys):
    directory = _model_copy(model_dir, tmp_path)
    weights = _rewrite_weights(directory, lambda s: s["projectors.ulip.net.0.bias"].__setitem__(3, float("nan")))
    message, cli = _model_error(directory, capsys)
    expected = f"{weights}: 'projectors.ulip.net.0.bias' holds 1 NaN/inf value(s) (of 512)"
    assert expected in message and expected in cli


def test_model_weights_missing_a_key_name_it_and_the_keys_found(model_dir, tmp_path, capsys):
    directory = _model_copy(model_dir, tmp_path)
    weights = _rewrite_weights(directory, lambda s: s.pop("projectors.clip.net.0.weight"))
    message, cli = _model_error(directory, capsys)
    expected = (f"{weights}: missing 1 key(s): projectors.clip.net.0.weight; the file has 13: "
                "projectors.clip.net.0.bias, projectors.clip.net.1.bias")
    assert expected in message and expected in cli


def test_model_weight_of_the_wrong_shape_names_both_shapes(model_dir, tmp_path, capsys):
    directory = _model_copy(model_dir, tmp_path)
    weights = _rewrite_weights(directory, lambda s: s.update(
        {"projectors.clip.net.0.weight": s["projectors.clip.net.0.weight"][:, :256].contiguous()}))
    message, cli = _model_error(directory, capsys)
    expected = f"{weights}: 'projectors.clip.net.0.weight' has shape (512, 256), expected (512, 512)"
    assert expected in message and expected in cli


@pytest.mark.parametrize("dim", [-512, 0, 512.5, "512"])
def test_model_config_with_a_bad_dim_names_the_file_and_the_key(model_dir, tmp_path, capsys, dim):
    directory = _model_copy(model_dir, tmp_path)
    config = json.loads((directory / "config.json").read_text())
    config["spaces"]["clip"]["dim"] = dim
    (directory / "config.json").write_text(json.dumps(config))
    message, cli = _model_error(directory, capsys)
    for text in (message, cli):
        assert f"{directory / 'config.json'}: " in text and "'spaces.clip.dim' must be" in text


# -- a transformers space directory (the shipped toy CLIP) -------------------------------------------
def _toy_copy(tmp_path: Path) -> Path:
    return Path(shutil.copytree(TOY_CLIP, tmp_path / "toy-clip"))


def _space_error(directory: Path, tmp_path: Path, capsys) -> tuple[str, str]:
    """(library message, CLI message) of embedding one text with the space in ``directory``."""
    with pytest.raises(CheckpointError) as err:
        load_space(f"clip:{directory}", device="cpu").embed("text", ["a red square"])
    texts = tmp_path / "texts.txt"
    texts.write_text("a red square\n")
    cli = cli_error(["embed", "--space", f"clip:{directory}", "--modality", "text", "--input",
                     str(texts), "--out", str(tmp_path / "store"), "--workers", "0", "--quiet",
                     "--device", "cpu"], capsys)
    return str(err.value), cli


@needs_toy_clip
@pytest.mark.parametrize("keep", [0, 20, "half"])
def test_truncated_space_weights_are_named_as_truncated(tmp_path, capsys, keep):
    directory = _toy_copy(tmp_path)
    weights = directory / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[:len(data) // 2 if keep == "half" else keep])
    message, cli = _space_error(directory, tmp_path, capsys)
    expected = f"{weights}: truncated or not a safetensors file"
    assert expected in message and expected in cli


@needs_toy_clip
def test_space_bin_weights_holding_python_objects_are_refused_unrun(tmp_path, capsys):
    directory = _toy_copy(tmp_path)
    state: dict = load_file(str(directory / "model.safetensors"))
    state["logit_scale"] = _RunsOnLoad(tmp_path / "was-run")
    (directory / "model.safetensors").unlink()
    torch.save(state, directory / "pytorch_model.bin")
    message, cli = _space_error(directory, tmp_path, capsys)
    expected = f"{directory / 'pytorch_model.bin'}: the .bin weights hold Python objects"
    assert expected in message and expected in cli
    assert not (tmp_path / "was-run").exists()


@needs_toy_clip
def test_space_bin_weights_that_are_no_pickle_are_named_as_damaged(tmp_path, capsys):
    directory = _toy_copy(tmp_path)
    (directory / "model.safetensors").unlink()
    (directory / "pytorch_model.bin").write_bytes(b"\x80\x02" + b"not a pickle " * 8)
    message, cli = _space_error(directory, tmp_path, capsys)
    expected = f"{directory / 'pytorch_model.bin'}: the .bin weights are damaged"
    assert expected in message and expected in cli


@needs_toy_clip
@pytest.mark.parametrize("key, value", [
    ("projection_dim", -32), ("projection_dim", 0), ("projection_dim", 32.5),
    ("text_config.hidden_size", -64), ("vision_config.patch_size", "8"),
])
def test_space_config_with_a_bad_size_names_the_file_and_the_key(tmp_path, capsys, key, value):
    directory = _toy_copy(tmp_path)
    config = json.loads((directory / "config.json").read_text())
    *parents, name = key.split(".")
    scope = config
    for parent in parents:
        scope = scope[parent]
    scope[name] = value
    (directory / "config.json").write_text(json.dumps(config))
    message, cli = _space_error(directory, tmp_path, capsys)
    expected = f"{directory / 'config.json'}: '{key}' must be a positive integer, got {value!r}"
    assert expected in message and expected in cli


@needs_toy_clip
def test_space_weights_with_nan_name_the_file_and_the_tensor(tmp_path, capsys):
    directory = _toy_copy(tmp_path)
    key = "text_model.final_layer_norm.weight"
    weights = _rewrite_weights(directory, lambda s: s[key].__setitem__(0, float("inf")))
    message, cli = _space_error(directory, tmp_path, capsys)
    expected = f"{weights}: '{key}' holds 1 NaN/inf value(s)"
    assert expected in message and expected in cli


# -- byte-reproducible safetensors ---------------------------------------------------------------
SAVE_SCRIPT = """
import sys, torch
from cmcr.config import ModelConfig, ProjectorConfig, SpaceSpec
from cmcr.method.model import ConnectedModel
torch.manual_seed(0)
config = ModelConfig(spaces={"a": SpaceSpec(["image", "text"], 8), "b": SpaceSpec(["audio", "text"], 6)},
                     projectors={"a": ProjectorConfig(hidden=16, out_dim=4),
                                 "b": ProjectorConfig(hidden=16, out_dim=4)})
ConnectedModel(config).save_pretrained(sys.argv[1])
"""


def test_save_pretrained_gives_identical_bytes_in_separate_processes(tmp_path):
    outputs = []
    for seed in ("1", "2"):
        out = tmp_path / f"model-{seed}"
        env = {**os.environ, "PYTHONHASHSEED": seed}
        subprocess.run([sys.executable, "-c", SAVE_SCRIPT, str(out)], check=True, env=env,
                       timeout=300)
        outputs.append(out)
    for name in ("model.safetensors", "config.json"):
        assert (outputs[0] / name).read_bytes() == (outputs[1] / name).read_bytes(), name
    assert sorted(p.name for p in outputs[0].iterdir()) == ["config.json", "model.safetensors"]
    loaded = ConnectedModel.from_pretrained(outputs[0])
    assert set(loaded.state_dict()) == set(load_file(str(outputs[0] / "model.safetensors")))


def test_saved_header_is_canonical_sorted_json_padded_to_eight_bytes(tmp_path):
    path = save_safetensors({"b": torch.ones(3), "a": torch.zeros(2, dtype=torch.int64)},
                            tmp_path / "w.safetensors", metadata={"z": "1", "format": "pt", "m": "2"})
    data = path.read_bytes()
    length = struct.unpack("<Q", data[:8])[0]
    header = data[8:8 + length]
    assert length % 8 == 0 and header == header.rstrip() + b" " * (length - len(header.rstrip()))
    parsed = json.loads(header)
    assert list(parsed) == sorted(parsed) and list(parsed["__metadata__"]) == ["format", "m", "z"]
    assert header.rstrip() == json.dumps(parsed, sort_keys=True, separators=(",", ":")).encode()


def test_saved_file_loads_back_equal_with_load_file_and_safe_open(tmp_path):
    tensors = {"f32": torch.randn(4, 3), "bf16": torch.randn(5, dtype=torch.bfloat16),
               "i64": torch.tensor(3080), "empty": torch.zeros(0, 2), "flag": torch.tensor([True, False]),
               "strided": torch.arange(12.0).reshape(3, 4).t()}
    path = save_safetensors(tensors, tmp_path / "w.safetensors", metadata={"format": "pt"})
    loaded = load_file(str(path))
    with safe_open(str(path), framework="pt") as handle:
        assert handle.metadata() == {"format": "pt"}
        opened = {key: handle.get_tensor(key) for key in handle.keys()}
    for name, tensor in tensors.items():
        for copy in (loaded[name], opened[name]):
            assert copy.dtype == tensor.dtype and torch.equal(copy, tensor), name
    assert [p.name for p in tmp_path.iterdir()] == ["w.safetensors"]  # no temporary file left


@needs_official
def test_saved_model_loads_back_with_equal_weights(tmp_path):
    model = import_official(ULIP_CLIP, "ulip-clip")
    loaded = ConnectedModel.from_pretrained(model.save_pretrained(tmp_path / "m"))
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
