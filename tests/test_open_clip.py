"""open_clip spaces (``open_clip:ARCH:TAG_OR_PATH``): rows equal open_clip's own forward, its
published file formats load, bad files get one clear line, and the CLI accepts the spaces from
``cmcr embed`` to ``cmcr serve``.

The tests marked ``needs_open_clip`` need open-clip-torch with a torchvision that imports beside
this torch; without them they skip, except where CMCR_REQUIRE_OPEN_CLIP=1 (CI runs them in their
own environment, .ci/run), where they fail.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.parse
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from cmcr.cli import main
from cmcr.data.store import open_store
from cmcr.errors import CheckpointError, ConfigError, MissingDependencyError
from cmcr.spaces import load_space
from cmcr.spaces.openclip import parse_target, weights_path
from cmcr.spaces.registry import weights_sha256

from search_fixtures import running_server, write_media
from test_serve import get_json, post_file

ARCHITECTURES = ("ViT-S-32", "RN50")  # a vision transformer and a ResNet image tower
TEXTS = ["a photo of a dog", "a red square on a white wall", "", "x " * 200]


def require_open_clip():
    """open_clip, or a skip (a failure where CMCR_REQUIRE_OPEN_CLIP=1)."""
    try:
        import open_clip
    except (ImportError, RuntimeError) as err:
        if os.environ.get("CMCR_REQUIRE_OPEN_CLIP") == "1":
            pytest.fail(f"open_clip must import here (CMCR_REQUIRE_OPEN_CLIP=1): {err}")
        pytest.skip(f"open_clip is not installed or does not import beside this torch "
                    f"({type(err).__name__}); "
                    "CI runs these tests in their own environment")
    return open_clip


def random_model(arch: str, seed: int = 0):
    """open_clip's own model of ``arch`` with random weights (pretrained=None), and its transform."""
    open_clip = require_open_clip()
    torch.manual_seed(seed)
    model, _, transform = open_clip.create_model_and_transforms(arch, pretrained=None)
    return model.eval(), transform


def plain_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {key: value.detach().clone().contiguous() for key, value in model.state_dict().items()}


def save_safetensors(model: torch.nn.Module, path: Path) -> Path:
    from safetensors.torch import save_file

    save_file(plain_state(model), str(path))
    return path


def reference_rows(model, transform, images: list[Path], texts: list[str], arch: str):
    """open_clip's own encode_image / encode_text, normalised."""
    open_clip = require_open_clip()
    with torch.no_grad():
        pixels = torch.stack([transform(Image.open(path)) for path in images])
        image = model.encode_image(pixels)
        text = model.encode_text(open_clip.get_tokenizer(arch)(texts))
    return (torch.nn.functional.normalize(image, dim=-1).numpy(),
            torch.nn.functional.normalize(text, dim=-1).numpy())


@pytest.fixture(scope="module")
def photos(assets_dir) -> list[Path]:
    return sorted(assets_dir.glob("*.jpeg"))


@pytest.fixture(scope="module", params=ARCHITECTURES)
def random_weights(request, tmp_path_factory) -> tuple[str, Path, torch.nn.Module, object]:
    arch = request.param
    model, transform = random_model(arch)
    path = save_safetensors(model, tmp_path_factory.mktemp(f"open-clip-{arch}") / "w.safetensors")
    return arch, path, model, transform


# -- specs and errors that need no open_clip -----------------------------------------------------
def test_targets_name_an_architecture_and_its_weights():
    assert parse_target("ViT-H-14:laion2b_s32b_b79k") == ("ViT-H-14", "laion2b_s32b_b79k")
    assert parse_target("ViT-B-32:/w/epoch_32.pt") == ("ViT-B-32", "/w/epoch_32.pt")
    assert parse_target("hf-hub:timm/ViT-B-16-SigLIP") == ("hf-hub:timm/ViT-B-16-SigLIP", None)
    assert parse_target("local-dir:/models/m") == ("local-dir:/models/m", None)
    assert weights_path("laion2b_s34b_b79k") is None
    assert weights_path("weights.safetensors") == Path("weights.safetensors")
    with pytest.raises(ConfigError, match="names no weights.*TAG"):
        load_space("open_clip:ViT-B-32")


def test_a_missing_weights_file_is_named(tmp_path):
    missing = tmp_path / "nope" / "w.safetensors"
    with pytest.raises(ConfigError, match=f"{missing}: open_clip weights file not found"):
        load_space(f"open_clip:ViT-B-32:{missing}")


