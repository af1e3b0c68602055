"""`cmcr demo` on a reduced world, end to end, through the shipped toy spaces."""

import json

import numpy as np
import pytest

from cmcr.cli import main
from cmcr.config import MethodConfig
from cmcr.spaces.geometry import GEOMETRY_KEYS, REAL_CLIP
from cmcr.recipes import RECIPE_ADDITIONS, RECIPES
from cmcr.world.demo import DemoSettings, paper_settings, run_demo
from cmcr.world.generate import WorldSizes, generate_world
from cmcr.world.toy_spaces import ToyTraining, packaged_space_dir, train_spaces

METHODS = ["cmcr", "paired_upper_bound", "text_pivot", "linear_map", "chance", "no_noise",
           "no_memory", "no_pseudo_inter", "no_intra", "cmcr+",
           *(f"cmcr+_no_{addition}" for addition in RECIPE_ADDITIONS["cmcr+"])]
METRICS = {"R@1", "R@5", "R@10", "mAP"}
REDUCED = WorldSizes(clip_pairs=8, clap_pairs=8, connect_texts=800, image_memory=400,
                     audio_memory=400, test_pairs=96, localisation_scenes=12,
                     counterfactual_pairs=40, paired_pairs=800)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    settings = DemoSettings(seed=5, sizes=REDUCED, epochs=12, batch_size=128,
                            extend_ablations=True)
    return out, run_demo(out, settings, progress=False)


def test_metrics_follow_the_documented_schema(demo):
    out, results = demo
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["test_pairs"] == REDUCED.test_pairs
    assert set(saved["methods"]) == set(METHODS)
    for method in METHODS:
        for direction in ("audio_to_image", "image_to_audio"):
            values = saved["methods"][method][direction]
            assert set(values) == METRICS | {"ci95"}
            assert all(0.0 <= values[k] <= 100.0 for k in METRICS), (method, direction)
            assert values["R@1"] <= values["R@5"] <= values["R@10"]
            for key in METRICS:  # the interval is around the point value, inside [0, 100]
                low, high = values["ci95"][key]
                assert 0.0 <= low <= values[key] + 1e-9 <= high + 2e-9 <= 100.0 + 2e-9
    for block in ("retention", "localisation", "counterfactual"):
        assert saved[block]


def test_each_paper_component_has_a_paired_effect_with_an_interval(demo):
    out, results = demo
    saved = json.loads((out / "metrics.json").read_text())
    assert set(saved["components"]) == {"noise", "memory", "pseudo_inter", "intra"}
    cmcr = saved["methods"]["cmcr"]["audio_to_image"]
    for component, effect in saved["components"].items():
        ablated = saved["methods"][effect["ablation"]]["audio_to_image"]
        for key in METRICS:
            measured = effect["audio_to_image"][key]
            assert measured["effect"] == pytest.approx(cmcr[key] - ablated[key], abs=1e-6)
            low, high = measured["ci95"]
            assert low <= measured["effect"] + 1e-9 and measured["effect"] <= high + 1e-9
            assert measured["significant"] == (low > 0 or high < 0)
    assert "Significant at 95%" in (out / "report.md").read_text()


def test_regime_measures_each_toy_space_beside_real_clip(demo):
    _, results = demo
    for space, dim in (("clip", 512), ("clap", 512)):
        regime = results["regime"][space]
        assert set(GEOMETRY_KEYS) <= set(regime) and regime["reference"] == REAL_CLIP
        assert regime["dim"] == dim and regime["noise_var"] == 0.004
        assert regime["rows"] == REDUCED.paired_pairs
        assert 0.0 <= regime["modality_gap"] <= 2.0
        assert -1.0 <= regime["matched_cosine"] <= 1.0
        assert regime["noise_cosine"] == pytest.approx((1 + dim * 0.004) ** -0.5, abs=0.001)


def test_inspect_on_the_demo_stores_reproduces_its_regime_block(demo, capsys):
    out, results = demo
    for space, regime in results["regime"].items():
        assert main(["inspect", *(str(out / store) for store in regime["stores"]), "--json"]) == 0
        measured = json.loads(capsys.readouterr().out)["spaces"][0]
        assert measured["paired_rows"] == regime["rows"]
        for key in GEOMETRY_KEYS:
            assert measured[key] == pytest.approx(regime[key], rel=1e-6), (space, key)


