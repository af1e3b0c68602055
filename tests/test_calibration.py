"""One ranking across modalities: calibrated scores estimated at build time, checked like the
rest of index.json, used for "everything"; raw cosines stay in every result, and an index built
without calibration still opens (ranked by cosine, with a note) and can be calibrated later."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from cmcr import Index
from cmcr.cli import main
from cmcr.errors import ConfigError, StoreError
from cmcr.method.model import ConnectedModel
from cmcr.serve.calibration import CollectionCalibration, row_moments
from cmcr.data.store import open_store


def joint_rows(world, name: str) -> np.ndarray:
    store = open_store(world["root"] / name)
    space = {"images": "clip", "sounds": "clap", "texts": "clip"}[name]
    model = ConnectedModel.from_pretrained(world["model"])
    return model.project(space, store.to_numpy(), store.modality).numpy()


def edit_manifest(directory, change) -> None:
    path = directory / "index.json"
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))


def uncalibrated(manifest: dict) -> None:
    for collection in manifest["collections"]:
        collection.pop("calibration_rows")
        collection["extra_sha256"].pop("moments.npy")


@pytest.fixture
def index_copy(gap_world, tmp_path):
    return shutil.copytree(gap_world["index"], tmp_path / "index")


def test_the_fixture_has_a_modality_gap(gap_world):
    images, sounds, texts = (joint_rows(gap_world, n) for n in ("images", "sounds", "texts"))
    assert (images @ texts.T).mean() > 0.8 and abs((sounds @ texts.T).mean()) < 0.2


def test_a_text_query_ranks_images_and_sounds_together_under_everything(gap_world):
    index = Index.open(gap_world["index"], device="cpu")
    for query in ("a dog barking", "rain on a roof", "a bell"):
        raw = {hit.modality for hit in index.search(text=query, k=20, rank="cosine")}
        assert "audio" not in raw  # the gap: by cosine, every sound is below the pictures
        hits = index.search(text=query, k=20)
        assert {"image", "audio"} <= {hit.modality for hit in hits}, query
        calibrated = [hit.calibrated for hit in hits]
        assert calibrated == sorted(calibrated, reverse=True)


def test_calibrated_scores_are_the_cosine_against_each_collections_spread(gap_world):
    index = Index.open(gap_world["index"], device="cpu")
    query = index.encoder.embed_text("a siren passing")
    expected = []
    for name, start in (("images", 0), ("sounds", 24), ("texts", 48)):
        rows = joint_rows(gap_world, name)
        cosines = rows @ query
        z = (cosines - rows.mean(0) @ query) / np.sqrt(query @ np.cov(rows.T, bias=True) @ query)
        expected += [(float(s), start + i, float(c)) for i, (s, c) in enumerate(zip(z, cosines))]
    expected.sort(reverse=True)
    hits = index.search(vector=query, k=30)
    np.testing.assert_allclose([h.calibrated for h in hits], [e[0] for e in expected[:30]],
                               rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose([h.score for h in hits], [e[2] for e in expected[:30]], atol=1e-5)


def test_row_moments_give_each_querys_mean_and_spread():
    rows = np.random.default_rng(0).standard_normal((500, 6))
    query = np.random.default_rng(1).standard_normal(6)
    calibration = CollectionCalibration(row_moments(rows))
    mean, std = calibration.baseline(query)
    assert mean == pytest.approx((rows @ query).mean(), rel=1e-5)
    assert std == pytest.approx((rows @ query).std(), rel=1e-4)
    same = CollectionCalibration(row_moments(np.ones((10, 6))))
    assert np.isfinite(same.calibrate(query, np.array([1.0]))).all()  # no spread: still finite


def test_paging_by_calibrated_score_is_consistent(gap_world):
    index = Index.open(gap_world["index"], device="cpu")
    query = index.encoder.embed_text("a yellow sun")
    pages = index.search(vector=query, k=7) + index.search(vector=query, k=7, offset=7)
    assert [h.row for h in pages] == [h.row for h in index.search(vector=query, k=14)]


def test_an_index_without_calibration_opens_with_a_note_ranks_by_cosine_and_can_be_calibrated(
        index_copy, gap_world, capsys):
    edit_manifest(index_copy, uncalibrated)
    (index_copy / "segment-00000.moments.npy").unlink()
    index = Index.open(index_copy, device="cpu")
    assert "without score calibration" in capsys.readouterr().err
    query = Index.open(gap_world["index"], device="cpu").encoder.embed_text("a dog barking")
    hits = index.search(vector=query, k=20)
    assert all(hit.calibrated is None for hit in hits) and "audio" not in {h.modality for h in hits}
    with pytest.raises(ConfigError, match="cmcr index calibrate"):
        index.search(vector=query, rank="calibrated")
    assert main(["index", "calibrate", str(index_copy)]) == 0
    fresh, again = Index.open(gap_world["index"]), Index.open(index_copy)
    assert [h.row for h in again.search(vector=query, k=20)] == \
        [h.row for h in fresh.search(vector=query, k=20)]


@pytest.mark.parametrize("change, words", [
    (lambda m: m["collections"][0].update(calibration_rows=0), r"'collections\[0\].calibration_rows'"),
    (lambda m: m["collections"][0].update(calibration_rows=2.5), r"null or a positive integer"),
    (lambda m: m["collections"][1]["extra_sha256"].pop("moments.npy"),
     r"'collections\[1\].extra_sha256' must be a sha256 for each of labels.bin, "
     r"labels.offsets.npy, moments.npy"),
    (lambda m: m["collections"][2].update(labels="yes"), r"'collections\[2\].labels' must be true"),
    (lambda m: m["collections"][0].update(root=7), r"'collections\[0\].root' must be a string"),
])
def test_malformed_calibration_entries_name_the_key(index_copy, change, words):
    edit_manifest(index_copy, change)
    with pytest.raises(StoreError, match=words):
        Index.open(index_copy)


def test_damaged_moments_are_refused_naming_the_file(index_copy):
    moments = index_copy / "segment-00001.moments.npy"
    values = np.load(moments)
    values[0, 0] = np.nan
    np.save(moments, values)
    with pytest.raises(StoreError, match="segment-00001.moments.npy: segment 'segment-00001' was "
                                         "changed or swapped"):
        Index.open(index_copy)
    edit_manifest(index_copy, lambda m: m["collections"][1].update(extra_sha256=None))
    with pytest.raises(StoreError, match="segment-00001.moments.npy: calibration moments hold NaN"):
        Index.open(index_copy)
    np.save(moments, values[:3])
    with pytest.raises(StoreError, match=r"must be \(9, 8\) float32"):
        Index.open(index_copy)
