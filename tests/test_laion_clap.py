"""LAION-CLAP's own checkpoints, converted: embeddings equal the laion_clap package's.

The checkpoints in tests/data/laion-clap/ were built and saved by laion_clap 1.1.7's own code
(random weights, small towers, the published audio settings), and the references are its
get_audio_embedding_from_filelist / _from_data / get_text_embedding outputs on the demo WAVs
(tests/data/laion-clap/README.md: how they were made, how to remake them).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import lzma
from pathlib import Path

import numpy as np
import pytest
import torch

from cmcr.cli import main
from cmcr.errors import CheckpointError, ConfigError
from cmcr.data.processing import load_audio
from cmcr.spaces import laion_clap, load_space
from cmcr.data.store import open_store

DATA = Path(__file__).parent / "data" / "laion-clap"
TOKENIZER = DATA / "tokenizer"
KINDS = ("unfused", "fused")
TOLERANCE = 1e-4


def load_generator():
    """make_reference.py, for its clip recipe (the same clips on both sides)."""
    spec = importlib.util.spec_from_file_location("make_laion_reference", DATA / "make_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def reference() -> tuple[dict[str, np.ndarray], dict]:
    with np.load(DATA / "reference.npz") as arrays:
        return dict(arrays), json.loads((DATA / "reference.json").read_text())


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    """The .pt files exactly as laion_clap's torch.save wrote them."""
    folder = tmp_path_factory.mktemp("laion-ckpt")
    paths = {}
    for kind in KINDS:
        paths[kind] = folder / f"htsat-mini-{kind}.pt"
        paths[kind].write_bytes(lzma.decompress((DATA / f"htsat-mini-{kind}.pt.xz").read_bytes()))
    return paths


