"""``cmcr eval`` end to end: tiny CLIP/CLAP, a saved connected model, fixture datasets."""

from __future__ import annotations

import json

import eval_fixtures as fx
import numpy as np
import pytest

from cmcr.cli import main
from cmcr.cli.evaluate import TASK_NAMES
from cmcr.config import ModelConfig, ProjectorConfig, SpaceSpec
from cmcr.eval.tasks import TASKS
from cmcr.method.model import ConnectedModel
from cmcr.data.store import write_store


def _save_model(directory, spaces: dict[str, list[str]], shared: str, shared_space: str):
    projector = ProjectorConfig(hidden=16, out_dim=8, layers=2)
    config = ModelConfig(spaces={name: SpaceSpec(modalities, 16) for name, modalities in spaces.items()},
                         projectors={name: projector for name in spaces},
                         shared_modality=shared, shared_modality_space=shared_space)
    return ConnectedModel(config).save_pretrained(directory)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return _save_model(tmp_path_factory.mktemp("model"), {"clap": ["audio", "text"], "clip": ["image", "text"]},
                       "text", "clip")


@pytest.fixture
def space_args(tiny_clip_dir, tiny_clap_dir):
    return ["--space", f"clip=clip:{tiny_clip_dir}", "--space", f"clap=clap:{tiny_clap_dir}",
            "--device", "cpu", "--quiet", "--batch-size", "4"]


def _results(out, task, dataset):
    return json.loads((out / f"{task}-{dataset}.json").read_text())


def test_cli_task_names_are_the_tasks():
    assert TASK_NAMES == tuple(TASKS)


def test_retrieval_writes_json_and_reuses_the_cache(tmp_path, model_dir, space_args, capsys, monkeypatch):
    root, out = fx.make_vggss(tmp_path / "vggss"), tmp_path / "out"
    argv = ["eval", "retrieval", "--model", str(model_dir), "--dataset", "vggss", "--root", str(root),
            "--out", str(out), *space_args]
    assert main(argv) == 0
    first = _results(out, "retrieval", "vggss")
    assert first["items"] == 4 and set(first["metrics"]) == {"audio->image", "image->audio", "chance"}
    assert first["protocol"]["name"] == "ezvsl"
    assert first["metrics"]["chance"]["R@1"] == pytest.approx(25.0)
    assert "audio->image" in capsys.readouterr().out
    caches = sorted(p.name for p in (out / "cache").rglob("store.json"))
    assert len(caches) == 2  # clip image and clap audio

    from cmcr.spaces.base import Space

    def refuse(*_args, **_kwargs):
        raise AssertionError("cached embeddings were encoded again")

    monkeypatch.setattr(Space, "embed", refuse)
    assert main(argv) == 0
    assert _results(out, "retrieval", "vggss")["metrics"] == first["metrics"]


def test_localization_writes_metrics_and_a_heatmap_figure(tmp_path, model_dir, space_args):
    root, out = fx.make_flickr(tmp_path / "flickr", ids=fx.FLICKR_TEST), tmp_path / "out"
    assert main(["eval", "localization", "--model", str(model_dir), "--dataset", "flickr-soundnet",
                 "--root", str(root), "--out", str(out), *space_args]) == 0
    record = _results(out, "localization", "flickr-soundnet")
    assert record["protocol"]["name"] == "lvs" and record["items"] == 4
    metrics = record["metrics"]
    assert set(metrics["audio->patches"]) == {"cIoU@0.5", "mean_cIoU", "AUC"}
    assert 0 <= metrics["audio->patches"]["AUC"] <= 100
    figure = out / "localization-flickr-soundnet.png"
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_counterfactual_defaults_to_slavcs_localisation_aware_protocol(tmp_path, model_dir, space_args, capsys):
    root, out = fx.make_extended(tmp_path / "ext"), tmp_path / "out"
    assert main(["eval", "counterfactual", "--model", str(model_dir), "--dataset",
                 "flickr-soundnet-extended", "--root", str(root), "--out", str(out), *space_args]) == 0
    record = _results(out, "counterfactual", "flickr-soundnet-extended")
    assert record["protocol"]["name"] == "slavc" and "stoneMo/SLAVC" in record["protocol"]["reference"]
    assert set(record["metrics"]) == {"audio·patches"}
    assert set(record["metrics"]["audio·patches"]) == {"AP", "max-F1", "precision"}
    assert record["notes"] == ["4 sounding and 3 non-sounding pairs"]
    assert "counterfactual on flickr-soundnet-extended, protocol slavc (7 items" in capsys.readouterr().out


