"""cmcr embed: inputs, errors file, workers, resume gives an identical store, the CLI."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from cmcr.cli import main
from cmcr.embed import ERRORS_FILE, collect_inputs, embed_items, grid_batches
from cmcr.errors import InputError, StoreError
from cmcr.spaces import load_space
from cmcr.data.store import open_store


class Interrupt(Exception):
    pass


@pytest.fixture(scope="module")
def clip(tiny_clip_dir):
    return load_space(f"clip:{tiny_clip_dir}", device="cpu")


def _store_files(path):
    return {p.name: p.read_bytes() for p in sorted(path.iterdir()) if p.name != "embed.json"}


def test_directory_inputs_are_sorted_relative_ids(image_dir):
    items = collect_inputs(image_dir, "image")
    ids = [item.id for item in items]
    assert ids == sorted(ids) and "sub/img00.jpg" in ids and "notes.md" not in ids
    assert len(ids) == 13


def test_file_list_input(tmp_path, image_dir):
    listing = tmp_path / "list.txt"
    listing.write_text(f"# images\n{image_dir / 'img01.jpg'}\n\n{image_dir / 'sub/img03.jpg'}\n")
    assert len(collect_inputs(listing, "image")) == 2
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no image files"):
        collect_inputs(tmp_path / "empty", "image")


def test_grid_batches_align_to_batch_size():
    assert grid_batches(5, 9, 4) == [[4, 5, 6, 7], [8]]


def test_unreadable_files_go_to_the_errors_file(clip, image_dir, tmp_path):
    summary = embed_items(clip, "image", collect_inputs(image_dir, "image"), tmp_path / "s",
                          batch_size=4, workers=0, progress=False)
    store = open_store(tmp_path / "s")
    assert summary.rows == len(store) == 11 and store.info.normalized is True
    assert (store.space, store.modality, store.dim) == (clip.name, "image", 16)
    np.testing.assert_allclose(np.linalg.norm(store.to_numpy(), axis=1), 1, atol=1e-5)
    errors = [json.loads(line) for line in (tmp_path / "s" / ERRORS_FILE).read_text().splitlines()]
    assert [e["id"] for e in errors] == ["img03b.jpg", "sub/zz.png"]
    assert all(e["path"].endswith(e["id"]) and "cannot decode image" in e["reason"] for e in errors)
    assert [e["id"] for e in summary.errors] == ["img03b.jpg", "sub/zz.png"]


def test_store_rows_equal_one_by_one_embedding(clip, image_dir, tmp_path):
    items = collect_inputs(image_dir, "image")
    embed_items(clip, "image", items, tmp_path / "s", batch_size=5, workers=0, progress=False)
    store = open_store(tmp_path / "s")
    single = np.concatenate([clip.embed("image", [image_dir / i]).numpy() for i in store.ids])
    np.testing.assert_allclose(store.to_numpy(), single, atol=1e-5)


def test_workers_give_the_same_store(clip, image_dir, tmp_path):
    items = collect_inputs(image_dir, "image")
    embed_items(clip, "image", items, tmp_path / "a", batch_size=4, workers=0, progress=False)
    embed_items(clip, "image", items, tmp_path / "b", batch_size=4, workers=2, progress=False)
    assert _store_files(tmp_path / "a") == _store_files(tmp_path / "b")


@pytest.mark.parametrize("stop_after", [0, 1, 2])
def test_resume_after_interruption_gives_an_identical_store(clip, image_dir, tmp_path, stop_after):
    items = collect_inputs(image_dir, "image")
    options = dict(batch_size=3, workers=0, shard_rows=4, progress=False)
    embed_items(clip, "image", items, tmp_path / "whole", **options)

    def interrupt(batch_number):
        if batch_number == stop_after:
            raise Interrupt

    with pytest.raises(Interrupt):
        embed_items(clip, "image", items, tmp_path / "resumed", on_batch=interrupt, **options)
    assert open_store(tmp_path / "resumed").info.complete is False
    summary = embed_items(clip, "image", items, tmp_path / "resumed", **options)
    assert _store_files(tmp_path / "resumed") == _store_files(tmp_path / "whole")
    whole, resumed = open_store(tmp_path / "whole"), open_store(tmp_path / "resumed")
    assert whole.ids == resumed.ids and np.array_equal(whole.to_numpy(), resumed.to_numpy())
    assert summary.rows == 11 and len(summary.errors) == 2


def test_complete_store_needs_overwrite(clip, tmp_path, assets_dir):
    items = collect_inputs(assets_dir, "image")
    embed_items(clip, "image", items, tmp_path / "s", workers=0, progress=False)
    with pytest.raises(StoreError, match="overwrite"):
        embed_items(clip, "image", items, tmp_path / "s", workers=0, progress=False)
    embed_items(clip, "image", items, tmp_path / "s", workers=0, progress=False, overwrite=True)


def test_cli_embeds_reference_images_and_reports_errors(tiny_clip_dir, assets_dir, tmp_path, capsys):
    folder = tmp_path / "in"
    shutil.copytree(assets_dir, folder)
    (folder / "bad.jpeg").write_bytes(b"oops")
    code = main(["embed", "--space", f"clip:{tiny_clip_dir}", "--modality", "image", "--input",
                 str(folder), "--out", str(tmp_path / "store"), "--workers", "0", "--quiet"])
    output = capsys.readouterr().out
    assert code == 0 and "stored 3 of 4 image embeddings" in output
    assert "bad.jpeg" in output and "errors.jsonl" in output
    assert open_store(tmp_path / "store").ids == ["BBQ.jpeg", "toilet.jpeg", "train.jpeg"]


def test_cli_embeds_texts_with_line_number_ids(tiny_clip_dir, tmp_path, capsys):
    texts = tmp_path / "captions.txt"
    texts.write_text("a dog\n\nun chat noir\n", encoding="utf-8")
    code = main(["embed", "--space", f"clip:{tiny_clip_dir}", "--modality", "text", "--input",
                 str(texts), "--out", str(tmp_path / "t"), "--workers", "0", "--quiet"])
    assert code == 0 and open_store(tmp_path / "t").ids == ["1", "3"]


def test_cli_bad_input_is_a_one_line_error(tiny_clip_dir, tmp_path, capsys):
    code = main(["embed", "--space", f"clip:{tiny_clip_dir}", "--modality", "image", "--input",
                 str(tmp_path / "nowhere"), "--out", str(tmp_path / "s"), "--quiet"])
    assert code == 2 and "no such file or directory" in capsys.readouterr().err


def test_a_second_run_into_the_same_store_is_refused_while_the_first_holds_it(clip, image_dir,
                                                                              tmp_path):
    from cmcr.data.store import store_lock

    items = collect_inputs(image_dir, "image")
    with store_lock(tmp_path / "out"):
        with pytest.raises(StoreError, match=r"another cmcr process \(pid \d+ on"):
            embed_items(clip, "image", items, tmp_path / "out", workers=0, progress=False)
    summary = embed_items(clip, "image", items, tmp_path / "out", workers=0, progress=False)
    assert summary.rows == 11 and not (tmp_path / "out" / ".cmcr-lock").exists()


def test_the_lock_of_a_process_that_is_gone_is_taken_over(clip, image_dir, tmp_path, capsys):
    import json
    import socket
    import subprocess

    gone = subprocess.Popen(["true"])
    gone.wait()
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / ".cmcr-lock").write_text(json.dumps(
        {"pid": gone.pid, "host": socket.gethostname(), "since": "earlier"}))
    summary = embed_items(clip, "image", collect_inputs(image_dir, "image"), tmp_path / "out",
                          workers=0, progress=False)
    assert summary.rows == 11
    assert f"taking over the lock of a process that is gone (pid {gone.pid})" in capsys.readouterr().err


def test_resuming_with_changed_inputs_is_refused_with_what_changed(clip, image_dir, tmp_path):
    import shutil

    inputs = shutil.copytree(image_dir, tmp_path / "inputs")
    options = dict(batch_size=3, workers=0, shard_rows=4, progress=False)

    def interrupt(batch_number):
        if batch_number == 2:
            raise Interrupt

    with pytest.raises(Interrupt):
        embed_items(clip, "image", collect_inputs(inputs, "image"), tmp_path / "out",
                    on_batch=interrupt, **options)
    (inputs / "img01.jpg").unlink()  # a stored item disappears
    shutil.copy(inputs / "img02.jpg", inputs / "img00b.jpg")  # and a new one comes before the cut
    with pytest.raises(StoreError, match=r"inputs changed .*13 items then, 13 now; stored items "
                                         r"no longer listed: 1 \(e\.g\. 'img01\.jpg'\)"):
        embed_items(clip, "image", collect_inputs(inputs, "image"), tmp_path / "out", **options)
    summary = embed_items(clip, "image", collect_inputs(inputs, "image"), tmp_path / "out",
                          overwrite=True, **options)
    assert summary.rows == 11 and "img00b.jpg" in open_store(tmp_path / "out").ids


def test_stores_record_the_space_as_named_and_its_weights_sha256(tmp_path, monkeypatch):
    """`clip:toy` stays `clip:toy` (the store moves with the project and loads wherever cmcr is
    installed); a local folder is recorded absolute; the weights' sha256 sits beside it."""
    import hashlib

    from cmcr.spaces import load_space
    from cmcr.world.toy_spaces import packaged_space_dir

    (tmp_path / "texts.txt").write_text("a drum\na kettle\n", encoding="utf-8")
    assert main(["embed", "--space", "clip:toy", "--modality", "text", "--input",
                 str(tmp_path / "texts.txt"), "--out", str(tmp_path / "store"), "--quiet",
                 "--device", "cpu"]) == 0
    manifest = json.loads((tmp_path / "store" / "store.json").read_text())
    weights = packaged_space_dir("clip") / "model.safetensors"
    assert manifest["space"] == "clip:toy"
    assert manifest["space_sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    monkeypatch.chdir(packaged_space_dir("clip").parent)
    assert load_space("clip:toy-clip").name == f"clip:{packaged_space_dir('clip').resolve()}"
    assert load_space("clip:openai/clip-vit-base-patch32").name == "clip:openai/clip-vit-base-patch32"