@pytest.fixture(scope="module")
def converted(checkpoints, tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("laion-converted")
    return {kind: laion_clap.convert_laion_clap(path, folder / kind, tokenizer=str(TOKENIZER))
            for kind, path in checkpoints.items()}


@pytest.fixture(scope="module", params=["synthetic", "demo"])
def clips(request, reference, tmp_path_factory) -> "Clips":
    """Six clips and their reference key: the synthetic ones (made here, the same bytes on every
    machine: no file needed) and the C-MCR demo's WAVs (when the demo inputs are found)."""
    generator = load_generator()
    folder = tmp_path_factory.mktemp(f"laion-clips-{request.param}")
    if request.param == "demo":
        paths = generator.make_clips(request.getfixturevalue("assets_dir"), folder)
        names, key = reference[1]["clips"], "audio"
    else:
        paths = generator.make_synthetic_clips(folder)
        names, key = reference[1]["synthetic_clips"], "synthetic"
    assert [p.name for p in paths] == names
    return Clips(paths, key)


class Clips(list):
    """Clip paths, and the reference.npz key of their embeddings ("audio" or "synthetic")."""

    def __init__(self, paths: list[Path], key: str):
        super().__init__(paths)
        self.key = key


def distance(ours: torch.Tensor | np.ndarray, theirs: np.ndarray) -> float:
    return float(np.abs(np.asarray(ours) - theirs).max())


def convert_and_embed(checkpoint: Path, out: Path, clips: list[Path]) -> torch.Tensor:
    folder = laion_clap.convert_laion_clap(checkpoint, out, tokenizer=str(TOKENIZER))
    return load_space(f"clap:{folder}", device="cpu").embed("audio", clips)


# -- equal to laion_clap ---------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_audio_files_embed_as_laion_clap_does(kind, converted, clips, reference):
    """WAV files at 32 kHz: resampling, 16-bit rounding, fusion windows (30 s clip), padding (3 s),
    the just-over-10-s corner case, all in one batch."""
    ours = load_space(f"clap:{converted[kind]}", device="cpu").embed("audio", clips)
    assert ours.shape == reference[0][f"{kind}_{clips.key}_files"].shape
    assert distance(ours, reference[0][f"{kind}_{clips.key}_files"]) < TOLERANCE


@pytest.mark.parametrize("kind", KINDS)
def test_waveforms_embed_as_laion_clap_get_audio_embedding_from_data(kind, converted, clips,
                                                                     reference):
    waves = [load_audio(path, 48000) for path in clips[:3]]
    ours = load_space(f"clap:{converted[kind]}", device="cpu").embed("audio", waves, batch_size=2)
    assert distance(ours, reference[0][f"{kind}_{clips.key}_data"]) < TOLERANCE


@pytest.mark.parametrize("kind", KINDS)
def test_texts_embed_as_laion_clap_does(kind, converted, reference):
    """Including a text past the 77 tokens LAION-CLAP keeps."""
    arrays, record = reference
    ours = load_space(f"clap:{converted[kind]}", device="cpu").embed("text", record["texts"])
    assert distance(ours, arrays[f"{kind}_text"]) < TOLERANCE


def test_cli_convert_then_embed_stores_laion_clap_embeddings(checkpoints, clips, reference,
                                                              tmp_path, capsys):
    out = tmp_path / "converted"
    assert main(["convert", "laion-clap", str(checkpoints["fused"]), str(out),
                 "--tokenizer", str(TOKENIZER)]) == 0
    assert f"clap:{out}" in capsys.readouterr().out
    listing = tmp_path / "clips.txt"
    listing.write_text("".join(f"{path}\n" for path in clips))
    assert main(["embed", "--space", f"clap:{out}", "--modality", "audio", "--input", str(listing),
                 "--out", str(tmp_path / "store"), "--workers", "0", "--batch-size", "4",
                 "--quiet"]) == 0
    store = open_store(tmp_path / "store")
    assert distance(store.rows(0, len(store)), reference[0][f"fused_{clips.key}_files"]) < TOLERANCE
    record = json.loads((out / laion_clap.SOURCE_FILE).read_text())
    assert record["fused"] is True and len(record["sha256"]) == 64


# -- a wrong mapping fails -------------------------------------------------------------------------
SWAPPED_AUDIO_NORMS = tuple(
    (pattern, {r"\1.layernorm_before.": r"\1.layernorm_after.",
               r"\1.layernorm_after.": r"\1.layernorm_before."}.get(target, target))
    for pattern, target in laion_clap.RENAMES)
SWAPPED_TEXT_NORMS = ((r"(\.layer\.\d+)\.attention\.output\.LayerNorm\.", r"\1.SWAP."),
                      (r"(\.layer\.\d+)\.output\.LayerNorm\.", r"\1.attention.output.LayerNorm."),
                      (r"\.SWAP\.", ".output.LayerNorm.")) + laion_clap.RENAMES


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("setting, wrong", [
    ("RENAMES", SWAPPED_AUDIO_NORMS),          # HTSAT's norm1/norm2 swapped
    ("QKV_ORDER", ("key", "query", "value")),  # qkv split in the wrong order
])
def test_a_mis_mapped_audio_key_changes_the_embeddings(kind, setting, wrong, checkpoints, clips,
                                                       reference, tmp_path, monkeypatch):
    monkeypatch.setattr(laion_clap, setting, wrong)
    ours = convert_and_embed(checkpoints[kind], tmp_path / "wrong", clips)
    assert distance(ours, reference[0][f"{kind}_{clips.key}_files"]) > 10 * TOLERANCE


def test_a_mis_mapped_text_key_changes_the_embeddings(checkpoints, reference, tmp_path,
                                                      monkeypatch):
    monkeypatch.setattr(laion_clap, "RENAMES", SWAPPED_TEXT_NORMS)
    folder = laion_clap.convert_laion_clap(checkpoints["unfused"], tmp_path / "wrong",
                                           tokenizer=str(TOKENIZER))
    ours = load_space(f"clap:{folder}", device="cpu").embed("text", reference[1]["texts"])
    assert distance(ours, reference[0]["unfused_text"]) > 10 * TOLERANCE


def test_a_key_mapped_onto_another_shape_is_refused_naming_it(checkpoints, tmp_path,
                                                              monkeypatch):
    wrong = ((r"patch_embed\.mel_conv2d\.", "patch_embed.proj."),) + laion_clap.RENAMES
    monkeypatch.setattr(laion_clap, "RENAMES", wrong)
    with pytest.raises(CheckpointError, match=r"htsat-mini-fused\.pt.*patch_embed\.mel_conv2d"):
        laion_clap.convert_laion_clap(checkpoints["fused"], tmp_path / "x", tokenizer=str(TOKENIZER))


# -- what the loader refuses -----------------------------------------------------------------------
def edited_checkpoint(source: Path, target: Path, edit) -> Path:
    checkpoint = torch.load(source, map_location="cpu", weights_only=True)
    edit(checkpoint)
    torch.save(checkpoint, target)
    return target


def test_checkpoints_load_with_weights_only_and_keep_laion_clap_format(checkpoints):
    checkpoint = torch.load(checkpoints["fused"], map_location="cpu", weights_only=True)
    assert {"epoch", "state_dict", "optimizer"} <= set(checkpoint)
    assert all(key.startswith("module.") for key in checkpoint["state_dict"])
    assert "module.text_branch.embeddings.position_ids" in checkpoint["state_dict"]


@pytest.mark.parametrize("edit, message", [
    (lambda c: c["state_dict"].update({"module.audio_branch.extra.weight": torch.ones(2)}),
     r"unexpected key\(s\) audio_branch\.extra\.weight"),
    (lambda c: c["state_dict"].pop("module.audio_branch.layers.1.blocks.0.mlp.fc1.weight"),
     r"missing tensor\(s\) for audio_model\.audio_encoder\.layers\.1\.blocks\.0\.intermediate"),
    (lambda c: c["state_dict"].pop("module.text_branch.pooler.dense.bias"),
     r"missing tensor\(s\) for text_model\.pooler\.dense\.bias"),
    (lambda c: c["state_dict"]["module.audio_branch.logmel_extractor.melW"].mul_(1.01),
     r"'audio_branch\.logmel_extractor\.melW' is not the filter bank"),
    (lambda c: c["state_dict"]["module.audio_projection.0.weight"].fill_(float("nan")),
     r"'audio_projection\.0\.weight' holds .* NaN"),
    (lambda c: c["state_dict"].pop("module.audio_branch.patch_embed.proj.weight"),
     r"no 'audio_branch\.patch_embed\.proj\.weight'"),
])
def test_a_damaged_checkpoint_is_refused_naming_file_and_key(edit, message, checkpoints, tmp_path):
    path = edited_checkpoint(checkpoints["fused"], tmp_path / "edited.pt", edit)
    with pytest.raises(CheckpointError, match=r"edited\.pt.*" + message):
        laion_clap.convert_laion_clap(path, tmp_path / "out", tokenizer=str(TOKENIZER))
    assert not (tmp_path / "out").exists()


def test_a_checkpoint_holding_python_objects_is_never_unpickled(checkpoints, tmp_path):
    path = edited_checkpoint(checkpoints["unfused"], tmp_path / "pickled.pt",
                             lambda c: c.update(args=argparse.Namespace(amodel="HTSAT-tiny")))
    with pytest.raises(CheckpointError, match=r"pickled\.pt.*Python objects"):
        laion_clap.convert_laion_clap(path, tmp_path / "out", tokenizer=str(TOKENIZER))


def test_a_tokenizer_of_another_size_is_refused(checkpoints, tmp_path):
    from cmcr.spaces.tokenizer import write_bpe_files

    other = write_bpe_files(tmp_path / "tok", ["zebra"], style="roberta")
    with pytest.raises(ConfigError, match="tokens, the checkpoint's text tower"):
        laion_clap.convert_laion_clap(checkpoints["unfused"], tmp_path / "out", tokenizer=str(other))


def test_an_existing_folder_is_kept_without_overwrite(converted, checkpoints):
    with pytest.raises(ConfigError, match="--overwrite"):
        laion_clap.convert_laion_clap(checkpoints["fused"], converted["fused"],
                                      tokenizer=str(TOKENIZER))


def test_sizes_are_read_off_the_tensors(checkpoints, reference):
    record = reference[1]
    state = torch.load(checkpoints["fused"], weights_only=True)["state_dict"]
    layout = laion_clap.read_layout({k.removeprefix("module."): v for k, v in state.items()},
                                    checkpoints["fused"])
    audio, text = layout.config["audio_config"], layout.config["text_config"]
    assert layout.fused and layout.window_length == 1024
    assert audio["depths"] == record["htsat"]["depths"]
    assert audio["num_attention_heads"] == record["htsat"]["num_heads"]
    assert audio["window_size"] == record["htsat"]["window_size"]
    assert audio["patch_embeds_hidden_size"] == record["htsat"]["embed_dim"]
    assert text["num_hidden_layers"] == record["roberta"]["num_hidden_layers"]
    assert layout.config["projection_dim"] == record["joint_dim"]
