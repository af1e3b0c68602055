"""The regime map (cmcr study regimes) and cmcr inspect, on generated spaces."""

import json

import numpy as np
import pytest

from cmcr.spaces import geometry
from cmcr.cli import main
from cmcr.errors import StoreError
from cmcr.data.store import write_store
from cmcr.study import regimes
from cmcr.study.geometry_data import Geometry, Sizes, make_two_spaces
from cmcr.study.inspect import inspect_stores, load_regime_map, nearest_cell

TINY = Sizes(texts=512, memory=256, test_pairs=120, concepts=16)
CELLS = [Geometry(10.0, 0.2, 0.87), Geometry(40.0, 0.85, 0.31)]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = tmp_path_factory.mktemp("regimes")
    settings = regimes.StudySettings(cells=CELLS, seeds=(0, 1), sizes=TINY, epochs=3,
                                     recipes=("cmcr", "no_noise", "centred", "calibrated_noise"))
    return out, settings, regimes.run_study(out, settings, progress=False)


def test_the_map_writes_its_table_picture_and_summary(study):
    out, settings, summary = study
    assert (out / "regimes.png").stat().st_size > 10_000
    assert json.loads((out / "regimes.json").read_text()) == summary
    markdown = (out / "regimes.md").read_text()
    assert markdown.count("## PR") == len(CELLS)
    assert len(summary["cells"]) == len(CELLS)
    for cell in summary["cells"]:
        assert set(cell["recipes"]) == set(settings.recipes) and cell["seeds"] == 2
        for row in cell["recipes"].values():
            low, high = row["R@1"]["ci95"]
            assert low <= row["R@1"]["mean"] + 1e-9 <= high + 2e-9
        # each cell's data has the geometry it was asked for (measured on the test pairs)
        asked = cell["geometry"]
        assert cell["measured"]["a"]["modality_gap"] == pytest.approx(asked["modality_gap"], abs=0.03)


def test_the_recommendation_is_the_best_interval_over_the_paper(study):
    _, _, summary = study
    for cell in summary["cells"]:
        beating = {name: row["R@1"]["minus_cmcr"]["effect"] for name, row in cell["recipes"].items()
                   if name != "cmcr" and row["R@1"]["minus_cmcr"]["ci95"][0] > 0}
        expected = max(beating, key=beating.get) if beating else "cmcr"
        assert cell["recommended"] == expected


def test_a_finished_dataset_is_reused(study, monkeypatch):
    out, settings, summary = study

    def no_training(*args, **kwargs):
        raise AssertionError("a finished dataset was trained again")
    monkeypatch.setattr(regimes, "connect", no_training)
    assert regimes.run_study(out, settings, progress=False) == summary


def test_a_dataset_made_with_other_training_is_redone(study, monkeypatch):
    from dataclasses import replace

    out, settings, _ = study
    directory = out / "cells" / regimes.cell_name(CELLS[0]) / "seed-0"
    assert not (directory / "models").exists() and not (directory / "data").exists()

    def trained(*args, **kwargs):
        raise RuntimeError("trained again")
    monkeypatch.setattr(regimes, "connect", trained)
    with pytest.raises(RuntimeError, match="trained again"):
        regimes.run_cell_seed(CELLS[0], 0, replace(settings, epochs=settings.epochs + 1), directory)


def _scores(r1: list[float]) -> dict[str, list[float]]:
    return {"R@1": r1, "mAP": r1}


def test_summary_picks_a_clear_winner_and_keeps_the_paper_on_a_tie():
    rng = np.random.default_rng(0)
    base = list((rng.random(300) < 0.3) * 100.0)
    better = list(np.maximum(base, (rng.random(300) < 0.5) * 100.0))
    results = [{"geometry": {}, "measured": {"a": {"x": 1.0}},
                "scores": {"cmcr": _scores(base), "tied": _scores(base), "better": _scores(better)}}]
    cell = regimes.summarise_cell(results, ["cmcr", "tied", "better"])
    assert cell["recommended"] == "better"
    assert cell["recipes"]["better"]["R@1"]["minus_cmcr"]["significant"]
    cell = regimes.summarise_cell(results, ["cmcr", "tied"])
    assert cell["recommended"] == "cmcr"