def test_without_open_clip_the_error_says_what_to_install(tmp_path, monkeypatch):
    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"")
    monkeypatch.setitem(sys.modules, "open_clip", None)  # import open_clip raises ImportError
    space = load_space(f"open_clip:ViT-B-32:{weights}", device="cpu")
    with pytest.raises(MissingDependencyError, match=r'cmcr\[open-clip\].*torchvision'):
        space.embed("text", ["a dog"])


def test_stores_record_weights_files_by_absolute_path(tmp_path, monkeypatch):
    (tmp_path / "w.safetensors").write_bytes(b"weights")
    monkeypatch.chdir(tmp_path)
    space = load_space("open_clip:ViT-B-32:w.safetensors", device="cpu")
    assert space.name == f"open_clip:ViT-B-32:{tmp_path / 'w.safetensors'}"
    assert load_space("open_clip:ViT-B-32:laion2b_s34b_b79k").name == \
        "open_clip:ViT-B-32:laion2b_s34b_b79k"
    import hashlib
    assert weights_sha256("open_clip:ViT-B-32:w.safetensors") == hashlib.sha256(b"weights").hexdigest()
    assert weights_sha256("open_clip:ViT-B-32:laion2b_s34b_b79k") is None


# -- equality with open_clip's own forward -------------------------------------------------------
def test_rows_equal_open_clips_own_encoders(random_weights, photos):
    arch, path, model, transform = random_weights
    space = load_space(f"open_clip:{arch}:{path}", device="cpu")
    expected_image, expected_text = reference_rows(model, transform, photos, TEXTS, arch)
    image = space.embed("image", [str(p) for p in photos]).numpy()
    text = space.embed("text", TEXTS).numpy()
    assert space.dim == image.shape[1] == expected_image.shape[1]
    np.testing.assert_allclose(image, expected_image, atol=1e-5)
    np.testing.assert_allclose(text, expected_text, atol=1e-5)
    # decoded PIL images and arrays go the same way as files
    decoded = space.embed("image", [np.asarray(Image.open(photos[0]).convert("RGB"))]).numpy()
    np.testing.assert_allclose(decoded[0], expected_image[0], atol=1e-5)


def test_a_training_checkpoint_loads_as_open_clip_train_saves_it(tmp_path, photos):
    """open_clip_train's epoch_N.pt: {'epoch', 'name', 'state_dict': {'module.' + key}, ...}."""
    arch = ARCHITECTURES[0]
    model, transform = random_model(arch, seed=3)
    checkpoint = {"epoch": 2, "name": "run", "optimizer": {"state": {}, "param_groups": []},
                  "state_dict": {f"module.{k}": v for k, v in plain_state(model).items()}}
    torch.save(checkpoint, tmp_path / "epoch_2.pt")
    space = load_space(f"open_clip:{arch}:{tmp_path / 'epoch_2.pt'}", device="cpu")
    expected_image, expected_text = reference_rows(model, transform, photos[:1], TEXTS[:1], arch)
    np.testing.assert_allclose(space.embed("image", [str(photos[0])]).numpy(), expected_image,
                               atol=1e-5)
    np.testing.assert_allclose(space.embed("text", TEXTS[:1]).numpy(), expected_text, atol=1e-5)


def test_a_file_with_a_renamed_key_is_refused_by_name(tmp_path):
    arch = ARCHITECTURES[0]
    model, _ = random_model(arch)
    state = plain_state(model)
    state["visual.proj_renamed"] = state.pop("visual.proj")
    from safetensors.torch import save_file
    save_file(state, str(tmp_path / "bad.safetensors"))
    space = load_space(f"open_clip:{arch}:{tmp_path / 'bad.safetensors'}", device="cpu")
    with pytest.raises(CheckpointError, match=rf"bad.safetensors: not weights of open_clip {arch}"
                       r".*Missing key.*visual\.proj"):
        space.embed("text", ["a dog"])


def test_weights_of_another_architecture_are_refused(tmp_path):
    rn50, _ = random_model("RN50")
    path = save_safetensors(rn50, tmp_path / "rn50.safetensors")
    with pytest.raises(CheckpointError, match="rn50.safetensors: not weights of open_clip ViT-S-32"):
        load_space(f"open_clip:ViT-S-32:{path}", device="cpu").embed("text", ["a"])


