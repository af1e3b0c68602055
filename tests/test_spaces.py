"""Spaces: registry, lazy loading, normalisation, batched == one by one, fixed audio protocol."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from cmcr.errors import ConfigError, InputError
from cmcr.spaces import MODALITIES, load_space
from cmcr.spaces.clap import centre_crop
from cmcr.data.store import write_store


@pytest.fixture(scope="module")
def clip(tiny_clip_dir):
    return load_space(f"clip:{tiny_clip_dir}", device="cpu")


@pytest.fixture(scope="module")
def clap(tiny_clap_dir):
    return load_space(f"clap:{tiny_clap_dir}", device="cpu")


def _images(count=4, seed=0):
    rng = np.random.default_rng(seed)
    sizes = [(40, 30), (1, 1), (64, 64), (17, 90)]
    return [Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
            for w, h in sizes[:count]]


def _waves(seed=0):
    rng = np.random.default_rng(seed)  # 3 s (longer than the 1 s window), 0.3 s, silent, 1 s
    return [rng.normal(0, 0.1, n).astype(np.float32) for n in (48000, 4800)] + \
        [np.zeros(16000, np.float32), rng.normal(0, 0.1, 16000).astype(np.float32)]


def test_modalities_are_named():
    assert MODALITIES == ("image", "audio", "text", "video", "point_cloud")


def test_bad_specs_are_clear_errors(tmp_path):
    with pytest.raises(ConfigError, match="KIND:NAME_OR_PATH"):
        load_space("openai/clip-vit-base-patch32")
    space = load_space(f"clip:{tmp_path / 'nothing'}", device="cpu")  # cheap: nothing read yet
    with pytest.raises(ConfigError, match="cannot load a CLIP config"):
        space.dim


def test_space_loads_only_the_tower_a_call_needs(tiny_clip_dir):
    space = load_space(f"clip:{tiny_clip_dir}", device="cpu")
    assert space.dim == 16 and space._towers == {}
    space.embed("text", ["a dog"])
    assert set(space._towers) == {"text"}


def test_clip_matches_the_full_model_normalised(clip, tiny_clip_dir):
    from transformers import CLIPModel

    full = CLIPModel.from_pretrained(tiny_clip_dir).eval()
    pixels = clip.preprocessor("image").collate(_images(2))
    tokens = clip.preprocessor("text").collate(["a dog", "une tête"])
    with torch.no_grad():
        image_ref = F.normalize(full.get_image_features(**pixels).pooler_output, dim=-1)
        text_ref = F.normalize(full.get_text_features(**tokens).pooler_output, dim=-1)
    torch.testing.assert_close(clip.encode("image", pixels), image_ref)
    torch.testing.assert_close(clip.encode("text", tokens), text_ref)


@pytest.mark.parametrize("modality", ["image", "text"])
def test_clip_batched_equals_one_by_one_and_rows_are_unit(clip, modality):
    inputs = _images() if modality == "image" else ["a dog", "x", "a much longer caption here", "é"]
    batched = clip.embed(modality, inputs, batch_size=4)
    single = torch.cat([clip.embed(modality, [item]) for item in inputs])
    assert batched.shape == (4, 16) and batched.dtype == torch.float32
    torch.testing.assert_close(batched.norm(dim=-1), torch.ones(4))
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=0)


def test_clip_patch_tokens_are_projected_like_the_pooled_output(clip):
    patches = clip.embed_image_patches(_images(3), batch_size=2)
    assert patches.shape == (3, (32 // 8) ** 2, 16)  # CLS excluded
    torch.testing.assert_close(patches.norm(dim=-1), torch.ones(3, 16))
    tower = clip.tower("image")
    pixels = clip.preprocessor("image").collate(_images(3))
    with torch.no_grad():
        hidden = tower.vision_model(**pixels).last_hidden_state
        cls = F.normalize(tower.visual_projection(tower.vision_model.post_layernorm(hidden[:, 0])), dim=-1)
    torch.testing.assert_close(cls, clip.embed("image", _images(3)))


def test_clip_on_reference_jpegs(clip, assets_dir):
    files = sorted(assets_dir.glob("*.jpeg"))
    embeddings = clip.embed("image", files)
    assert embeddings.shape == (3, 16) and torch.isfinite(embeddings).all()


def test_clap_matches_the_full_model(clap, tiny_clap_dir):
    from transformers import ClapModel

    full = ClapModel.from_pretrained(tiny_clap_dir).eval()
    inputs = clap.preprocessor("audio").collate(_waves())
    with torch.no_grad():
        reference = full.get_audio_features(**inputs).pooler_output
    torch.testing.assert_close(clap.encode("audio", inputs), reference)
    assert inputs["input_features"].shape[1] == 4  # fused: global view + three windows
    assert inputs["is_longer"][:, 0].tolist() == [True, False, False, False]


@pytest.mark.parametrize("modality", ["audio", "text"])
def test_clap_batched_equals_one_by_one_and_is_deterministic(clap, modality):
    inputs = _waves() if modality == "audio" else ["a dog barks", "rain", "", "ünïcode sounds"]
    batched = clap.embed(modality, inputs, batch_size=4)
    single = torch.cat([clap.embed(modality, [item]) for item in inputs])
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=0)
    torch.testing.assert_close(batched, clap.embed(modality, inputs, batch_size=4))
    torch.testing.assert_close(batched.norm(dim=-1), torch.ones(4))


def test_clap_accepts_any_rate_as_a_pair(clap):
    wave = np.random.default_rng(1).normal(0, 0.1, 8000).astype(np.float32)  # 1 s at 8 kHz
    stereo = np.stack([wave, wave], axis=1)
    from_pair = clap.embed("audio", [(stereo, 8000)])
    import soxr
    direct = clap.embed("audio", [soxr.resample(wave, 8000, 16000, quality="HQ")])
    torch.testing.assert_close(from_pair, direct)


def test_unfused_clap_uses_a_centred_crop(tiny_clap_unfused_dir):
    space = load_space(f"clap:{tiny_clap_unfused_dir}", device="cpu")
    long_wave = np.random.default_rng(2).normal(0, 0.1, 40000).astype(np.float32)  # 2.5 s
    crop = centre_crop(long_wave, 16000)
    assert np.array_equal(crop, long_wave[12000:28000])
    torch.testing.assert_close(space.embed("audio", [long_wave]), space.embed("audio", [crop]))
    assert space.preprocessor("audio").collate([long_wave])["input_features"].shape[1] == 1


def test_clap_on_reference_wavs(clap, assets_dir):
    embeddings = clap.embed("audio", sorted(assets_dir.glob("*.wav")))
    assert embeddings.shape == (3, 16) and torch.isfinite(embeddings).all()


def test_space_rejects_a_modality_it_does_not_embed(clip):
    with pytest.raises(ConfigError, match="not 'audio'"):
        clip.embed("audio", ["x.wav"])


def test_precomputed_space_looks_items_up_by_id(tmp_path):
    rows = np.random.default_rng(0).normal(size=(3, 8)).astype(np.float32) * 3
    write_store(tmp_path / "ulip" / "pc", rows, ["chairs/a.npy", "b.npy", "c.npy"],
                space="ulip2", modality="point_cloud")
    space = load_space(f"precomputed:{tmp_path / 'ulip'}")
    assert space.modalities == ("point_cloud",) and space.dim == 8
    out = space.embed("point_cloud", ["b.npy", "chairs/a.npy", "a"])
    expected = F.normalize(torch.from_numpy(rows[[1, 0, 0]]), dim=-1)
    torch.testing.assert_close(out, expected)
    with pytest.raises(InputError, match="no item with id 'zzz'"):
        space.embed("point_cloud", ["zzz"])


def test_value_patches_are_unit_rows_and_differ_from_tokens(tiny_clip_dir):
    from cmcr.spaces import load_space

    space = load_space(f"clip:{tiny_clip_dir}", device="cpu")
    image = Image.new("RGB", (40, 40), (200, 30, 30))
    tokens = space.embed_image_patches([image], mode="tokens")
    values = space.embed_image_patches([image], mode="values")
    assert tokens.shape == values.shape
    assert torch.allclose(values.norm(dim=-1), torch.ones(values.shape[:2]), atol=1e-5)
    assert not torch.allclose(tokens, values)


def test_unknown_patch_mode_is_refused(tiny_clip_dir):
    from cmcr.errors import ConfigError
    from cmcr.spaces import load_space

    with pytest.raises(ConfigError, match="patch mode"):
        load_space(f"clip:{tiny_clip_dir}", device="cpu").embed_image_patches([], mode="cls")


def test_the_toy_spaces_have_short_names():
    from cmcr.spaces import load_space
    from cmcr.world.toy_spaces import packaged_space_dir

    for kind, modality in (("clip", "image"), ("clap", "audio")):
        space = load_space(f"{kind}:toy", device="cpu")
        assert space.name == f"{kind}:toy"  # what stores record: it loads wherever cmcr does
        assert Path(space.name_or_path) == packaged_space_dir(kind)
        assert modality in space.modalities and space.dim > 0