def _write_space(directory, arrays, media, text, shuffle=False):
    ids = [f"pair{i:05d}" for i in range(len(arrays[media]))]
    order = np.random.default_rng(0).permutation(len(ids)) if shuffle else np.arange(len(ids))
    write_store(directory / "media", arrays[media], ids, space="a", modality="image")
    write_store(directory / "text", arrays[text][order], [ids[i] for i in order], space="a",
                modality="text")
    return directory / "media", directory / "text"


def test_inspect_recovers_a_known_geometry_paired_by_id(tmp_path, study):
    asked = Geometry(40.0, 0.85, 0.31)
    arrays = make_two_spaces(asked, Sizes(texts=16, memory=16, test_pairs=3000), seed=7)
    media, text = _write_space(tmp_path, arrays, "test_image", "test_text_a", shuffle=True)
    result = inspect_stores([media, text], regime_map=study[0] / "regimes.json")
    space = result["spaces"][0]
    assert space["paired_rows"] == 3000
    assert space["effective_dim"] == pytest.approx(asked.effective_dim, rel=0.15)
    assert space["modality_gap"] == pytest.approx(asked.modality_gap, abs=0.02)
    assert space["matched_cosine"] == pytest.approx(asked.matched_cosine, abs=0.02)
    assert space["paired_residual_variance"] == pytest.approx(
        geometry.paired_residual_variance(arrays["test_image"], arrays["test_text_a"]))
    assert space["reference"] == geometry.REAL_CLIP
    # the nearest cell of that map is the real-CLIP-like one
    assert result["recommendation"]["cell"] == regimes.cell_name(CELLS[1])


def test_inspect_prints_a_comparison_and_its_recommendation(tmp_path, study, capsys):
    arrays = make_two_spaces(Geometry(10.0, 0.2, 0.87), Sizes(texts=16, memory=16, test_pairs=600))
    media, text = _write_space(tmp_path, arrays, "test_image", "test_text_a")
    assert main(["inspect", str(media), str(text), "--sample", "400", "--noise-cosine", "0.98",
                 "--map", str(study[0] / "regimes.json")]) == 0
    out = capsys.readouterr().out
    for words in ("real CLIP ViT-B/16", "toy CLIP", "modality gap", "recommended recipe:",
                  "uniform sample", "paired by id on 400 rows", "not on your encoders",
                  "noise_cosine 0.98 is sigma^2 8.05e-05 at dim 512", "paired residual"):
        assert words in out
    assert nearest_cell(inspect_stores([media, text], regime_map=study[0] / "regimes.json")
                        ["spaces"][0], load_regime_map(study[0] / "regimes.json"))[0]["name"] \
        == regimes.cell_name(CELLS[0])


def test_inspect_refuses_stores_of_two_spaces(tmp_path):
    write_store(tmp_path / "a", np.ones((8, 4), np.float32))
    write_store(tmp_path / "b", np.ones((8, 6), np.float32))
    with pytest.raises(StoreError, match="dim 4.*dim|6"):
        inspect_stores([tmp_path / "a", tmp_path / "b"])


def test_inspect_refuses_tiny_stores_and_foreign_maps_in_one_line(tmp_path, capsys):
    np.save(tmp_path / "one.npy", np.ones((1, 8), np.float32))
    assert main(["inspect", str(tmp_path / "one.npy")]) != 0
    assert "one.npy: holds 1 rows" in capsys.readouterr().err
    rows = np.random.default_rng(0).standard_normal((8, 8)).astype(np.float32)
    np.save(tmp_path / "a.npy", rows)
    np.save(tmp_path / "b.npy", rows + 1)
    (tmp_path / "map.json").write_bytes(b"\xff\xfe not json")
    (tmp_path / "other.json").write_text('{"cells": [{"name": "x"}]}')
    for bad, words in (("map.json", "cannot read the regime map"), ("other.json", "not a regime map")):
        assert main(["inspect", str(tmp_path / "a.npy"), str(tmp_path / "b.npy"),
                     "--map", str(tmp_path / bad)]) != 0
        err = capsys.readouterr().err
        assert words in err and "internal error" not in err


