"""The generated world: deterministic, disjoint, distinguishable and correctly labelled."""

from __future__ import annotations

import hashlib
import itertools
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile
from PIL import Image

from cmcr.errors import CmcrError
from cmcr.world.concepts import CONCEPT_COUNT
from cmcr.world.regime import same_meaning_partners
from cmcr.world import (CONCEPTS, SPLIT_NAMES, WorldSizes, concept_by_name, generate_world,
                        load_world, look_caption, render_audio, render_image, sound_caption)

TINY = WorldSizes(clip_pairs=12, clap_pairs=8, connect_texts=20, image_memory=6, audio_memory=4,
                  test_pairs=8, localisation_scenes=6, counterfactual_pairs=8,
                  paired_pairs=6, sample_rate=8000)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return generate_world(tmp_path_factory.mktemp("world"), seed=0, sizes=TINY, progress=False)


def _digest(root: Path) -> str:
    """One hash over every file's relative path and bytes."""
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(root)).encode() + path.read_bytes())
    return digest.hexdigest()


def _mentions(caption: str, concept_name: str) -> bool:
    words = set(re.findall(r"[a-z-]+", caption.lower()))
    return any(name in words for name in concept_by_name(concept_name).names)


def test_same_seed_gives_same_bytes_and_other_seed_differs(world, tmp_path):
    again = generate_world(tmp_path / "again", seed=0, sizes=TINY, progress=False)
    other = generate_world(tmp_path / "other", seed=1, sizes=TINY, progress=False)
    assert _digest(world.root) == _digest(again.root)
    assert _digest(world.root) != _digest(other.root)


def test_smaller_sizes_give_a_prefix(world, tmp_path):
    small = WorldSizes(**{**TINY.__dict__, "clip_pairs": 5, "counterfactual_pairs": 3})
    prefix = generate_world(tmp_path / "small", seed=0, sizes=small, progress=False)
    assert prefix.clip_train == world.clip_train[:5]
    assert prefix.counterfactual == world.counterfactual[:3]
    for record in prefix.clip_train:
        assert prefix.path(record["image"]).read_bytes() == world.path(record["image"]).read_bytes()


def test_splits_have_requested_sizes_and_disjoint_files(world):
    lengths = {name: len(records) for name, records in world.splits.items()}
    assert lengths == {"clip_train": 12, "clap_train": 8, "connect_texts": 20, "image_memory": 6,
                       "audio_memory": 4, "test_pairs": 8, "localisation": 6,
                       "counterfactual": 8, "paired_train": 6}
    files, ids, image_hashes = [], [], set()
    for records in world.splits.values():
        for record in records:
            ids.append(record["id"])
            files += [record[k] for k in ("image", "audio") if k in record]
            if "image" in record:
                image_hashes.add(hashlib.sha256(world.path(record["image"]).read_bytes()).digest())
    assert len(ids) == len(set(ids)) and len(files) == len(set(files))
    assert len(image_hashes) == sum(1 for f in files if f.endswith(".png"))


def test_every_concept_is_distinguishable_by_look_and_by_sound():
    assert len(CONCEPTS) == CONCEPT_COUNT >= 128
    assert len({c.name for c in CONCEPTS}) == len(CONCEPTS)
    assert len({c.look_signature for c in CONCEPTS}) == len(CONCEPTS)
    assert len({c.sound_signature for c in CONCEPTS}) == len(CONCEPTS)
    for a, b in itertools.combinations(CONCEPTS, 2):
        if (a.timbre, a.rhythm) == (b.timbre, b.rhythm):  # then pitch must tell them apart
            assert max(a.pitch, b.pitch) / min(a.pitch, b.pitch) > 1.2, (a.name, b.name)
        assert not set(a.names) & set(b.names), (a.name, b.name)
    colours = np.array([c.colour for c in {c.colour_name: c for c in CONCEPTS}.values()], float)
    distances = np.linalg.norm(colours[:, None] - colours[None], axis=-1)
    assert distances[~np.eye(len(colours), dtype=bool)].min() > 75