def test_a_pickle_with_python_objects_is_never_unpickled(tmp_path):
    require_open_clip()
    torch.save({"state_dict": {}, "hook": Path("x")}, tmp_path / "evil.pt")
    space = load_space(f"open_clip:ViT-S-32:{tmp_path / 'evil.pt'}", device="cpu")
    with pytest.raises(CheckpointError, match="evil.pt: the weights file holds Python objects"):
        space.embed("text", ["a"])


def test_unknown_architectures_and_tags_are_named():
    require_open_clip()
    with pytest.raises(ConfigError, match="no architecture 'ViT-Q-99'"):
        load_space("open_clip:ViT-Q-99:laion2b_s34b_b79k", device="cpu").embed("text", ["a"])
    with pytest.raises(ConfigError, match="ViT-B-32 has no pretrained tag 'nope'.*laion2b"):
        load_space("open_clip:ViT-B-32:nope", device="cpu").embed("text", ["a"])


# -- the CLI, from embed to serve ----------------------------------------------------------------
def _embed(space: str, modality: str, source: Path, out: Path) -> Path:
    assert main(["embed", "--space", space, "--modality", modality, "--input", str(source),
                 "--out", str(out), "--device", "cpu", "--workers", "0", "--quiet"]) == 0
    return out


def test_the_cli_accepts_open_clip_from_embed_to_serve(tmp_path, tiny_clap_dir):
    arch = ARCHITECTURES[0]
    model, transform = random_model(arch)
    weights = save_safetensors(model, tmp_path / "w.safetensors")
    space, clap = f"open_clip:{arch}:{weights}", f"clap:{tiny_clap_dir}"
    images, sounds = write_media(tmp_path / "media")
    captions = [f"{colour} thing number {n}" for n in range(24)
                for colour in ("red", "green", "blue")]
    (tmp_path / "captions.txt").write_text("\n".join(captions) + "\n")
    emb = tmp_path / "emb"
    image_store = _embed(space, "image", images, emb / "clip_image")
    _embed(space, "text", tmp_path / "captions.txt", emb / "clip_text")
    _embed(clap, "audio", sounds, emb / "clap_audio")
    _embed(clap, "text", tmp_path / "captions.txt", emb / "clap_text")

    files = sorted(images.iterdir())
    store = open_store(image_store)
    expected, _ = reference_rows(model, transform, files, ["a"], arch)
    rows = {item_id: row for item_id, row in zip(store.ids, store.to_numpy())}
    np.testing.assert_allclose(np.stack([rows[str(f)] if str(f) in rows else rows[f.name]
                                         for f in files]), expected, atol=1e-5)

    config = {"shared_modality": "text",
              "spaces": {"clip": {"queries": "emb/clip_text", "memory": "emb/clip_image",
                                  "memory_modality": "image"},
                         "clap": {"queries": "emb/clap_text", "memory": "emb/clap_audio",
                                  "memory_modality": "audio"}},
              "train": {"epochs": 2, "batch_size": 32, "seed": 0},
              "projector": {"hidden": 32, "out_dim": 16, "layers": 2}}
    (tmp_path / "connect.yaml").write_text(yaml.safe_dump(config))
    assert main(["connect", str(tmp_path / "connect.yaml"), "--out", str(tmp_path / "model"),
                 "--quiet"]) == 0

    assert main(["similarity", "--model", str(tmp_path / "model"), "--space", f"clip={space}",
                 "--space", f"clap={clap}", "--image", str(files[0]), "--audio",
                 str(sorted(sounds.iterdir())[0]), "--text", "a red thing", "--json"]) == 0

    assert main(["index", "build", "--model", str(tmp_path / "model"), "--out",
                 str(tmp_path / "index"), "--quiet", "--store", str(image_store),
                 "--store", str(emb / "clap_audio")]) == 0
    with running_server(tmp_path / "index") as url:
        query = urllib.parse.quote("a red thing")
        status, answer = get_json(url, f"/api/search?q={query}&modality=image&k=3")
        assert status == 200, answer
        assert len(answer["results"]) == 3
        assert {hit["modality"] for hit in answer["results"]} == {"image"}
        status, info = get_json(url, "/api/info")
        assert status == 200 and json.dumps(info).count(arch) >= 1
        # an uploaded picture goes through open_clip's own transform in the server's decoders
        status, answer = post_file(url, files[1].name, files[1].read_bytes(), modality="image",
                                   k="1")
        assert status == 200, answer
        assert answer["results"][0]["id"].endswith(files[1].name)
