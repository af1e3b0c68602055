"""The search index: the kind-choosing rule, exact and approximate search against brute force,
row records, adding stores, the model check, and `cmcr index` / `cmcr search` on real stores."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from cmcr import Index
from cmcr.cli import main
from cmcr.errors import CheckpointError, ConfigError, InputError, StoreError
from cmcr.method.model import ConnectedModel
from cmcr.serve import ann
from cmcr.serve.index import StoreSource, row_source
from cmcr.serve.records import StringTable, StringTableWriter
from cmcr.data.store import StoreWriter, open_store, write_store
from search_fixtures import build_joint_model


def unit_rows(count: int, dim: int, seed: int = 0) -> np.ndarray:
    rows = np.random.default_rng(seed).standard_normal((count, dim)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def clustered_rows(count: int, dim: int, clusters: int, seed: int = 0) -> np.ndarray:
    """Rows around cluster centres (cosine ~0.7 to their centre), like real embeddings."""
    generator = np.random.default_rng(seed)
    centres = unit_rows(clusters, dim, seed + 1)
    rows = centres[generator.integers(0, clusters, count)] + \
        generator.standard_normal((count, dim)).astype(np.float32) / np.sqrt(dim)
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


# -- the rule ------------------------------------------------------------------------------------
def test_small_collections_get_exact_search():
    plan = ann.choose_index(100_000, 512)
    assert plan.factory == "Flat" and plan.search_parameter is None and plan.train_rows == 0


def test_large_collections_that_fit_the_budget_get_ivf_flat():
    plan = ann.choose_index(1_000_000, 512, memory_budget=8 * 2**30)
    assert plan.factory == "IVF1024,Flat" and plan.search_parameter == "nprobe"
    assert plan.train_rows == 64 * 1024


def test_large_collections_over_the_budget_get_compressed_codes():
    plan = ann.choose_index(1_000_000, 512, memory_budget=1 * 2**30)
    assert plan.factory == "IVF1024,PQ64"
    assert "exceed" in plan.reason


def test_list_count_keeps_enough_training_rows_per_list():
    for rows in (100_001, 400_000, 10_000_000):
        assert rows // ann.list_count(rows) >= ann.MIN_ROWS_PER_LIST
    assert ann.pq_subquantizers(36) == 4 and ann.pq_subquantizers(512) == 64


def test_factory_strings_override_the_rule_and_bad_ones_are_refused():
    assert ann.choose_index(50, 16, "HNSW16").search_parameter == "efSearch"
    assert ann.choose_index(50, 16, "exact").factory == "Flat"
    with pytest.raises(ConfigError, match="factory string"):
        ann.choose_index(50, 16, "NoSuchIndex12")


def test_the_rule_falls_back_to_hnsw_only_when_ivf_cannot_help():
    plan = ann.choose_index(1_000_000, 512, memory_budget=8 * 2**30)
    assert ann.fallback_plan(plan, 8, 1_000_000, 512, 8 * 2**30) is None
    fallback = ann.fallback_plan(plan, 256, 1_000_000, 512, 8 * 2**30)
    assert fallback.factory == "HNSW32" and fallback.search_parameter == "efSearch"
    assert "nprobe=256 of 1024" in fallback.reason
    assert ann.fallback_plan(plan, 256, 1_000_000, 512, 1 * 2**30) is None  # graph too big
    custom = ann.choose_index(1_000_000, 512, "IVF1024,Flat")
    assert ann.fallback_plan(custom, 1024, 1_000_000, 512, 8 * 2**30) is None  # asked for


def test_an_automatic_ivf_never_keeps_probing_most_lists(tmp_path, joint_model, monkeypatch):
    monkeypatch.setattr(ann, "EXACT_MAX_ROWS", 500)
    store = write_store(tmp_path / "s", unit_rows(3000, 16, 11), space="clip:x", modality="image")
    index = Index.build(tmp_path / "idx", joint_model, [str(store.path)], progress=False,
                        target_recall=0.99)
    collection = index.manifest.collections[0]
    if collection.factory.startswith("IVF"):
        assert collection.search_value * 4 < ann.list_count(3000)
    elif collection.factory == "HNSW32":
        assert collection.tuned_recall >= 0.99
    else:
        assert collection.factory == "Flat" and "exact search" in collection.reason
    query = unit_rows(1, 8, 12)[0]
    joint = projected(joint_model, "clip", store.to_numpy())
    best = np.argsort(-(joint @ query))[:10]
    assert len(set(best.tolist()) & {h.row for h in index.search(vector=query, k=10)}) >= 8


def test_exact_top_k_over_chunks_matches_a_full_sort():
    rows, queries = unit_rows(500, 8, 1), unit_rows(7, 8, 2)
    running = ann.ExactTopK(queries, 5)
    for start in range(0, 500, 64):
        running.update(start, rows[start:start + 64])
    expected = np.argsort(-(queries @ rows.T), axis=1, kind="stable")[:, :5]
    np.testing.assert_array_equal(running.labels, expected)


# -- records ---------------------------------------------------------------------------------------
def test_string_tables_round_trip_unicode_and_empty_strings(tmp_path):
    strings = ["a", "", "naïve café ☕", "x" * 1000, "line\nbreak"]
    writer = StringTableWriter(tmp_path / "t")
    writer.extend(strings)
    writer.close()
    table = StringTable(tmp_path / "t")
    assert len(table) == 5 and [table[i] for i in range(5)] == strings


def test_a_damaged_string_table_is_refused(tmp_path):
    writer = StringTableWriter(tmp_path / "t")
    writer.extend(["abc", "def"])
    writer.close()
    (tmp_path / "t.bin").write_bytes(b"abc")
    with pytest.raises(StoreError, match="damaged"):
        StringTable(tmp_path / "t")


def test_row_sources_come_from_metadata_then_ids():
    assert row_source({"source": "/data/a.jpg"}, "a.jpg", "image") == "/data/a.jpg"
    assert row_source(None, "cats/a.jpg", "image") == "cats/a.jpg"
    assert row_source({"text": "a cat"}, "3", "text") == "a cat"
    assert row_source(None, "3", "text") == ""


def test_store_specs_parse_paths_and_key_values():
    assert StoreSource.parse("emb/x") == StoreSource("emb/x")
    assert StoreSource.parse("path=emb/x,space=clip,media=img") == StoreSource("emb/x", "clip", "img")
    with pytest.raises(ConfigError, match="path=PATH"):
        StoreSource.parse("space=clip")
    with pytest.raises(ConfigError):
        StoreSource.parse("path=emb/x,colour=red")


# -- building and searching on generated stores --------------------------------------------------
@pytest.fixture(scope="module")
def joint_model(tmp_path_factory):
    return build_joint_model(tmp_path_factory.mktemp("joint-model"))


def projected(model_dir, space, rows):
    return ConnectedModel.from_pretrained(model_dir).project(space, rows).numpy()


@pytest.fixture(scope="module")
def two_stores(tmp_path_factory):
    root = tmp_path_factory.mktemp("stores")
    images = write_store(root / "images", unit_rows(300, 16, 3), [f"img-{i}" for i in range(300)],
                         space="clip:somewhere", modality="image", shard_rows=128,
                         metadata=[{"source": f"/photos/{i}.jpg"} for i in range(300)])
    sounds = write_store(root / "sounds", unit_rows(200, 16, 4), [f"snd-{i}" for i in range(200)],
                         space="clap:elsewhere", modality="audio", shard_rows=64)
    return images, sounds


def test_exact_search_matches_brute_force_over_all_collections(tmp_path, joint_model, two_stores):
    images, sounds = two_stores
    index = Index.build(tmp_path / "idx", joint_model, [str(images.path), str(sounds.path)],
                        progress=False, chunk_rows=50)
    joint = np.concatenate([projected(joint_model, "clip", images.to_numpy()),
                            projected(joint_model, "clap", sounds.to_numpy())])
    query = unit_rows(1, 8, 9)[0]
    found = index.search(vector=query, k=20, rank="cosine")
    expected = np.argsort(-(joint @ query), kind="stable")[:20]
    np.testing.assert_allclose([h.score for h in found], (joint @ query)[expected], atol=1e-5)
    assert set(h.row for h in found) == set(expected.tolist())  # ties may swap places
    assert found[0].modality == ("image" if expected[0] < 300 else "audio")


def test_rows_keep_their_ids_modality_space_and_source(tmp_path, joint_model, two_stores):
    images, sounds = two_stores
    index = Index.build(tmp_path / "idx", joint_model, [str(images.path), str(sounds.path)],
                        progress=False)
    first_sound = index.result(300, 0.5)
    assert (first_sound.id, first_sound.modality, first_sound.space) == ("snd-0", "audio", "clap")
    assert first_sound.source == "snd-0"  # no metadata: the id stands for the file
    photo = index.result(7, 0.5)
    assert (photo.id, photo.source, photo.collection) == ("img-7", "/photos/7.jpg", "images")
    assert index.manifest.spaces == {"clip": "clip:somewhere", "clap": "clap:elsewhere"}
    np.testing.assert_allclose(index.vector(7), projected(joint_model, "clip",
                                                          images.rows(7, 8))[0], atol=1e-6)


def test_modality_filter_paging_and_more_like_this(tmp_path, joint_model, two_stores):
    images, sounds = two_stores
    index = Index.build(tmp_path / "idx", joint_model, [str(images.path), str(sounds.path)],
                        progress=False)
    query = unit_rows(1, 8, 5)[0]
    audio_only = index.search(vector=query, modality="audio", k=30)
    assert {h.modality for h in audio_only} == {"audio"}
    first, second = index.search(vector=query, k=10), index.search(vector=query, k=10, offset=10)
    assert [h.row for h in first + second] == [h.row for h in index.search(vector=query, k=20)]
    like = index.search(like=42, k=5)
    assert 42 not in [h.row for h in like]
    with pytest.raises(ConfigError, match="no 'text' rows"):
        index.search(vector=query, modality="text")
    with pytest.raises(ConfigError, match="k must be"):
        index.search(vector=query, k=0)
    with pytest.raises(KeyError, match="not in the index"):
        index.search(like=10_000)
    with pytest.raises(ConfigError, match="exactly one query"):
        index.search(vector=query, like=3)


def test_approximate_search_reaches_the_tuned_recall(tmp_path, joint_model):
    rows = clustered_rows(20_000, 16, 64, seed=1)
    store = write_store(tmp_path / "many", rows, space="clip:x", modality="image")
    index = Index.build(tmp_path / "idx", joint_model, [str(store.path)], progress=False,
                        index_type="IVF64,Flat", chunk_rows=4096)
    collection = index.manifest.collections[0]
    assert collection.search_parameter == "nprobe" and collection.tuned_recall >= 0.95
    joint = projected(joint_model, "clip", rows)
    queries = ann.perturbed_queries(joint[np.random.default_rng(7).choice(20_000, 100)], seed=7)
    truth = np.argsort(-(queries @ joint.T), axis=1)[:, :10]
    found = np.array([[h.row for h in index.search(vector=q, k=10)] for q in queries])
    assert ann.recall_at_k(found, truth) >= 0.9
    np.testing.assert_allclose(index.vector(123), joint[123], atol=1e-6)  # IVF lists, by row
    assert 123 not in [h.row for h in index.search(like=123, k=5)]


def test_add_extends_an_index_without_touching_its_segments(tmp_path, joint_model, two_stores):
    images, sounds = two_stores
    index = Index.build(tmp_path / "idx", joint_model, [str(images.path)], progress=False)
    before = (tmp_path / "idx" / "segment-00000.faiss").read_bytes()
    assert main(["index", "add", str(tmp_path / "idx"), "--store", str(sounds.path), "--quiet"]) == 0
    reopened = Index.open(tmp_path / "idx")
    assert len(reopened) == 500 and reopened.modalities == ["audio", "image"]
    assert (tmp_path / "idx" / "segment-00000.faiss").read_bytes() == before
    with pytest.raises(StoreError, match="already in the index"):
        reopened.add([str(sounds.path)], progress=False)
    assert len(index) == 300  # the first handle still sees what it built


def test_an_interrupted_build_keeps_its_finished_collections(tmp_path, joint_model, two_stores,
                                                            monkeypatch):
    import cmcr.serve.segments as segments_module

    images, sounds = two_stores
    real_build, calls = segments_module.build_segment, []

    def interrupted_on_the_second(*args, **kwargs):
        calls.append(args[0])
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_build(*args, **kwargs)

    monkeypatch.setattr(segments_module, "build_segment", interrupted_on_the_second)
    with pytest.raises(KeyboardInterrupt):
        Index.build(tmp_path / "idx", joint_model, [str(images.path), str(sounds.path)],
                    progress=False)
    monkeypatch.undo()
    index = Index.open(tmp_path / "idx")
    assert len(index) == 300 and index.modalities == ["image"]
    index.add([str(sounds.path)], progress=False)
    assert len(Index.open(tmp_path / "idx")) == 500


def test_an_index_refuses_another_model(tmp_path, joint_model, two_stores):
    images, _ = two_stores
    model = shutil.copytree(joint_model, tmp_path / "model")
    Index.build(tmp_path / "idx", model, [str(images.path)], progress=False)
    changed = ConnectedModel.from_pretrained(model)
    for parameter in changed.parameters():
        parameter.data += 0.01
    other = changed.save_pretrained(tmp_path / "other")
    with pytest.raises(CheckpointError, match="another model"):
        Index.open(tmp_path / "idx", model=other)
    shutil.copy(other / "model.safetensors", model / "model.safetensors")  # replaced after the build
    with pytest.raises(CheckpointError, match="another model"):
        Index.open(tmp_path / "idx").search(text="anything")


def test_bad_stores_are_named(tmp_path, joint_model, two_stores):
    images, _ = two_stores
    wrong_dim = write_store(tmp_path / "wide", unit_rows(5, 32), space="clip:x", modality="image")
    with pytest.raises(StoreError, match="32-d rows"):
        Index.build(tmp_path / "a", joint_model, [str(wrong_dim.path)], progress=False)
    plain = tmp_path / "plain.npy"
    np.save(plain, unit_rows(5, 16))
    with pytest.raises(StoreError, match="does not record its modality"):
        Index.build(tmp_path / "b", joint_model, [str(plain)], progress=False)
    Index.build(tmp_path / "c", joint_model, [f"path={plain},space=clip"], progress=False)
    text = write_store(tmp_path / "texts", unit_rows(5, 16), space="other:x", modality="text")
    with pytest.raises(ConfigError, match="space=NAME"):
        Index.build(tmp_path / "d", joint_model, [str(text.path)], progress=False)
    partial = StoreWriter(tmp_path / "partial", dim=16, space="clip:x", modality="image",
                          shard_rows=2)
    partial.append(unit_rows(3, 16), ["a", "b", "c"])  # one shard on disk, never closed
    with pytest.raises(StoreError, match="incomplete"):
        Index.build(tmp_path / "f", joint_model, [str(partial.path)], progress=False)
    with pytest.raises(StoreError, match="given twice"):
        Index.build(tmp_path / "g", joint_model, [str(images.path), str(images.path)],
                    progress=False)
    Index.build(tmp_path / "e", joint_model, [str(images.path)], progress=False)
    with pytest.raises(StoreError, match="already there"):
        Index.build(tmp_path / "e", joint_model, [str(images.path)], progress=False)
    with pytest.raises(StoreError, match="not a cmcr index"):
        Index.open(tmp_path / "a-folder-that-is-not-there")


def test_overwrite_deletes_only_index_files(tmp_path, joint_model, two_stores):
    images, _ = two_stores
    Index.build(tmp_path / "idx", joint_model, [str(images.path)], progress=False)
    (tmp_path / "idx" / "notes.txt").write_text("mine")
    Index.build(tmp_path / "idx", joint_model, [str(images.path)], progress=False, overwrite=True)
    assert (tmp_path / "idx" / "notes.txt").read_text() == "mine"


def test_segments_open_memory_mapped(tmp_path, joint_model):
    store = write_store(tmp_path / "s", unit_rows(2000, 16), space="clip:x", modality="image")
    Index.build(tmp_path / "idx", joint_model, [str(store.path)], progress=False)
    index = Index.open(tmp_path / "idx")
    segment = index._segment(index.manifest.collections[0])
    assert segment.ntotal == 2000
    in_ram = Index.open(tmp_path / "idx", mmap=False)
    query = unit_rows(1, 8)[0]
    assert [h.row for h in index.search(vector=query)] == [h.row for h in in_ram.search(vector=query)]


# -- on real stores from `cmcr embed` with the tiny CLIP / CLAP -----------------------------------
def test_cmcr_embed_records_sources_and_texts(search_world):
    images = open_store(search_world["clip_image"])
    assert images.metadata()[0]["source"] == str(search_world["images"] / "picture-0.jpg")
    assert open_store(search_world["clap_text"]).metadata()[1] == {"text": "a green field"}


def test_search_by_file_embeds_it_with_the_recorded_space(search_world):
    index = Index.open(search_world["index"], device="cpu")
    sound = search_world["sounds"] / "sound-3.wav"
    hits = index.search(audio=sound, modality="audio", k=3)
    assert hits[0].id == "sound-3.wav" and hits[0].score == pytest.approx(1.0, abs=1e-4)
    picture = index.search(image=search_world["images"] / "picture-5.png", modality="image", k=1)
    assert picture[0].id == "picture-5.png"
    texts = index.search(text="a dog barking", modality="text", k=8)
    assert {h.text for h in texts} == set(json.loads(json.dumps([
        m["text"] for m in open_store(search_world["clap_text"]).metadata()])))


def test_text_queries_go_through_the_shared_modality_space(search_world):
    from cmcr.spaces import load_space

    index = Index.open(search_world["index"], device="cpu")
    spec = index.manifest.spaces["clip"]
    frozen = load_space(spec, device="cpu").embed("text", ["a blue sky"])
    expected = ConnectedModel.from_pretrained(search_world["model"]).project("clip", frozen)[0]
    np.testing.assert_allclose(index.encoder.embed_text("a blue sky"), expected.numpy(), atol=1e-5)


def test_search_cli_prints_a_table_and_json(search_world, capsys):
    sound = search_world["sounds"] / "sound-1.wav"
    assert main(["search", str(search_world["index"]), "--audio", str(sound), "--modality",
                 "image", "-k", "4", "--device", "cpu"]) == 0
    table = capsys.readouterr().out
    assert "picture-" in table and "score" in table
    assert main(["search", str(search_world["index"]), "--text", "rain", "--json", "-k", "3",
                 "--device", "cpu"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert len(answer["results"]) == 3 and {"id", "modality", "space", "score"} <= set(answer["results"][0])


def test_index_info_describes_every_collection(search_world, capsys):
    assert main(["index", "info", str(search_world["index"])]) == 0
    text = capsys.readouterr().out
    for name in ("clip_image", "clap_audio", "clap_text", "Flat", "24 rows"):
        assert name in text
    assert main(["index", "info", str(search_world["index"]), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert [c["modality"] for c in info["collections"]] == ["image", "audio", "text"]


def test_search_errors_are_clear(search_world, tmp_path, capsys):
    index = Index.open(search_world["index"], device="cpu")
    with pytest.raises(ConfigError, match="empty"):
        index.search(text="   ")
    with pytest.raises(InputError, match="file not found"):
        index.search(audio=tmp_path / "missing.wav")
    with pytest.raises(ConfigError, match="point_cloud"):
        index.encoder.embed("point_cloud", "x.npy")
    assert main(["search", str(tmp_path), "--text", "x"]) == 2
    assert "not a cmcr index" in capsys.readouterr().err


def test_tuning_demands_the_target_with_confidence_not_just_on_average():
    """The tuned breadth is the first whose 95 % interval over the tuning queries lies above the
    target: a mean that only touches the target is not enough (held-out queries would miss it)."""
    import faiss

    rows = clustered_rows(6_000, 16, 600, seed=3).astype(np.float32)
    index = faiss.index_factory(16, "IVF64,Flat", faiss.METRIC_INNER_PRODUCT)
    index.train(rows)
    index.add(rows)
    truth = ann.ExactTopK(ann.perturbed_queries(rows[:512], seed=1), 10)
    truth.update(0, rows)
    plan = ann.choose_index(6_000, 16, "IVF64,Flat")
    value, recall = ann.tune_search(index, plan, truth, target=0.9)
    ann.set_search_parameter(index, "nprobe", value)
    hits = ann.query_recalls(index.search(truth.queries, 10)[1], truth.labels)
    assert ann.recall_lower_bound(hits) >= 0.9 and recall == pytest.approx(hits.mean())
    ann.set_search_parameter(index, "nprobe", value // 2)
    hits = ann.query_recalls(index.search(truth.queries, 10)[1], truth.labels)
    assert ann.recall_lower_bound(hits) < 0.9  # the breadth below it was not confidently enough
    assert ann.recall_lower_bound(np.array([1.0, 0.0] * 50)) < 0.5 - 0.09