def test_generated_concepts_are_fixed_pronounceable_and_keep_the_hand_made_ones():
    assert [c.name for c in CONCEPTS[:3]] == ["bell", "dog", "drum"]
    generated = CONCEPTS[32:]
    assert all(re.fullmatch(r"([bdfgklmnprstvz][aeiou]){2,3}", word)
               for c in generated for word in c.names)
    assert [c.name for c in generated[:3]] == ["refa", "fosi", "patu"]  # NAME_SEED pins them
    assert all(c.noise_band is not None for c in generated if c.timbre == "noise")
    assert all(c.noise_band is None for c in generated if c.timbre != "noise")


def test_same_meaning_partners_counts_identical_concept_sets_in_a_batch():
    sets = [["a"], ["a"], ["b"], ["b", "c"], ["c", "b"], ["d"]]
    # pairs with the same set: (0,1), (3,4) -> 2 ordered pairs each of 30 ordered pairs
    assert same_meaning_partners(sets, 6) == pytest.approx(5 * 4 / 30)
    assert same_meaning_partners(sets, 100) == pytest.approx(5 * 4 / 30)  # capped at the pool
    assert same_meaning_partners([["a"], ["b"]], 2) == 0.0


def test_unknown_concept_name_lists_the_known_ones():
    with pytest.raises(CmcrError, match="bell"):
        concept_by_name("unicorn")


def test_boxes_lie_inside_the_image_and_cover_their_object():
    for seed in range(40):
        rng = np.random.default_rng(seed)
        objects = [CONCEPTS[i] for i in rng.permutation(len(CONCEPTS))[:int(rng.integers(1, 4))]]
        image, boxes = render_image(objects, rng, size=64)
        pixels = np.asarray(image, dtype=float)
        assert image.size == (64, 64) and len(boxes) == len(objects)
        for concept, (x0, y0, x1, y1) in zip(objects, boxes):
            assert 0 <= x0 < x1 <= 64 and 0 <= y0 < y1 <= 64
            assert 8 <= max(x1 - x0, y1 - y0) <= 30
            inside = pixels[y0:y1, x0:x1].reshape(-1, 3)
            close = np.linalg.norm(inside - np.array(concept.colour), axis=1) < 45
            assert close.mean() > 0.1, (seed, concept.name)


def test_render_audio_has_length_peak_and_source_times():
    rng = np.random.default_rng(3)
    sources = [concept_by_name("dog"), concept_by_name("rain")]
    wave, records = render_audio(sources, rng, seconds=2.5, sample_rate=16000)
    assert wave.dtype == np.float32 and wave.shape == (40000,)
    assert 0.3 < np.abs(wave).max() <= 0.9 + 1e-6
    assert [r["concept"] for r in records] == ["dog", "rain"]
    for record in records:
        assert 0 <= record["start"] < record["end"] <= 2.5
        assert record["end"] - record["start"] >= 1.25 - 1e-3


def test_audio_files_match_their_records(world):
    for record in world.clap_train + world.audio_memory:
        wave, sample_rate = soundfile.read(world.path(record["audio"]), dtype="float32")
        info = soundfile.info(str(world.path(record["audio"])))
        assert sample_rate == TINY.sample_rate and info.subtype == "PCM_16" and wave.ndim == 1
        assert len(wave) == round(record["duration"] * sample_rate)
        assert 1.0 <= record["duration"] <= 4.0 and np.abs(wave).max() <= 0.9 + 1e-3
        assert [s["concept"] for s in record["sources"]] == record["concepts"]


def test_images_are_rgb_of_the_requested_size(world):
    for record in world.clip_train + world.image_memory:
        image = Image.open(world.path(record["image"]))
        assert image.mode == "RGB" and image.size == (TINY.image_size, TINY.image_size)
        assert len(record["boxes"]) == len(record["concepts"])


def test_test_pairs_share_their_sounding_concept(world):
    for record in world.test_pairs:
        assert record["image_concepts"][0] == record["audio_concepts"][0] == record["concept"]
        assert record["sources"][0]["concept"] == record["concept"]
        assert 1 <= len(record["image_concepts"]) <= 2
        shared = set(record["image_concepts"]) & set(record["audio_concepts"])
        assert shared == {record["concept"]}


def test_counterfactual_labels_say_whether_the_sound_is_in_the_image(world):
    labels = [r["label"] for r in world.counterfactual]
    assert sum(labels) * 2 == len(labels)
    for record in world.counterfactual:
        [source] = record["sources"]
        assert source["concept"] == record["concept"]
        assert (record["concept"] in record["image_concepts"]) == bool(record["label"])