def test_the_upper_bound_keeps_its_best_held_out_epoch(demo):
    from cmcr import ConnectedModel
    from cmcr.data.store import open_store
    from cmcr.world.bound import OBJECTIVES, held_out_map, split_pairs
    from cmcr.world.generate import load_world

    out, results = demo
    bound = results["upper_bound"]
    assert bound["objective"] in OBJECTIVES and set(bound["objectives"]) == set(OBJECTIVES)
    assert bound["max_epochs"] == 3 * results["training"]["epochs"]
    chosen = bound["objectives"][bound["objective"]]["held_out_mAP"]
    assert len(chosen) == bound["max_epochs"] and bound["epoch"] == 1 + int(np.argmax(chosen))
    assert max(chosen) >= max(max(o["held_out_mAP"]) for o in bound["objectives"].values())
    world = load_world(out / "world")
    images, audio = (open_store(out / "emb" / n).to_numpy() for n in ("paired_image", "paired_audio"))
    train, held_out = split_pairs(len(images), results["seed"])
    assert bound["held_out_pairs"] == len(held_out) and not set(train) & set(held_out)
    concepts = np.array([r["concept"] for r in world.paired_train])
    score = held_out_map(images[held_out], audio[held_out], concepts[held_out])
    model = ConnectedModel.from_pretrained(out / "models" / "paired_upper_bound")
    assert score(model) == pytest.approx(max(chosen), abs=1e-6)


def test_metrics_record_the_training_and_the_false_negatives(demo):
    _, results = demo
    assert results["training"] == {"paper": False, "epochs": 12, "batch_size": 128,
                                   "projector": DemoSettings().projector, "temperature": 0.01,
                                   "noise_var": 0.004, "intra_weight": 0.1}
    import torch

    assert results["environment"]["threads"] == torch.get_num_threads()
    assert {"cmcr_version", "torch", "numpy"} <= set(results["environment"])
    fakes = results["false_negatives"]
    assert fakes["batch_size"] == 128
    assert 0.0 <= fakes["same_meaning_per_text"] <= fakes["same_meaning_per_text_at_4096"]


def test_paper_settings_are_the_published_hyper_parameters():
    paper = paper_settings(DemoSettings(seed=3))
    assert (paper.seed, paper.epochs, paper.batch_size, paper.temperature) == (3, 36, 4096, 0.01)
    assert paper.projector == {"hidden": 1024, "out_dim": 512, "layers": 2}
    assert paper.sizes.connect_texts == 4 * DemoSettings().sizes.connect_texts
    assert paper.paper and not paper.ablations
    default = DemoSettings()
    assert default.temperature == 0.01 and not default.paper
    assert (MethodConfig().noise_var, MethodConfig().intra_weight) == (0.004, 0.1)


def test_the_connection_is_clearly_above_chance(demo):
    # With the paper's noise (cos 0.57 at 512-d) C-MCR itself is near chance in this small
    # world (README: the regime); the recipe with less noise must find the pairs.
    # 96 test queries: one query moves R@1 by a point, so judge mAP by its interval, and R@10.
    _, results = demo
    plus = results["methods"]["cmcr+"]["audio_to_image"]
    chance = results["methods"]["chance"]["audio_to_image"]
    assert plus["ci95"]["mAP"][0] > 1.5 * chance["mAP"]
    assert plus["R@10"] > 2 * chance["R@10"]
    assert results["counterfactual"]["cmcr"]["AP"] > results["counterfactual"]["chance"]["AP"]


def test_the_recipe_is_compared_with_cmcr_and_ablated(demo):
    out, results = demo
    recipe = results["recipe"]
    assert recipe["name"] == "cmcr+" and recipe["method"] == RECIPES["cmcr+"]
    assert set(recipe["components"]) == set(RECIPE_ADDITIONS["cmcr+"])
    plus = results["methods"]["cmcr+"]["audio_to_image"]
    cmcr = results["methods"]["cmcr"]["audio_to_image"]
    assert recipe["minus_cmcr"]["audio_to_image"]["R@1"]["effect"] == pytest.approx(
        plus["R@1"] - cmcr["R@1"], abs=1e-6)
    bound = results["methods"]["paired_upper_bound"]["audio_to_image"]["R@1"]
    assert results["cmcr+_to_upper_bound_R@1"] == pytest.approx(plus["R@1"] / bound)
    assert set(recipe["retention"]["image_text_top1"]) == {"original", "joint"}
    assert "recipe cmcr+" in (out / "report.md").read_text()


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



