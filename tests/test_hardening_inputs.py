"""Careless and hostile inputs to cmcr embed (issue items 13 and 14): texts split only at \\n,
CSV quotes that never close, JSON values that are not strings, inputs holding no items, special
files (dangling links, link loops, FIFOs, devices) and non-finite float images."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cmcr.cli import main
from cmcr.embed import ERRORS_FILE, collect_inputs
from cmcr.errors import InputError
from cmcr.data.processing import load_audio, load_image, read_texts
from cmcr.spaces import load_space
from cmcr.data.store import open_store

SEPARATORS = "\u2028\u2029\x0c\x0b\x1c\x1d\x1e\x85"  # str.splitlines breaks at all of these


@pytest.fixture(scope="module")
def clip(tiny_clip_dir):
    return load_space(f"clip:{tiny_clip_dir}", device="cpu")


def embed_cli(tiny_clip_dir, modality: str, source: Path, out: Path) -> int:
    return main(["embed", "--space", f"clip:{tiny_clip_dir}", "--modality", modality,
                 "--input", str(source), "--out", str(out), "--workers", "0", "--quiet"])


def save_png(path: Path, seed: int = 0) -> Path:
    pixels = np.random.default_rng(seed).integers(0, 255, (10, 12, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


@contextlib.contextmanager
def fails_instead_of_hanging(fifo: Path, grace: float = 2.0):
    """If the code under test opens ``fifo`` for reading (which blocks until a writer comes), a
    writer comes after ``grace`` s and leaves at once, so the read ends and the test fails."""
    stop, opened = threading.Event(), threading.Event()

    def unblock() -> None:
        if stop.wait(grace):
            return
        while not stop.is_set():
            try:
                descriptor = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)  # ENXIO: no reader
            except OSError:
                stop.wait(0.05)
                continue
            opened.set()
            os.close(descriptor)

    watchdog = threading.Thread(target=unblock, daemon=True)
    watchdog.start()
    try:
        yield
    finally:
        stop.set()
        watchdog.join()
    assert not opened.is_set(), f"{fifo} was opened for reading: without a writer it blocks forever"


# -- item 13: texts ------------------------------------------------------------------------------
def test_txt_lines_end_only_at_newline_and_keep_other_separators(tmp_path):
    path = tmp_path / "captions.txt"
    path.write_text(f"a{SEPARATORS}b\r\nsecond\r\n\r\nlast", encoding="utf-8")
    assert read_texts(path) == [("1", f"a{SEPARATORS}b"), ("2", "second"), ("4", "last")]


def test_cli_text_ids_do_not_shift_after_a_line_separator(tiny_clip_dir, tmp_path):
    path = tmp_path / "captions.txt"
    path.write_text("one\u2028still one\ntwo\x0cstill two\nthree\n", encoding="utf-8")
    assert embed_cli(tiny_clip_dir, "text", path, tmp_path / "s") == 0
    store = open_store(tmp_path / "s")
    assert store.ids == ["1", "2", "3"]
    texts = [row["text"] for row in store.metadata()]
    assert texts == ["one\u2028still one", "two\x0cstill two", "three"]


def test_jsonl_and_csv_keep_line_separators_inside_a_text(tmp_path):
    jsonl = tmp_path / "t.jsonl"
    jsonl.write_text('{"text": "a\u2028b"}\n{"text": "c\x85d"}\n', encoding="utf-8")
    assert read_texts(jsonl) == [("1", "a\u2028b"), ("2", "c\x85d")]
    table = tmp_path / "t.csv"
    table.write_text('id,text\r\nx,"a\u2028b"\r\ny,"two\nlines"\r\n\r\nz,"say ""hi"", ok"\r\n',
                     encoding="utf-8")
    assert read_texts(table, id_column="id") == [("x", "a\u2028b"), ("y", "two\nlines"),
                                                ("z", 'say "hi", ok')]


@pytest.mark.parametrize("text, line", [
    ('id,text\n1,"hello\n2,world\n3,rain\n', 2),             # runs to the end of the file
    ('id,text\n1,ok\n2,"two\nlines"\n3,"open\n4,b\n', 5),  # after a good multi-line field
])
def test_csv_unclosed_quote_names_the_line_it_starts_on(tmp_path, text, line):
    path = tmp_path / "broken.csv"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(InputError, match=rf"broken\.csv, line {line}: unclosed quote"):
        read_texts(path)


def test_csv_quote_closed_rows_later_is_refused_naming_both_lines(tmp_path):
    path = tmp_path / "broken.csv"
    path.write_text('id,text\n1,"hello\n2,world\n3,"x"\n4,y\n', encoding="utf-8")
    with pytest.raises(InputError, match=r"broken\.csv, line 4: malformed CSV .*row starts on "
                                         r"line 2: is a quote left open"):
        read_texts(path)


def test_csv_row_with_an_unquoted_comma_is_refused(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("id,text\n1,fine\n2,hello, world\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"t\.csv, line 3: 3 fields, the header has 2"):
        read_texts(path)


@pytest.mark.parametrize("value, kind", [
    (42, "a number"), (1.5, "a number"), (["a", "b"], "an array"), ({"a": 1}, "an object"),
    (None, "null"), (True, "a boolean")])
def test_jsonl_text_that_is_not_a_string_is_refused(tmp_path, capsys, tiny_clip_dir, value, kind):
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps({"text": "fine"}) + "\n" + json.dumps({"text": value}) + "\n",
                    encoding="utf-8")
    with pytest.raises(InputError, match=rf"t\.jsonl, line 2: the 'text' value is {kind}\b"):
        read_texts(path)
    assert embed_cli(tiny_clip_dir, "text", path, tmp_path / "s") == 2
    assert "t.jsonl, line 2: the 'text' value is" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


def test_jsonl_id_that_is_not_a_string_or_integer_is_refused(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text('{"key": 7, "text": "a"}\n{"key": null, "text": "b"}\n', encoding="utf-8")
    with pytest.raises(InputError, match=r"t\.jsonl, line 2: the 'key' value is null, not a "
                                         "string or an integer"):
        read_texts(path, id_column="key")


def test_parquet_text_column_must_hold_strings(tmp_path):
    pa = pytest.importorskip("pyarrow", reason="pyarrow not installed (optional)")
    import pyarrow.parquet as pq

    numbers, blobs, nulls = tmp_path / "n.parquet", tmp_path / "b.parquet", tmp_path / "z.parquet"
    pq.write_table(pa.table({"text": [3, 4]}), numbers)
    pq.write_table(pa.table({"text": [b"x"]}), blobs)
    pq.write_table(pa.table({"text": [None, "kept"]}), nulls)
    with pytest.raises(InputError, match=r"n\.parquet, row 1: the 'text' value is a number \(3\)"):
        read_texts(numbers)
    with pytest.raises(InputError, match=r"b\.parquet, row 1: the 'text' value is a bytes"):
        read_texts(blobs)
    assert read_texts(nulls) == [("2", "kept")]  # a parquet null is a missing text, as documented


@pytest.mark.parametrize("name, content", [
    ("empty.txt", ""), ("blank.txt", "\n  \n\u2028\n"), ("header.csv", "id,text\n"),
    ("empty.jsonl", ""), ("empties.jsonl", '{"text": ""}\n\n')])
def test_a_text_input_holding_no_items_is_refused(tiny_clip_dir, tmp_path, capsys, name, content):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    assert embed_cli(tiny_clip_dir, "text", path, tmp_path / "s") == 2
    assert f"cmcr: error: {path}: holds no items" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


def test_an_empty_folder_or_file_list_is_refused(tiny_clip_dir, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    listing = tmp_path / "list.txt"
    listing.write_text("# nothing yet\n\n", encoding="utf-8")
    for source in (tmp_path / "empty", listing):
        assert embed_cli(tiny_clip_dir, "image", source, tmp_path / "s") == 2
        assert f"cmcr: error: {source}: holds no items" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


def test_file_list_lines_end_only_at_newline(tmp_path):
    odd = save_png(tmp_path / "a\u2028b.png")
    listing = tmp_path / "list.txt"
    listing.write_text(f"{odd.name}\r\n", encoding="utf-8")
    assert [(i.id, i.source) for i in collect_inputs(listing, "image")] == [(odd.name, str(odd))]


# -- item 14: special files ----------------------------------------------------------------------
@pytest.fixture
def special_folder(tmp_path):
    """Two good images (one through a link), and one of each special file that cannot be read."""
    root = tmp_path / "in"
    (root / "sub").mkdir(parents=True)
    save_png(root / "good.png")
    save_png(root / "sub" / "deep.png", 1)
    os.symlink(root / "good.png", root / "alias.png")
    os.symlink("nowhere.png", root / "dangling.png")
    os.symlink("self.png", root / "self.png")
    os.symlink("pong.png", root / "ping.png")
    os.symlink("ping.png", root / "pong.png")
    os.symlink("..", root / "sub" / "up")  # a directory loop: never walked into
    os.symlink(os.devnull, root / "device.png")
    os.mkfifo(root / "pipe.png")
    return root


def test_special_files_in_a_folder_are_recorded_and_good_files_kept(tiny_clip_dir, tmp_path,
                                                                    special_folder, capsys):
    with fails_instead_of_hanging(special_folder / "pipe.png"):
        code = embed_cli(tiny_clip_dir, "image", special_folder, tmp_path / "s")
    assert code == 0
    assert "stored 3 of 9 image embeddings" in capsys.readouterr().out
    assert open_store(tmp_path / "s").ids == ["alias.png", "good.png", "sub/deep.png"]
    errors = {e["id"]: e for e in map(json.loads, open(tmp_path / "s" / ERRORS_FILE))}
    reasons = {item_id: e["reason"].removeprefix(f"{e['path']}: ") for item_id, e in errors.items()}
    assert reasons == {
        "dangling.png": "dangling symbolic link (its target 'nowhere.png' does not exist)",
        "device.png": "not a regular file (character device)",
        "ping.png": "symbolic link loop", "pong.png": "symbolic link loop",
        "self.png": "symbolic link loop", "pipe.png": "not a regular file (FIFO)"}
    paths = {item_id: e["path"] for item_id, e in errors.items()}
    assert paths.pop("device.png") == os.devnull  # a link that leads somewhere is followed
    assert paths == {item_id: str(special_folder.resolve() / item_id) for item_id in paths}


def test_a_socket_in_a_folder_is_recorded(tiny_clip_dir, tmp_path):
    root = tmp_path / "in"
    root.mkdir()
    save_png(root / "good.png")
    with socket.socket(socket.AF_UNIX) as server:
        try:
            server.bind(str(root / "s.png"))
        except OSError as err:  # a path longer than sun_path allows
            pytest.skip(f"cannot make a socket here: {err}")
        assert embed_cli(tiny_clip_dir, "image", root, tmp_path / "s") == 0
    [error] = map(json.loads, open(tmp_path / "s" / ERRORS_FILE))
    assert error["id"] == "s.png" and error["reason"].endswith(": not a regular file (socket)")


def test_a_fifo_in_a_file_list_is_recorded(tiny_clip_dir, tmp_path):
    save_png(tmp_path / "good.png")
    os.mkfifo(tmp_path / "pipe.png")
    listing = tmp_path / "list.txt"
    listing.write_text("good.png\npipe.png\n", encoding="utf-8")
    with fails_instead_of_hanging(tmp_path / "pipe.png"):
        assert embed_cli(tiny_clip_dir, "image", listing, tmp_path / "s") == 0
    assert open_store(tmp_path / "s").ids == ["good.png"]
    [error] = map(json.loads, open(tmp_path / "s" / ERRORS_FILE))
    assert error == {"index": 1, "id": "pipe.png", "path": str(tmp_path / "pipe.png"),
                     "reason": f"{tmp_path / 'pipe.png'}: not a regular file (FIFO)"}


@pytest.mark.parametrize("name", ["pipe.png", "pipe.wav", "pipe.txt", "pipe.csv", "pipe.mp4"])
def test_a_fifo_given_directly_is_refused_without_opening_it(tmp_path, name):
    fifo = tmp_path / name
    os.mkfifo(fifo)
    refused = rf"{name}: not a regular file \(FIFO\)"
    with fails_instead_of_hanging(fifo):
        if name.endswith((".png", ".mp4")):
            with pytest.raises(InputError, match=refused):
                load_image(fifo)
            with pytest.raises(InputError, match=refused):
                collect_inputs(fifo, "image")
        if name.endswith((".wav", ".mp4")):
            with pytest.raises(InputError, match=refused):
                load_audio(fifo, 48000)
        if name.endswith((".txt", ".csv")):
            with pytest.raises(InputError, match=refused):
                read_texts(fifo)
        if name.endswith(".txt"):  # a file list
            with pytest.raises(InputError, match=refused):
                collect_inputs(fifo, "image")


def test_broken_links_given_directly_say_what_is_wrong(tmp_path):
    os.symlink("missing.png", tmp_path / "dangling.png")
    os.symlink("loop.png", tmp_path / "loop.png")
    with pytest.raises(InputError, match=r"dangling\.png: dangling symbolic link"):
        load_image(tmp_path / "dangling.png")
    with pytest.raises(InputError, match=r"loop\.png: symbolic link loop"):
        collect_inputs(tmp_path / "loop.png", "image")
    with pytest.raises(InputError, match=r"loop\.png: symbolic link loop"):
        load_audio(tmp_path / "loop.png", 48000)


@pytest.mark.parametrize("flag", ["--image", "--audio"])
def test_cli_similarity_refuses_a_fifo(tiny_joint_model_dir, tiny_clip_dir, tiny_clap_dir,
                                       tmp_path, capsys, flag):
    fifo = tmp_path / ("pipe.png" if flag == "--image" else "pipe.wav")
    os.mkfifo(fifo)
    with fails_instead_of_hanging(fifo):
        code = main(["similarity", "--model", str(tiny_joint_model_dir),
                     "--space", f"clip=clip:{tiny_clip_dir}", "--space", f"clap=clap:{tiny_clap_dir}",
                     "--device", "cpu", flag, str(fifo), "--text", "a dog"])
    assert code == 2
    assert f"cmcr: error: {fifo}: not a regular file (FIFO)" in capsys.readouterr().err


# -- item 14: non-finite images ------------------------------------------------------------------
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_a_float_image_with_non_finite_pixels_is_refused(tmp_path, bad):
    pixels = np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)
    pixels[3, 4] = bad
    path = tmp_path / "float.tif"
    Image.fromarray(pixels).save(path)
    with pytest.raises(InputError, match=r"float\.tif: the image holds NaN or infinite pixel"):
        load_image(path)
    Image.fromarray(np.full((8, 8), np.nan, np.float32)).save(path)
    with pytest.raises(InputError, match=r"float\.tif: the image holds NaN"):
        load_image(path)


def test_a_nan_array_image_is_refused_by_the_library(clip):
    good = clip.embed("image", [np.linspace(0, 255, 64, dtype=np.float32).reshape(8, 8)])
    assert torch.isfinite(good).all()
    with pytest.raises(InputError, match="<image>: the image holds NaN or infinite"):
        clip.embed("image", [np.full((8, 8), np.nan, np.float32)])


def test_a_nan_image_in_a_folder_is_recorded_and_good_files_kept(tiny_clip_dir, tmp_path):
    root = tmp_path / "in"
    root.mkdir()
    save_png(root / "good.png")
    Image.fromarray(np.full((8, 8), np.nan, np.float32)).save(root / "nan.tif")
    assert embed_cli(tiny_clip_dir, "image", root, tmp_path / "s") == 0
    assert open_store(tmp_path / "s").ids == ["good.png"]
    [error] = map(json.loads, open(tmp_path / "s" / ERRORS_FILE))
    assert error["id"] == "nan.tif" and "the image holds NaN or infinite" in error["reason"]