def test_localisation_box_belongs_to_the_sounding_object(world):
    for record in world.localisation:
        assert len(record["image_concepts"]) == 2 and len(record["sources"]) == 1
        index = record["sounding_index"]
        assert record["image_concepts"][index] == record["concept"]
        assert record["sources"][0]["concept"] == record["concept"]
        assert record["box"] == record["boxes"][index]
        x0, y0, x1, y1 = record["box"]
        pixels = np.asarray(Image.open(world.path(record["image"])), float)[y0:y1, x0:x1]
        colour = np.array(concept_by_name(record["concept"]).colour)
        assert (np.linalg.norm(pixels - colour, axis=-1) < 45).mean() > 0.1


def test_captions_mention_every_concept_they_describe(world):
    for record in world.clip_train + world.clap_train + world.connect_texts:
        for name in record["concepts"]:
            assert _mentions(record["caption"], name), (record["caption"], name)
    styles = [r["style"] for r in world.connect_texts]
    assert styles.count("look") == styles.count("sound")
    for seed in range(200):
        rng = np.random.default_rng(seed)
        concepts = [CONCEPTS[i] for i in rng.permutation(len(CONCEPTS))[:int(rng.integers(1, 4))]]
        for caption in (look_caption(concepts, rng), sound_caption(concepts, rng)):
            assert all(_mentions(caption, c.name) for c in concepts), caption


def test_captions_are_deterministic_given_the_generator():
    concepts = [concept_by_name("bell"), concept_by_name("dog")]
    first = [look_caption(concepts, np.random.default_rng(7)),
             sound_caption(concepts, np.random.default_rng(7))]
    second = [look_caption(concepts, np.random.default_rng(7)),
              sound_caption(concepts, np.random.default_rng(7))]
    assert first == second


def test_load_world_round_trips(world):
    loaded = load_world(world.root)
    assert loaded.sizes == TINY and loaded.seed == 0
    for name in SPLIT_NAMES:
        assert getattr(loaded, name) == getattr(world, name)


@pytest.mark.parametrize("missing", ["world.json", "test_pairs.jsonl", "clip_train/000003.png",
                                     "audio_memory/000001.wav"])
def test_broken_layout_error_names_the_missing_file(world, tmp_path, missing):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(world.root, copy)
    (copy / missing).unlink()
    with pytest.raises(CmcrError, match=re.escape(missing)):
        load_world(copy)


def test_preview_is_written(world, tmp_path):
    pytest.importorskip("matplotlib")
    from cmcr.world.preview import save_preview

    out = save_preview(world.root, tmp_path / "preview.png", n_images=4, n_audio=2)
    assert Image.open(out).size[0] > 100


def test_too_small_an_image_is_a_clear_error():
    with pytest.raises(CmcrError, match="larger image size"):
        render_image(list(CONCEPTS[:3]), np.random.default_rng(0), size=8)


def test_a_manifest_of_another_version_is_refused(world, tmp_path):
    import json
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(world.root, copy)
    header = json.loads((copy / "world.json").read_text())
    (copy / "world.json").write_text(json.dumps({**header, "version": 99}))
    with pytest.raises(CmcrError, match="version"):
        load_world(copy)


def test_pruned_media_are_restored_byte_for_byte(tmp_path):
    from cmcr.world.generate import load_world, prune_media, restore_media

    world = generate_world(tmp_path / "w", seed=0, sizes=TINY, progress=False)
    files = sorted((tmp_path / "w" / "audio_memory").iterdir())
    before = {path.name: path.read_bytes() for path in files}
    prune_media(world, ("audio_memory",))
    assert not any((tmp_path / "w" / "audio_memory").iterdir())
    reloaded = load_world(tmp_path / "w")  # a pruned split's missing files are not an error
    assert reloaded.pruned == ("audio_memory",) and len(reloaded.audio_memory) == TINY.audio_memory
    restore_media(reloaded, "audio_memory", progress=False)
    after = {path.name: path.read_bytes() for path in (tmp_path / "w" / "audio_memory").iterdir()}
    assert after == before and load_world(tmp_path / "w").pruned == ()
    (tmp_path / "w" / "test_pairs" / "000000.png").unlink()
    with pytest.raises(CmcrError, match="missing"):
        load_world(tmp_path / "w")  # other splits' files are still checked