def test_extend_mode_keeps_clip_and_is_compared_with_cmcr(demo):
    out, results = demo
    block = results["extend"]  # Ex-MCR's extend mode vs C-MCR (issue 13; cmcr.world.compare_extend)
    assert set(block["audio_to_image"]) == {"cmcr", "extend", "extend_text_queries",
                                            "extend_text_pair"}
    retention = block["retention"]
    assert retention["extend"]["image_text"] == retention["original"]["image_text"]
    assert block["base_max_abs_difference"] < 1e-6
    assert "Extend mode (Ex-MCR) vs C-MCR" in (out / "report.md").read_text()

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
                        ToyTraining(epochs=1, batch_size=8, logit_scale=100.0), progress=False)
    for kind in ("clip", "clap"):
        record = json.loads((dirs[kind] / "training.json").read_text())
        assert record["pairs"] == 24 and record["kind"] == kind
    import math

    import transformers

    clip = transformers.CLIPModel.from_pretrained(dirs["clip"])
    clap = transformers.ClapModel.from_pretrained(dirs["clap"])
    assert float(clip.logit_scale.detach()) != pytest.approx(math.log(100.0))  # learned
    for scale in (clap.logit_scale_a, clap.logit_scale_t):  # fixed and frozen at 100
        assert float(scale.detach()) == pytest.approx(math.log(100.0), abs=1e-6)
    assert json.loads((dirs["clap"] / "training.json").read_text())["training"]["logit_scale"] == 100


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
    from cmcr.method.model import ConnectedModel
    from cmcr.data.store import open_store

    out, _ = demo
    index = Index.open(out, device="cpu")  # the demo folder: its index/ is found
    assert index.modalities == ["audio", "image"] and len(index) == 2 * REDUCED.test_pairs
    model = ConnectedModel.from_pretrained(out / "models" / "cmcr+")  # the best recipe's space
    images = model.project("clip", open_store(out / "emb" / "test_image").to_numpy(),
                           "image").numpy()
    audio_store = open_store(out / "emb" / "test_audio")
    query = model.project("clap", audio_store.rows(4, 5), "audio").numpy()[0]
    expected = np.argsort(-(images @ query), kind="stable")[:5]
    clip_file = audio_store.metadata()[4]["source"]
    hits = index.search(audio=clip_file, modality="image", k=5)
    np.testing.assert_allclose([h.score for h in hits], (images @ query)[expected], atol=1e-4)
    assert all(h.source and h.source.endswith(".png") for h in hits)


def test_demo_seeds_reports_the_spread_and_resumes(tmp_path, monkeypatch, capsys):
    out = tmp_path / "seeds"
    args = ["demo", "--seeds", "1,2", "--scale", "0.1", "--epochs", "1", "--quiet",
            "--out", str(out)]
    assert main(args) == 0
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["seeds"] == [1, 2]
    per_seed = [json.loads((out / f"seed-{s}" / "metrics.json").read_text()) for s in (1, 2)]
    r1 = summary["methods"]["cmcr"]["audio_to_image"]["R@1"]
    assert r1["values"] == [m["methods"]["cmcr"]["audio_to_image"]["R@1"] for m in per_seed]
    assert r1["mean"] == pytest.approx(sum(r1["values"]) / 2)
    assert set(summary["components"]) == {"noise", "memory", "pseudo_inter", "intra"}
    assert "mean ± standard deviation" in (out / "report.md").read_text()
    import cmcr.world.seeds as seeds_module

    def no_rerun(*args, **kwargs):
        raise AssertionError("finished seeds should have been reused")

    monkeypatch.setattr(seeds_module, "run_demo", no_rerun)
    capsys.readouterr()
    assert main(args) == 0
    assert "reusing the finished run" in capsys.readouterr().out
    assert json.loads((out / "metrics.json").read_text()) == summary


