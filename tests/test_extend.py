"""Extend mode (Ex-MCR): config, the modality-centric pool, the objective and end-to-end training
on generated embeddings, through `cmcr connect`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml

from cmcr.extend.aggregate import centric_set, modality_centric_pool, transfer_average
from cmcr.cli import main
from cmcr.config import ConnectConfig, MethodConfig, load_connect_config
from cmcr.pipeline import connect
from cmcr.errors import ConfigError
from cmcr.eval.metrics import chance_retrieval_metrics, retrieval_metrics
from cmcr.extend.objective import dense_alignment
from cmcr.method.model import ConnectedModel
from cmcr.method.retrieval import retrieve_pseudo_embeddings
from cmcr.data.store import open_store
from cmcr.data.synthetic import SyntheticSizes, write_synthetic_example

SMALL = SyntheticSizes(texts=900, images=450, audio=450, test_pairs=120, concepts=16,
                       latent_dim=8, dim_a=24, dim_b=20)
EXTEND = ["mode=extend", "projector.kind=exmcr", "projector.hidden=64", "projector.out_dim=24",
          "train.batch_size=128", "train.epochs=8"]


def _unit(rows: np.ndarray) -> np.ndarray:
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    root = tmp_path_factory.mktemp("extend-example")
    return root, write_synthetic_example(root, seed=3, sizes=SMALL, epochs=8)


@pytest.fixture(scope="module")
def extended(example, tmp_path_factory):
    _, config_path = example
    out = tmp_path_factory.mktemp("extended")
    assert main(["connect", str(config_path), "--out", str(out), "--quiet",
                 *[a for item in EXTEND for a in ("--set", item)]]) == 0
    return out


# -- config ---------------------------------------------------------------------------------------
def _spaces() -> dict:
    return {"clip": {"queries": "a", "memory": "b", "memory_modality": "image"},
            "clap": {"queries": "c", "memory": "d", "memory_modality": "audio"}}


def test_mode_defaults_to_cmcr_and_extend_lists_every_query_set_and_pair():
    assert ConnectConfig.from_dict({"spaces": _spaces()}).mode == "cmcr"
    config = ConnectConfig.from_dict({"spaces": _spaces(), "mode": "extend"})
    assert (config.base_space, config.leaf_space) == ("clip", "clap")
    assert config.extend_queries() == ["text", "audio", "image"]
    assert config.extend_pairs() == ["text-text", "audio-image", "text-image", "audio-text"]


@pytest.mark.parametrize("change, message", [
    ({"mode": "both"}, "'mode' must be one of cmcr, extend, got 'both'"),
    ({"mode": "extend", "extend": {"base": "ulip"}}, "'extend.base' must be one of the spaces"),
    ({"mode": "extend", "extend": {"queries": ["video"]}},
     "'extend.queries' must be a non-empty list of text, audio, image; got ['video']"),
    ({"mode": "extend", "extend": {"pairs": ["image-audio"]}},
     "'extend.pairs' must be a non-empty list of text-text, audio-image"),
    ({"mode": "extend", "extend": {"pairs": []}}, "'extend.pairs' must be a non-empty list"),
    ({"mode": "extend", "method": {"use_memory": False}}, "'method.use_memory' must be true"),
    ({"mode": "extend", "extend": {"typo": 1}}, "unknown key 'extend.typo'; valid keys of extend"),
])
def test_bad_extend_configs_name_the_key(change, message):
    with pytest.raises(ConfigError) as error:
        ConnectConfig.from_dict({"spaces": _spaces(), **change})
    assert message in str(error.value)


def test_a_head_that_misses_the_base_dim_names_the_key(example, tmp_path):
    _, config_path = example
    config = load_connect_config(config_path, ["mode=extend", "projector.kind=exmcr",
                                               "projector.out_dim=7"])
    with pytest.raises(ConfigError, match=r"base space 'clip' \(24-d\).*projector.out_dim=24"):
        connect(config, tmp_path / "out", device="cpu", progress=False)


# -- the pool ------------------------------------------------------------------------------------
def test_transfer_average_with_the_keys_as_values_is_memory_retrieval():
    rng = np.random.default_rng(0)
    queries, keys = _unit(rng.normal(size=(37, 6))), _unit(rng.normal(size=(53, 6)))
    (chunked,) = transfer_average(queries, keys, [keys], 0.1, query_chunk=8, key_chunk=7)
    reference = retrieve_pseudo_embeddings(queries, keys, 0.1, device="cpu")
    np.testing.assert_allclose(chunked, reference, atol=1e-6)


def test_transfer_average_matches_the_naive_softmax_over_paired_values():
    rng = np.random.default_rng(1)
    queries, keys = _unit(rng.normal(size=(9, 5))), _unit(rng.normal(size=(40, 5)))
    values = _unit(rng.normal(size=(40, 3)))
    (chunked,) = transfer_average(queries, keys, [values], 0.05, query_chunk=4, key_chunk=6)
    weights = torch.softmax(torch.from_numpy(queries @ keys.T / 0.05), dim=1).numpy()
    np.testing.assert_allclose(chunked, weights @ values, atol=1e-5)


def test_pool_holds_each_chosen_set_with_its_real_rows():
    rng = np.random.default_rng(2)
    texts_l, texts_b = _unit(rng.normal(size=(30, 6))), _unit(rng.normal(size=(30, 4)))
    audio, images = _unit(rng.normal(size=(11, 6))), _unit(rng.normal(size=(13, 4)))
    pool = modality_centric_pool(texts_l, texts_b, audio, images, 0.1)
    assert len(pool) == 30 + 11 + 13
    names, counts = np.unique(pool.origin, return_counts=True)
    assert dict(zip(names, counts)) == {"shared": 30, "leaf_memory": 11, "base_memory": 13}
    for part in pool.parts():
        np.testing.assert_allclose(np.linalg.norm(part, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(pool.leaf_shared[pool.origin == "shared"], texts_l, atol=1e-6)
    np.testing.assert_allclose(pool.leaf_memory[pool.origin == "leaf_memory"], audio, atol=1e-6)
    np.testing.assert_allclose(pool.base_memory[pool.origin == "base_memory"], images, atol=1e-6)
    only_text = modality_centric_pool(texts_l, texts_b, audio, images, 0.1, ["shared"])
    assert len(only_text) == 30


def test_an_audio_query_carries_its_text_weights_over_to_the_other_space():
    rng = np.random.default_rng(3)
    texts_l, texts_b = _unit(rng.normal(size=(20, 6))), _unit(rng.normal(size=(20, 4)))
    audio, images = _unit(rng.normal(size=(5, 6))), _unit(rng.normal(size=(7, 4)))
    leaf_text, _, base_text, base_image = centric_set("leaf_memory", texts_l, texts_b, audio,
                                                      images, 0.1)
    weights = torch.softmax(torch.from_numpy(audio @ texts_l.T / 0.1), dim=1).numpy()
    np.testing.assert_allclose(leaf_text, _unit(weights @ texts_l), atol=1e-5)
    np.testing.assert_allclose(base_text, _unit(weights @ texts_b), atol=1e-5)
    expected = retrieve_pseudo_embeddings(base_text, images, 0.1, device="cpu")
    np.testing.assert_allclose(base_image, _unit(expected), atol=1e-5)


# -- the objective ----------------------------------------------------------------------------------
def test_dense_alignment_is_the_mean_of_the_chosen_pairs():
    rows = {r: torch.nn.functional.normalize(torch.randn(6, 4), dim=-1) for r in ("shared", "memory")}
    base = {r: torch.nn.functional.normalize(torch.randn(6, 4), dim=-1) for r in ("shared", "memory")}
    pairs = {"t-t": ("shared", "shared"), "a-v": ("memory", "memory")}
    mean, terms = dense_alignment(rows, base, pairs, 0.1)
    torch.testing.assert_close(mean, (terms["t-t"] + terms["a-v"]) / 2)
    aligned, _ = dense_alignment(base, base, pairs, 0.01)
    assert float(aligned) < float(mean)


# -- end to end -----------------------------------------------------------------------------------
def test_extend_keeps_the_base_space_exactly_and_aligns_the_leaf(example, extended):
    root, _ = example
    model = ConnectedModel.from_pretrained(extended)
    assert model.base_space == "clip" and model.config.source == "cmcr:extend"
    assert model.config.projectors["clap"].kind == "exmcr"
    images = open_store(root / "emb/test_image").to_numpy()
    audio = open_store(root / "emb/test_audio").to_numpy()
    np.testing.assert_allclose(model.project("clip", images).numpy(), _unit(images), atol=1e-6)
    found = retrieval_metrics(model.project("clap", audio).numpy() @ _unit(images).T)
    chance = chance_retrieval_metrics(len(images))
    assert found["R@1"] > 10 * chance["R@1"] and found["mAP"] > 5 * chance["mAP"]


def test_extend_logs_every_dense_pair_and_the_intra_term(extended):
    record = json.loads((extended / "training/metrics.jsonl").read_text().splitlines()[-1])
    assert {"total", "dense", "intra", "pair text-text", "pair audio-image", "pair text-image",
            "pair audio-text"} <= set(record)
    saved = yaml.safe_load((extended / "connect_config.yaml").read_text())
    assert saved["mode"] == "extend"


def test_ablations_change_the_pool_and_the_pairs(example, tmp_path):
    _, config_path = example
    config = load_connect_config(config_path, EXTEND + ["train.epochs=1", "extend.queries=[text]",
                                                        "extend.pairs=[text-text]"])
    connect(config, tmp_path / "out", device="cpu", cache_dir=tmp_path / "cache", progress=False)
    record = json.loads((tmp_path / "out/training/metrics.jsonl").read_text())
    assert [k for k in record if k.startswith("pair")] == ["pair text-text"]
    (pool,) = list((tmp_path / "cache").glob("extend-pool-*.npz"))
    with np.load(pool) as saved:
        assert set(saved["origin"]) == {"shared"} and len(saved["origin"]) == SMALL.texts


def test_extend_resume_gives_identical_weights(example, tmp_path, monkeypatch):
    import cmcr.method.train as train_module

    _, config_path = example
    config = load_connect_config(config_path, EXTEND + ["train.epochs=3"])
    reference = connect(config, tmp_path / "full", device="cpu", progress=False).state_dict()
    real_step, calls = train_module._train_step, {"n": 0}

    def interrupted(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 20:  # inside the second epoch (14 steps an epoch)
            raise KeyboardInterrupt
        return real_step(*args, **kwargs)

    monkeypatch.setattr(train_module, "_train_step", interrupted)
    with pytest.raises(KeyboardInterrupt):
        connect(config, tmp_path / "resumed", device="cpu", progress=False)
    log = (tmp_path / "resumed/training/metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in log] == [1]
    calls["n"] = -10**6  # count the resumed run's steps, no more interrupts
    resumed = connect(config, tmp_path / "resumed", device="cpu", progress=False,
                      resume=True).state_dict()
    assert calls["n"] == -10**6 + 2 * 14  # epochs 2 and 3 only
    assert all(torch.equal(reference[key], resumed[key]) for key in reference)


def test_noise_and_intra_switches_reach_the_extend_loss(example, tmp_path):
    _, config_path = example
    config = load_connect_config(config_path, EXTEND + ["train.epochs=1", "method.use_intra=false"])
    connect(config, tmp_path / "out", device="cpu", progress=False)
    record = json.loads((tmp_path / "out/training/metrics.jsonl").read_text())
    assert record["intra"] == 0.0 and record["total"] == pytest.approx(record["dense"])
    assert MethodConfig().use_noise  # noise stays on by default, as in C-MCR
