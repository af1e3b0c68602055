"""Unified models of several spaces: two extensions into one base, chained; the two leaves'
emergent pair on generated embeddings; and a unified model in JointEmbedder, `cmcr similarity`,
`cmcr eval` and the search index."""

from __future__ import annotations

import json

import eval_fixtures as fx
import numpy as np
import pytest
import torch

from cmcr.cli import main
from cmcr.config import ConnectConfig, ModelConfig, ProjectorConfig, SpaceSpec
from cmcr.pipeline import connect
from cmcr.encoders import JointEmbedder
from cmcr.errors import ConfigError
from cmcr.eval.metrics import chance_retrieval_metrics, retrieval_metrics
from cmcr.method.model import ConnectedModel
from cmcr.serve.index import Index
from cmcr.spaces import load_space
from cmcr.data.synthetic import make_three_space_embeddings
from cmcr.extend.unified import unify


def _unit(rows: np.ndarray) -> np.ndarray:
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def _extend(root, leaf: str, shared: str, memories: tuple[str, str], stores: dict) -> ConnectConfig:
    """Extend ``leaf`` into 'base' through ``shared``; memories = (leaf's, base's) modality."""
    return ConnectConfig.from_dict({
        "mode": "extend", "shared_modality": shared,
        "spaces": {
            "base": {"queries": str(stores["base_q"]), "memory": str(stores["base_m"]),
                     "memory_modality": memories[1]},
            leaf: {"queries": str(stores["leaf_q"]), "memory": str(stores["leaf_m"]),
                   "memory_modality": memories[0]}},
        "train": {"epochs": 15, "batch_size": 256, "lr": 3.0e-3, "seed": 0},
        "method": {"temperature": 0.05},
        "projector": {"kind": "exmcr", "hidden": 64, "out_dim": 32, "layers": 2}})


@pytest.fixture(scope="module")
def three_spaces(tmp_path_factory):
    """Leaf A (text, audio) and leaf B (image, point_cloud) extended into the base (text,
    image) through texts and through images, separately, then unified."""
    root = tmp_path_factory.mktemp("three-spaces")
    arrays = make_three_space_embeddings(seed=0)
    for name, rows in arrays.items():
        np.save(root / f"{name}.npy", rows)
    a = _extend(root, "a", "text", ("audio", "image"), {
        "base_q": root / "base_text.npy", "base_m": root / "base_image_memory.npy",
        "leaf_q": root / "a_text.npy", "leaf_m": root / "a_audio_memory.npy"})
    b = _extend(root, "b", "image", ("point_cloud", "text"), {
        "base_q": root / "base_image.npy", "base_m": root / "base_text_memory.npy",
        "leaf_q": root / "b_image.npy", "leaf_m": root / "b_point_cloud_memory.npy"})
    models = [connect(config, root / name, device="cpu", progress=False)
              for name, config in (("a", a), ("b", b))]
    assert main(["unify", str(root / "a"), str(root / "b"), "--out", str(root / "unified")]) == 0
    return arrays, models, ConnectedModel.from_pretrained(root / "unified")


def test_the_two_leaves_emergent_pair_aligns_in_the_base_space(three_spaces):
    arrays, _, unified = three_spaces
    audio = unified.project("a", arrays["test_audio"]).numpy()
    points = unified.project("b", arrays["test_point_cloud"]).numpy()
    found = retrieval_metrics(audio @ points.T)  # row i of both shares a latent; never trained on
    chance = chance_retrieval_metrics(len(audio))
    assert found["R@1"] > 10 * chance["R@1"] and found["R@5"] > 10 * chance["R@5"]
    assert found["mAP"] > 5 * chance["mAP"]
    shuffled = retrieval_metrics(audio @ points[np.random.default_rng(0).permutation(len(points))].T)
    assert shuffled["mAP"] < 2 * chance["mAP"]


def test_unified_model_routes_every_modality_and_keeps_each_head(three_spaces):
    arrays, (model_a, model_b), unified = three_spaces
    assert unified.space_names == ["base", "a", "b"] and unified.base_space == "base"
    assert unified.config.spaces["base"].modalities == ["text", "image"]
    assert [unified.space_for(m) for m in ("text", "image", "audio", "point_cloud")] == \
        ["base", "base", "a", "b"]
    for leaf, model, rows in (("a", model_a, "test_audio"), ("b", model_b, "test_point_cloud")):
        torch.testing.assert_close(unified.project(leaf, arrays[rows]),
                                   model.project(leaf, arrays[rows]))
    np.testing.assert_allclose(unified.project("base", arrays["base_text"]).numpy(),
                               _unit(arrays["base_text"]), atol=1e-6)