def test_counterfactual_global_protocol_scores_the_pairs_cosine(tmp_path, model_dir, space_args):
    root, out = fx.make_extended(tmp_path / "ext"), tmp_path / "out"
    assert main(["eval", "counterfactual", "--model", str(model_dir), "--dataset",
                 "flickr-soundnet-extended", "--root", str(root), "--out", str(out),
                 "--protocol", "global", *space_args]) == 0
    metrics = _results(out, "counterfactual", "flickr-soundnet-extended")["metrics"]
    assert set(metrics["audio·image"]) == {"AP", "max-F1", "accuracy"}
    assert metrics["chance"]["AP"] == pytest.approx(100 * 4 / 7)


def test_limit_on_a_counterfactual_set_evaluates_both_classes(tmp_path, model_dir, space_args):
    """Defect 2: --limit used to keep only sounding pairs, and AP, F1 and accuracy printed 100."""
    root, out = fx.make_extended(tmp_path / "ext"), tmp_path / "out"
    assert main(["eval", "counterfactual", "--model", str(model_dir), "--dataset",
                 "flickr-soundnet-extended", "--root", str(root), "--out", str(out), "--limit", "4",
                 "--protocol", "global", *space_args]) == 0
    record = _results(out, "counterfactual", "flickr-soundnet-extended")
    assert record["items"] == 4 and record["notes"][-1] == "2 sounding and 2 non-sounding pairs"
    assert record["metrics"]["chance"]["AP"] == 50.0


def test_a_one_class_subset_is_refused_not_scored(tmp_path, model_dir, space_args, capsys):
    root = fx.make_extended(tmp_path / "ext")
    assert main(["eval", "counterfactual", "--model", str(model_dir), "--dataset",
                 "flickr-soundnet-extended", "--root", str(root), "--limit", "1", *space_args]) == 2
    err = capsys.readouterr().err
    assert "needs both positives and negatives; got 1 positive(s) and 0 negative(s)" in err
    assert len(err.strip().splitlines()) == 1


def test_music_solo_localisation_follows_dsol_and_skips_frames_without_a_box(tmp_path, model_dir,
                                                                             space_args, capsys):
    root, out = fx.make_music_solo(tmp_path / "music"), tmp_path / "out"
    assert main(["eval", "localization", "--model", str(model_dir), "--dataset", "music-solo",
                 "--root", str(root), "--out", str(out), *space_args]) == 0
    record = _results(out, "localization", "music-solo")
    assert record["protocol"]["name"] == "dsol" and record["items"] == 3
    assert "localisation skipped 2 item(s) without a box" in record["notes"]
    assert "note: 2 of 5 frames have no box" in capsys.readouterr().out


def test_ave_event_protocol_decodes_the_annotated_seconds(tmp_path, model_dir, space_args):
    pytest.importorskip("av", reason="PyAV not installed (pip install av)")
    root, out = fx.make_ave(tmp_path / "ave", videos=True), tmp_path / "out"
    assert main(["eval", "retrieval", "--model", str(model_dir), "--dataset", "ave", "--root", str(root),
                 "--out", str(out), *space_args]) == 0
    record = _results(out, "retrieval", "ave")
    assert record["protocol"]["name"] == "event" and record["items"] == 3
    from cmcr.data.store import open_store

    sizes = sorted(len(open_store(p.parent)) for p in (out / "cache").rglob("store.json"))
    assert sizes == [3, 2 + 2 + 6]  # 3 event sounds; the frames of seconds 6-7, 7-8 and 3-8


