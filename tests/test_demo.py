"""`cmcr demo` on a reduced world, end to end, through the shipped toy spaces."""

import json

import pytest

from cmcr.cli import main
from cmcr.world.demo import DemoSettings, run_demo
from cmcr.world.generate import WorldSizes, generate_world
from cmcr.world.toy_spaces import ToyTraining, packaged_space_dir, train_spaces

METHODS = ["cmcr", "paired_upper_bound", "text_pivot", "linear_map", "chance", "no_noise",
           "no_memory", "no_intra"]
REDUCED = WorldSizes(clip_pairs=8, clap_pairs=8, connect_texts=800, image_memory=400,
                     audio_memory=400, test_pairs=96, localisation_scenes=12,
                     counterfactual_pairs=40, paired_pairs=800)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    settings = DemoSettings(seed=5, sizes=REDUCED, epochs=12, batch_size=128)
    return out, run_demo(out, settings, progress=False)


def test_metrics_follow_the_documented_schema(demo):
    out, results = demo
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["test_pairs"] == REDUCED.test_pairs
    assert set(saved["methods"]) == set(METHODS)
    for method in METHODS:
        for direction in ("audio_to_image", "image_to_audio"):
            values = saved["methods"][method][direction]
            assert set(values) == {"R@1", "R@5", "R@10", "mAP"}
            assert all(0.0 <= v <= 100.0 for v in values.values()), (method, direction)
            assert values["R@1"] <= values["R@5"] <= values["R@10"]
    for block in ("retention", "localisation", "counterfactual"):
        assert saved[block]


def test_cmcr_is_clearly_above_chance(demo):
    _, results = demo
    cmcr = results["methods"]["cmcr"]["audio_to_image"]
    chance = results["methods"]["chance"]["audio_to_image"]
    assert cmcr["R@1"] > 3 * chance["R@1"]
    assert cmcr["mAP"] > 2 * chance["mAP"]
    assert results["counterfactual"]["cmcr"]["AP"] > results["counterfactual"]["chance"]["AP"]


def test_every_stage_leaves_what_the_next_consumes(demo):
    out, _ = demo
    for name in ("report.md", "run.json", "retrieval_grid.png", "similarity_matrix.png",
                 "localisation.png", "joint_space.png", "world/world.json",
                 "emb/clip_text/store.json", "models/cmcr/model.safetensors",
                 "models/paired_upper_bound/config.json"):
        assert (out / name).is_file(), name
    assert "audio -> image" in (out / "report.md").read_text()


def test_rerun_reuses_the_world_and_the_embeddings(demo, monkeypatch):
    out, results = demo
    import cmcr.world.demo as demo_module

    def no_generation(*args, **kwargs):
        raise AssertionError("the world should have been reused")

    monkeypatch.setattr(demo_module, "generate_world", no_generation)
    settings = DemoSettings(seed=5, sizes=REDUCED, epochs=12, batch_size=128)
    again = run_demo(out, settings, progress=False)
    assert again["methods"] == results["methods"]  # deterministic for a seed


def test_shipped_toy_spaces_are_real_transformers_checkpoints():
    from transformers import ClapModel, CLIPModel

    for kind, cls in (("clip", CLIPModel), ("clap", ClapModel)):
        directory = packaged_space_dir(kind)
        assert (directory / "model.safetensors").is_file()
        assert isinstance(cls.from_pretrained(directory), cls)
    total = sum(f.stat().st_size for k in ("clip", "clap") for f in packaged_space_dir(k).iterdir())
    assert total < 20 * 2**20


def test_train_spaces_runs_the_reproduction_path(tmp_path):
    sizes = WorldSizes(clip_pairs=24, clap_pairs=24, connect_texts=8, image_memory=8,
                       audio_memory=8, test_pairs=8, localisation_scenes=8, counterfactual_pairs=8,
                       paired_pairs=8)
    generate_world(tmp_path / "world", seed=0, sizes=sizes, progress=False)
    dirs = train_spaces(tmp_path / "world", tmp_path / "spaces", ToyTraining(epochs=1, batch_size=8),
                        ToyTraining(epochs=1, batch_size=8), progress=False)
    for kind in ("clip", "clap"):
        record = json.loads((dirs[kind] / "training.json").read_text())
        assert record["pairs"] == 24 and record["kind"] == kind


def test_demo_help_explains_the_outputs(capsys):
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    text = capsys.readouterr().out
    assert "metrics.json" in text and "example" in text


def test_embeddings_made_by_other_space_weights_are_redone(tmp_path):
    from cmcr.world.demo import load_toy_spaces
    from cmcr.world.stages import embed_world

    sizes = WorldSizes(clip_pairs=8, clap_pairs=8, connect_texts=16, image_memory=8,
                       audio_memory=8, test_pairs=8, localisation_scenes=8, counterfactual_pairs=8,
                       paired_pairs=8)
    world = generate_world(tmp_path / "world", seed=0, sizes=sizes, progress=False)
    spaces = load_toy_spaces(DemoSettings())
    embed_world(world, spaces, tmp_path / "emb", progress=False)
    stamp = (tmp_path / "emb" / "clip_text" / "store.json").stat().st_mtime_ns
    embed_world(world, spaces, tmp_path / "emb", progress=False)  # same weights: reused
    assert (tmp_path / "emb" / "clip_text" / "store.json").stat().st_mtime_ns == stamp
    (tmp_path / "emb" / "spaces.json").write_text('{"clip": "other", "clap": "other"}')
    embed_world(world, spaces, tmp_path / "emb", progress=False)  # other weights: redone
    assert (tmp_path / "emb" / "clip_text" / "store.json").stat().st_mtime_ns != stamp


def test_the_demo_leaves_a_search_index_that_ranks_like_the_evaluation(demo):
    import numpy as np

    from cmcr import Index
    from cmcr.model import ConnectedModel
    from cmcr.store import open_store

    out, _ = demo
    index = Index.open(out, device="cpu")  # the demo folder: its index/ is found
    assert index.modalities == ["audio", "image"] and len(index) == 2 * REDUCED.test_pairs
    model = ConnectedModel.from_pretrained(out / "models" / "cmcr")
    images = model.project("clip", open_store(out / "emb" / "test_image").to_numpy()).numpy()
    audio_store = open_store(out / "emb" / "test_audio")
    query = model.project("clap", audio_store.rows(4, 5)).numpy()[0]
    expected = np.argsort(-(images @ query), kind="stable")[:5]
    clip_file = audio_store.metadata()[4]["source"]
    hits = index.search(audio=clip_file, modality="image", k=5)
    np.testing.assert_allclose([h.score for h in hits], (images @ query)[expected], atol=1e-4)
    assert all(h.source and h.source.endswith(".png") for h in hits)