def test_the_shipped_map_recommends_by_its_own_rule():
    shipped = load_regime_map()
    assert len(shipped["cells"]) >= 12 and len(shipped["settings"]["seeds"]) >= 3
    for cell in shipped["cells"]:
        beating = {name: row["R@1"]["minus_cmcr"]["effect"] for name, row in cell["recipes"].items()
                   if name != "cmcr" and row["R@1"]["minus_cmcr"]["ci95"][0] > 0}
        assert cell["recommended"] == (max(beating, key=beating.get) if beating else "cmcr")


def test_study_quick_runs_from_the_command_line(tmp_path, capsys):
    assert main(["study", "regimes", "--out", str(tmp_path), "--quick", "--quiet"]) == 0
    summary = json.loads((tmp_path / "regimes.json").read_text())
    assert len(summary["cells"]) == 2 and summary["settings"]["seeds"] == [0]
    assert set(summary["cells"][0]["recipes"]) == {"cmcr", "no_noise", "calibrated_noise"}
    assert "wrote" in capsys.readouterr().out and (tmp_path / "regimes.png").exists()


def test_study_takes_your_own_cells_and_recipes(tmp_path, capsys, monkeypatch):
    seen = {}

    def fake_run(out, settings, progress=True):
        seen["settings"] = settings
        return {"cells": []}
    monkeypatch.setattr(regimes, "run_study", fake_run)
    assert main(["study", "regimes", "--out", str(tmp_path), "--cells", "40:0.85:0.31,80:0.5:0.5",
                 "--recipes", "centred,no_noise"]) == 0
    settings = seen["settings"]
    assert [(g.effective_dim, g.modality_gap, g.matched_cosine) for g in settings.cells] == [
        (40.0, 0.85, 0.31), (80.0, 0.5, 0.5)]
    assert settings.recipes == ("cmcr", "centred", "no_noise")
    assert main(["study", "regimes", "--out", str(tmp_path), "--cells", "40:0.85:0.9"]) != 0
    assert "--cells 40:0.85:0.9" in capsys.readouterr().err
    assert main(["study", "regimes", "--out", str(tmp_path), "--recipes", "nope"]) != 0
    assert "unknown nope; known: cmcr" in capsys.readouterr().err


def test_study_help_teaches(capsys):
    with pytest.raises(SystemExit):
        main(["study", "regimes", "--help"])
    assert "cmcr study regimes --out" in capsys.readouterr().out


def test_inspect_on_real_clip_rows_gives_their_published_geometry(tmp_path):
    from pathlib import Path

    image, text = np.load(Path(__file__).parent / "data" / "real-clip" / "features_clip.npy")
    np.save(tmp_path / "image.npy", image)
    np.save(tmp_path / "text.npy", text)
    result = inspect_stores([tmp_path / "image.npy", tmp_path / "text.npy"])  # the shipped map
    space = result["spaces"][0]
    assert space["paired_rows"] == 500  # a .npy's ids are its row numbers: paired row by row
    for key in geometry.GEOMETRY_KEYS:
        assert space[key] == pytest.approx(geometry.REAL_CLIP[key], rel=0.01, abs=0.002), key
    assert result["recommendation"]["cell"] == "pr40-gap0.85-match0.31"
    assert result["recommendation"]["recipe"] == "centred_calibrated"
    from cmcr.study.explain import recommendation_text

    assert "  how: cmcr connect CONFIG --set recipe=cmcr+" in recommendation_text(
        result["recommendation"])