def test_unknown_protocol_is_one_line_naming_the_choices(tmp_path, model_dir, space_args, capsys):
    root = fx.make_esc50(tmp_path / "esc50")
    assert main(["eval", "zero-shot", "--model", "space:clap", "--dataset", "esc50", "--root", str(root),
                 "--protocol", "ulip", *space_args]) == 2
    assert "has no protocol 'ulip'; known: laion-clap, all-folds (default laion-clap)" in capsys.readouterr().err


def test_text_retrieval_with_several_captions_through_the_model(tmp_path, model_dir, space_args):
    root, out = fx.make_clotho(tmp_path / "clotho"), tmp_path / "out"
    assert main(["eval", "text-retrieval", "--model", str(model_dir), "--dataset", "clotho",
                 "--root", str(root), "--out", str(out), *space_args]) == 0
    metrics = _results(out, "text-retrieval", "clotho")["metrics"]
    assert set(metrics) >= {"text->audio", "audio->text"}
    assert metrics["chance audio->text"]["R@1"] == pytest.approx(100 * 5 / 15)


def test_zero_shot_in_a_single_frozen_space_without_projection(tmp_path, space_args):
    root, out = fx.make_esc50(tmp_path / "esc50"), tmp_path / "out"
    assert main(["eval", "zero-shot", "--model", "space:clap", "--dataset", "esc50", "--root", str(root),
                 "--out", str(out), *space_args]) == 0
    record = _results(out, "zero-shot", "esc50")
    assert record["protocol"]["name"] == "laion-clap" and record["items"] == 4  # fold 1
    assert record["templates"] == ["This is a sound of {}"]
    assert record["metrics"]["chance"]["top1"] == pytest.approx(50.0)
    assert record["metrics"]["audio zero-shot"]["top5"] == 100.0  # 2 classes


def test_zero_shot_modelnet40_reads_point_clouds_from_a_store(tmp_path, tiny_clip_dir):
    root = fx.make_modelnet40(tmp_path / "modelnet40")
    ids = ["airplane_0627", "flower_pot_0150", "bathtub_0107"]
    store = tmp_path / "ulip"
    write_store(store / "point_cloud", np.random.default_rng(0).normal(size=(3, 16)).astype(np.float32),
                ids, space="ulip", modality="point_cloud")
    model = _save_model(tmp_path / "ulip-clip", {"clip": ["image", "text"], "ulip": ["image", "point_cloud"]},
                        "image", "clip")
    out = tmp_path / "out"
    assert main(["eval", "zero-shot", "--model", str(model), "--dataset", "modelnet40", "--root", str(root),
                 "--space", f"clip=clip:{tiny_clip_dir}", "--space", f"ulip=precomputed:{store}",
                 "--device", "cpu", "--quiet", "--out", str(out)]) == 0
    record = _results(out, "zero-shot", "modelnet40")
    assert record["items"] == 3 and "point_cloud zero-shot" in record["metrics"]
    assert record["protocol"]["name"] == "ulip" and len(record["templates"]) == 64


def test_a_task_the_dataset_lacks_is_a_clear_error(tmp_path, model_dir, space_args, capsys):
    root = fx.make_esc50(tmp_path / "esc50")
    assert main(["eval", "retrieval", "--model", str(model_dir), "--dataset", "esc50",
                 "--root", str(root), *space_args]) == 2
    assert "dataset 'esc50' supports zero-shot, not 'retrieval'" in capsys.readouterr().err


def test_a_broken_layout_is_reported_without_a_traceback(tmp_path, model_dir, space_args, capsys):
    assert main(["eval", "retrieval", "--model", str(model_dir), "--dataset", "vggss",
                 "--root", str(tmp_path), *space_args]) == 2
    assert "frames: folder not found" in capsys.readouterr().err


def test_help_teaches_with_examples(capsys):
    with pytest.raises(SystemExit):
        main(["eval", "--help"])
    text = capsys.readouterr().out
    assert "examples:" in text and "--model space:clap" in text