def test_demo_seeds_must_be_distinct_whole_numbers(capsys):
    for bad in ("1,1", "a,b", ""):
        with pytest.raises(SystemExit):
            main(["demo", "--seeds", bad])
        assert "--seeds" in capsys.readouterr().err


@pytest.mark.parametrize("seed", [5, 6])
def test_the_connection_prints_the_same_table_at_one_and_two_threads(demo, seed, tmp_path):
    """The demo's cmcr connection, retrained from its own stores at --threads 1 and 2: the same
    weights bit for bit, so the same printed metrics (before the thread-stable BatchNorm the
    weights differed by up to 2e-3 and R@1 moved in the first decimal)."""
    import torch

    from cmcr.config import load_connect_config
    from cmcr.pipeline import connect
    from cmcr.world.demo import concept_positives, retrieval_with_intervals
    from cmcr.world.generate import load_world
    from cmcr.world.stages import FrozenEmbeddings

    out, _ = demo
    config = load_connect_config(out / "models" / "cmcr" / "connect_config.yaml",
                                 [f"train.seed={seed}"])
    concepts = [r["concept"] for r in load_world(out / "world").test_pairs]
    frozen = FrozenEmbeddings({p.name: p for p in (out / "emb").iterdir() if p.is_dir()})
    before = torch.get_num_threads()
    weights, tables = [], []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            model = connect(config, tmp_path / f"threads-{threads}", device="cpu", progress=False,
                            cache_dir=out / "cache")
            weights.append({k: v.clone() for k, v in model.state_dict().items()})
            table, _ = retrieval_with_intervals({"cmcr": model}, frozen,
                                                concept_positives(concepts, concepts))
            tables.append(table["cmcr"])
    finally:
        torch.set_num_threads(before)
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert tables[0] == tables[1]
    record = json.loads((tmp_path / "threads-2" / "run.json").read_text())
    assert record["threads"] == 2 and {"torch", "numpy", "cmcr_version"} <= set(record)


def readme_command(prefix: str) -> list[str]:
    """The README's shell command that starts with ``prefix``, split as a shell would."""
    import shlex
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    start = text.index(prefix)
    return shlex.split(text[start:text.index("```", start)].replace("\\\n", " "))


def test_the_readmes_similarity_example_prints_a_clean_diagonal(demo, tmp_path, capsys):
    """The README's command, as printed, on seed 0's test pairs (generated here: the world's item
    i depends on the seed and i only) with the demo's cmcr+ model: every cross-modal row peaks
    on its own column."""
    import re
    from dataclasses import fields

    out, _ = demo
    argv = readme_command("cmcr similarity --model runs/demo")
    pairs = 1 + max(int(m.group(1)) for a in argv if (m := re.search(r"test_pairs/(\d+)\.", a)))
    sizes = WorldSizes(**{f.name: 0 for f in fields(WorldSizes) if f.name not in
                          ("test_pairs", "image_size", "sample_rate")}, test_pairs=pairs)
    generate_world(tmp_path / "world", seed=0, sizes=sizes, progress=False)
    argv = [a.replace("runs/demo/world", str(tmp_path / "world")).replace("runs/demo", str(out))
            for a in argv[1:]]
    assert main([*argv, "--json"]) == 0
    tables = json.loads(capsys.readouterr().out)["tables"]
    crossed = [t for t in tables if t["rows"] != t["columns"]]
    assert len(crossed) >= 3
    for table in crossed:
        peaks = np.argmax(np.asarray(table["cosine"]), axis=1).tolist()
        assert peaks == list(range(len(peaks))), (table["rows"], table["columns"], table["cosine"])


def test_the_demos_images_and_clips_carry_their_concepts_and_captions(demo):
    """What the search page shows beside a world row: its concepts and its own kind of caption."""
    from cmcr.data.store import open_store

    out, _ = demo
    image = open_store(out / "emb" / "test_image").metadata()[0]
    audio = open_store(out / "emb" / "test_audio").metadata()[0]
    world = json.loads((out / "world" / "test_pairs.jsonl").read_text().splitlines()[0])
    assert image["concepts"] == world["image_concepts"] and image["caption"] == world["look_caption"]
    assert audio["concepts"] == world["audio_concepts"] and audio["caption"] == world["sound_caption"]
    assert image["source"].endswith(world["image"])
