"""End-to-end inference: JointEmbedder and cmcr similarity on tiny CLIP/CLAP and a connected model."""

from __future__ import annotations

import json

import pytest
import torch

from cmcr.cli import main
from cmcr.encoders import JointEmbedder, similarity
from cmcr.errors import ConfigError
from cmcr.method.model import ConnectedModel
from cmcr.spaces import load_space


@pytest.fixture(scope="module")
def model_dir(tiny_joint_model_dir):
    return tiny_joint_model_dir


@pytest.fixture(scope="module")
def embedder(model_dir, tiny_clip_dir, tiny_clap_dir):
    spaces = {"clip": load_space(f"clip:{tiny_clip_dir}", device="cpu"),
              "clap": load_space(f"clap:{tiny_clap_dir}", device="cpu")}
    return JointEmbedder(ConnectedModel.from_pretrained(model_dir), spaces)


def test_joint_embeddings_are_projected_frozen_embeddings(embedder, assets_dir):
    images, sounds = sorted(assets_dir.glob("*.jpeg")), sorted(assets_dir.glob("*.wav"))
    joint = embedder(images=images, audio=sounds, texts=["a toilet", "BBQ", "a train"])
    assert {k: tuple(v.shape) for k, v in joint.items()} == {"image": (3, 8), "audio": (3, 8),
                                                            "text": (3, 8)}
    for value in joint.values():
        torch.testing.assert_close(value.norm(dim=-1), torch.ones(3))
    model, spaces = embedder.model, embedder.spaces
    torch.testing.assert_close(joint["audio"], model.project("clap", spaces["clap"].embed("audio", sounds)))
    torch.testing.assert_close(joint["text"], model.project("clip", spaces["clip"].embed("text", ["a toilet", "BBQ", "a train"])))


def test_one_item_gives_the_same_joint_embedding_as_in_a_batch(embedder, assets_dir):
    images = sorted(assets_dir.glob("*.jpeg"))
    batched = embedder.embed("image", images)
    torch.testing.assert_close(embedder.embed("image", images[1:2])[0], batched[1], atol=1e-5, rtol=0)


def test_text_space_can_be_chosen(embedder):
    clap_side = JointEmbedder(embedder.model, embedder.spaces, text_space="clap")
    expected = embedder.model.project("clap", embedder.spaces["clap"].embed("text", ["rain"]))
    torch.testing.assert_close(clap_side.embed("text", ["rain"]), expected)


def test_patch_tokens_in_the_joint_space(embedder, assets_dir):
    patches = embedder.embed_image_patches(sorted(assets_dir.glob("*.jpeg")))
    assert patches.shape == (3, 16, 8)
    torch.testing.assert_close(patches.norm(dim=-1), torch.ones(3, 16))


def test_missing_or_mismatched_spaces_are_errors(embedder):
    with pytest.raises(ConfigError, match=r"give a space for \['clap'\]"):
        JointEmbedder(embedder.model, {"clip": embedder.spaces["clip"]})
    with pytest.raises(ConfigError, match="16-d"):
        JointEmbedder(embedder.model, {"clip": embedder.spaces["clip"], "clap": _Narrow()})


class _Narrow:
    name, dim = "narrow", 4


def test_similarity_softmax_rows_sum_to_one():
    rows = torch.nn.functional.normalize(torch.randn(3, 8), dim=-1)
    cosine, soft = similarity(rows, rows)
    torch.testing.assert_close(cosine.diagonal(), torch.ones(3))
    torch.testing.assert_close(soft.sum(dim=-1), torch.ones(3))


def test_cli_similarity_prints_the_demo_tables(model_dir, tiny_clip_dir, tiny_clap_dir, assets_dir, capsys):
    names = ["toilet", "BBQ", "train"]
    args = ["similarity", "--model", str(model_dir), "--space", f"clip=clip:{tiny_clip_dir}",
            "--space", f"clap=clap:{tiny_clap_dir}", "--device", "cpu",
            "--image", *[str(assets_dir / f"{n}.jpeg") for n in names],
            "--audio", *[str(assets_dir / f"{n}.wav") for n in names],
            "--text", "a toilet", "BBQ", "a train"]
    assert main(args) == 0
    text = capsys.readouterr().out
    for title in ("image x text: softmax(10 * cos)", "audio x text: cosine", "audio x image"):
        assert title in text
    assert main(args + ["--json"]) == 0
    tables = json.loads(capsys.readouterr().out)["tables"]
    assert [(t["rows"], t["columns"]) for t in tables] == [("image", "text"), ("audio", "text"),
                                                          ("audio", "image")]
    assert all(abs(sum(row) - 1) < 1e-5 for t in tables for row in t["softmax"])


def test_cli_similarity_needs_two_modalities(model_dir, capsys):
    assert main(["similarity", "--model", str(model_dir), "--text", "x"]) == 2
    assert "at least two" in capsys.readouterr().err


def test_column_headers_are_whole_and_aligned_with_their_values():
    from cmcr.cli.encoders import format_matrix

    table = {"row_labels": ["dog.wav", "clock.wav"],
             "column_labels": ["a fire crackles loudly", "a clock ticks", "x" * 60],
             "cosine": [[0.5, 0.25, -0.125], [0.1, 0.9, 0.0]]}
    lines = format_matrix("audio x text: cosine", table, "cosine").splitlines()
    assert "a fire crackles loudly" in lines[1] and "a clock ticks" in lines[1]
    assert "x" * 39 + "…" in lines[1] and "x" * 40 not in lines[1]
    for line in lines[2:]:  # each value ends where its header ends
        assert len(line) == len(lines[1])
    assert lines[1].index("a clock ticks") + len("a clock ticks") == lines[3].index("0.900") + 5