def _cmcr_model() -> ConnectedModel:
    projector = ProjectorConfig(hidden=8, out_dim=4, layers=2)
    return ConnectedModel(ModelConfig(spaces={"x": SpaceSpec(["text"], 4), "y": SpaceSpec(["text"], 4)},
                                      projectors={"x": projector, "y": projector}))


def _extended(base: str, leaf: str, dim: int = 16) -> ConnectedModel:
    torch.manual_seed(0)
    return ConnectedModel(ModelConfig(
        spaces={base: SpaceSpec(["image", "text"], dim), leaf: SpaceSpec(["audio", "text"], dim)},
        projectors={base: ProjectorConfig(kind="identity", out_dim=dim),
                    leaf: ProjectorConfig(kind="exmcr", hidden=32, out_dim=dim, layers=2)},
        shared_modality="text", shared_modality_space=base))


@pytest.mark.parametrize("models, message", [
    (lambda: [_cmcr_model()], "model 1 is a C-MCR model"),
    (lambda: [_extended("clip", "clap"), _extended("imagebind", "ulip")], "different base spaces"),
    (lambda: [_extended("clip", "clap"), _extended("clip", "clap")], "leaf space named 'clap'"),
    (lambda: [_extended("clip", "clap"), _extended("clip", "ulip", dim=8)], "different dims"),
])
def test_models_that_cannot_unify_are_refused(models, message):
    with pytest.raises(ConfigError, match=message):
        unify(models())


# -- a unified model over the tiny CLIP and CLAP -------------------------------------------------
@pytest.fixture(scope="module")
def unified_dir(tmp_path_factory):
    return _extended("clip", "clap").save_pretrained(tmp_path_factory.mktemp("unified"))


def test_joint_embedder_needs_only_the_base_until_a_leaf_modality_comes(unified_dir, tiny_clip_dir,
                                                                         tiny_clap_dir, assets_dir):
    model = ConnectedModel.from_pretrained(unified_dir)
    clip = load_space(f"clip:{tiny_clip_dir}", device="cpu")
    embedder = JointEmbedder(model, {"clip": clip})
    texts = embedder.embed("text", ["a toilet", "a train"])
    torch.testing.assert_close(texts, torch.nn.functional.normalize(clip.embed("text", ["a toilet", "a train"]), dim=-1))
    with pytest.raises(ConfigError, match=r"give a space for \['clap'\]"):
        embedder.embed("audio", sorted(assets_dir.glob("*.wav")))
    with pytest.raises(ConfigError, match=r"give a space for \['clip'\]"):
        JointEmbedder(model, {"clap": load_space(f"clap:{tiny_clap_dir}", device="cpu")})


def test_cli_similarity_and_eval_accept_a_unified_model(unified_dir, tiny_clip_dir, tiny_clap_dir,
                                                        assets_dir, tmp_path, capsys):
    spaces = ["--space", f"clip=clip:{tiny_clip_dir}", "--space", f"clap=clap:{tiny_clap_dir}",
              "--device", "cpu"]
    assert main(["similarity", "--model", str(unified_dir), *spaces, "--json",
                 "--audio", *map(str, sorted(assets_dir.glob("*.wav"))),
                 "--text", "a toilet", "BBQ", "a train"]) == 0
    tables = json.loads(capsys.readouterr().out)["tables"]
    assert [(t["rows"], t["columns"]) for t in tables] == [("audio", "text")]
    root, out = fx.make_vggss(tmp_path / "vggss"), tmp_path / "out"
    assert main(["eval", "retrieval", "--model", str(unified_dir), "--dataset", "vggss", "--root",
                 str(root), "--out", str(out), "--quiet", "--batch-size", "4", *spaces]) == 0
    record = json.loads((out / "retrieval-vggss.json").read_text())
    assert record["items"] == 4 and 0 <= record["metrics"]["audio->image"]["R@1"] <= 100


def test_search_index_built_with_a_unified_model(search_world, tmp_path):
    model_dir = _extended("clip", "clap").save_pretrained(tmp_path / "unified")
    index = Index.build(tmp_path / "index", model_dir,
                        [str(search_world["clip_image"]), str(search_world["clap_audio"]),
                         str(search_world["clap_text"])], progress=False)
    assert sorted(c.space for c in index.manifest.collections) == ["clap", "clap", "clip"]
    hits = index.search(text="a red square", modality="image", k=3)
    assert len(hits) == 3
    sounds = sorted(search_world["sounds"].glob("*.wav"))
    assert index.search(audio=str(sounds[0]), modality="audio", k=1)[0].score == pytest.approx(1.0, abs=1e-4)
