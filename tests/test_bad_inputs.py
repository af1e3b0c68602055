"""The bad-input corpus (issue 9, second part): config values out of range, a loss gone NaN,
file names that are not UTF-8, a cut errors.jsonl, a full disk, damaged ids, out-of-range
options, and the rule that a failing command prints one line, never a traceback (--debug does).

Every case is generated here, small, and asserts the exact outcome: exit code, the key or file
named in the message, what was kept."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cmcr.cli import main
from cmcr.embed import ERRORS_FILE, collect_inputs, embed_items, read_errors
from cmcr.errors import StoreError
from cmcr.spaces import load_space
from cmcr.data.store import open_store, write_store

CONNECT_YAML = """\
spaces:
  clip: {queries: a}
  clap: {queries: b}
"""

BAD_VALUES = [
    ("train.batch_size", "-5", "'train.batch_size' must be >= 2, got -5"),
    ("train.batch_size", "0", "'train.batch_size' must be >= 2, got 0"),
    ("train.epochs", "0", "'train.epochs' must be >= 1, got 0"),
    ("train.epochs", "-3", "'train.epochs' must be >= 1, got -3"),
    ("train.lr", ".nan", "'train.lr' must be a finite number, got nan"),
    ("train.weight_decay", "-1", "'train.weight_decay' must be >= 0, got -1.0"),
    ("train.seed", str(2**64), "'train.seed' must be in [0, 4294967295]"),
    ("train.min_lr_ratio", "1.5", "'train.min_lr_ratio' must be in [0, 1], got 1.5"),
    ("method.temperature", "0", "'method.temperature' must be > 0, got 0.0"),
    ("method.memory_temperature", "0", "'method.memory_temperature' must be > 0, got 0.0"),
    ("method.intra_weight", ".inf", "'method.intra_weight' must be a finite number, got inf"),
    ("method.memory_top_k", "0", "'method.memory_top_k' must be >= 1, got 0"),
    ("method.memory_top_k", "-4", "'method.memory_top_k' must be >= 1, got -4"),
    ("method.noise_var", "-1", "'method.noise_var' must be >= 0, got -1.0"),
    ("projector.layers", "0", "'projector.layers' must be >= 1, got 0"),
    ("projector.hidden", "-8", "'projector.hidden' must be in [1, 65536], got -8"),
    ("projector.out_dim", "0", "'projector.out_dim' must be in [1, 65536], got 0"),
    ("projector.dropout", "2", "'projector.dropout' must be in [0, 1), got 2.0"),
]


@pytest.mark.parametrize("key, value, words", BAD_VALUES, ids=[f"{k}={v}" for k, v, _ in BAD_VALUES])
def test_config_values_out_of_range_are_refused_naming_key_value_and_range(
        tmp_path, capsys, key, value, words):
    config = tmp_path / "connect.yaml"
    config.write_text(CONNECT_YAML)
    code = main(["connect", str(config), "--out", str(tmp_path / "out"), "--set", f"{key}={value}"])
    err = capsys.readouterr().err
    assert code == 2 and words in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_the_same_ranges_hold_for_configs_built_in_python():
    from cmcr.config import ConfigError, MethodConfig, ProjectorConfig, TrainConfig

    with pytest.raises(ConfigError, match="'train.batch_size' must be >= 2"):
        TrainConfig(batch_size=1)
    with pytest.raises(ConfigError, match="'method.temperature' must be > 0"):
        MethodConfig(temperature=-0.1)
    with pytest.raises(ConfigError, match="'projector.dropout' must be in"):
        ProjectorConfig(dropout=1.0)


def test_a_config_that_is_not_utf8_is_named(tmp_path, capsys):
    config = tmp_path / "latin1.yaml"
    config.write_bytes(CONNECT_YAML.encode() + "# caf\xe9\n".encode("latin-1"))
    assert main(["connect", str(config), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert f"{config}: not UTF-8 text" in err and "0xe9" in err


def test_a_loss_gone_nan_stops_training_naming_epoch_and_step_and_saves_nothing(tmp_path, capsys):
    out = tmp_path / "example"
    code = main(["example", "--out", str(out), "--epochs", "2", "--quiet",
                 "--set", "method.temperature=1e-40"])
    err = capsys.readouterr().err
    assert code == 2
    assert "epoch 1, step 1: the loss is not finite (total = nan" in err
    assert "nothing of this epoch was saved" in err
    assert not (out / "model" / "model.safetensors").exists()
    assert not (out / "model" / "training" / "checkpoint.pt").exists()


# -- embed: names that are not UTF-8, a cut errors.jsonl, a full disk ------------------------------
@pytest.fixture(scope="module")
def clip(tiny_clip_dir):
    return load_space(f"clip:{tiny_clip_dir}", device="cpu")


def _jpeg(path, seed: int) -> None:
    pixels = np.random.default_rng(seed).integers(0, 255, (16, 16, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


def test_files_named_in_bytes_that_are_not_utf8_are_stored_and_recorded(tiny_clip_dir, tmp_path,
                                                                        capsys):
    folder = tmp_path / "images"
    folder.mkdir()
    _jpeg(folder / "good.jpg", 0)
    _jpeg(os.fsdecode(bytes(folder) + b"/gr\xfcn.jpg"), 1)  # Latin-1 "grün": not UTF-8
    Path(os.fsdecode(bytes(folder) + b"/kaputt\xff.jpg")).write_bytes(b"\xff\xd8 not a jpeg")
    out = tmp_path / "store"
    argv = ["embed", "--space", f"clip:{tiny_clip_dir}", "--modality", "image", "--input",
            str(folder), "--out", str(out), "--workers", "0", "--quiet"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    store = open_store(out)
    assert len(store) == 2 and "gr\udcfcn.jpg" in store.ids
    (record,) = read_errors(out)
    assert record["id"] == "kaputt\udcff.jpg" and os.path.lexists(record["path"])
    (out / ERRORS_FILE).read_bytes().decode("ascii")  # escaped: valid UTF-8 (and ASCII)


def test_a_cut_last_line_of_errors_jsonl_does_not_break_the_resume(clip, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for index in range(6):
        _jpeg(folder / f"img{index}.jpg", index)
    (folder / "img1b.jpg").write_bytes(b"broken")
    (folder / "img4b.jpg").write_bytes(b"broken")
    items = collect_inputs(folder, "image")
    options = dict(batch_size=2, workers=0, shard_rows=2, progress=False)
    whole = embed_items(clip, "image", items, tmp_path / "whole", **options)

    def stop(batch_number):
        if batch_number == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        embed_items(clip, "image", items, tmp_path / "cut", on_batch=stop, **options)
    with open(tmp_path / "cut" / ERRORS_FILE, "a", encoding="utf-8") as log:
        log.write('{"index": 5, "id": "img4b.jp')  # what a full disk leaves
    resumed = embed_items(clip, "image", items, tmp_path / "cut", **options)
    assert resumed.errors == whole.errors and len(whole.errors) == 2
    assert (tmp_path / "cut" / ERRORS_FILE).read_bytes() == (tmp_path / "whole" / ERRORS_FILE).read_bytes()


def test_a_damaged_line_inside_errors_jsonl_is_named(tmp_path):
    (tmp_path / ERRORS_FILE).write_text('{"index": 0}\nnot json\n{"index": 2}\n')
    with pytest.raises(StoreError, match=r"errors.jsonl, line 2: not a JSON record"):
        read_errors(tmp_path)


def _texts(tmp_path, count: int) -> Path:
    path = tmp_path / "texts.txt"
    path.write_text("".join(f"a photo of thing number {i}\n" for i in range(count)))
    return path


def _store_bytes(path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(path.iterdir())
            if p.name.endswith((".npy", ".jsonl")) or p.name == "store.json"}


def test_a_full_disk_stops_with_a_message_leaves_no_tmp_files_and_resumes(clip, tmp_path,
                                                                         monkeypatch):
    items = collect_inputs(_texts(tmp_path, 40), "text")
    options = dict(batch_size=8, workers=0, shard_rows=8, progress=False)
    embed_items(clip, "text", items, tmp_path / "whole", **options)
    real_save, calls = np.save, []

    def save_until_the_disk_is_full(handle, matrix, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            handle.write(b"\x93NUMPY half a shard")
            raise OSError(errno.ENOSPC, "No space left on device", handle.name)
        return real_save(handle, matrix, *args, **kwargs)

    monkeypatch.setattr(np, "save", save_until_the_disk_is_full)
    with pytest.raises(StoreError, match=r"the disk is full .*16 rows are safely stored: free some "
                                         r"space and re-run the same command to resume"):
        embed_items(clip, "text", items, tmp_path / "full", **options)
    assert not list((tmp_path / "full").glob("*.tmp"))
    assert open_store(tmp_path / "full").info.num_rows == 16
    monkeypatch.setattr(np, "save", real_save)
    embed_items(clip, "text", items, tmp_path / "full", **options)
    assert _store_bytes(tmp_path / "full") == _store_bytes(tmp_path / "whole")


def _mount_tmpfs(path: Path, size: str) -> bool:
    path.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True)
    return done.returncode == 0


def test_a_really_full_filesystem_through_the_command_line(tiny_clip_dir, tmp_path):
    """The same on a real 512 KiB tmpfs, where the machine lets us mount one (root in CI)."""
    disk = tmp_path / "disk"
    if not _mount_tmpfs(disk, "512k"):
        pytest.skip("mounting a tmpfs is not permitted here; the injected ENOSPC test covers it")
    try:
        texts = _texts(tmp_path, 1500)
        filler = disk / "filler"
        filler.write_bytes(b"\0" * (420 * 1024))
        argv = [sys.executable, "-m", "cmcr", "embed", "--space", f"clip:{tiny_clip_dir}",
                "--modality", "text", "--input", str(texts), "--out", str(disk / "store"),
                "--workers", "0", "--shard-rows", "256", "--quiet"]
        full = subprocess.run(argv, capture_output=True, text=True)
        assert full.returncode == 2, full.stderr
        assert "the disk is full" in full.stderr and "Traceback" not in full.stderr
        assert not list((disk / "store").glob("*.tmp"))
        kept = open_store(disk / "store").info.num_rows
        assert kept > 0 and kept % 256 == 0
        filler.unlink()
        resumed = subprocess.run(argv, capture_output=True, text=True)
        assert resumed.returncode == 0, resumed.stderr
        assert len(open_store(disk / "store")) == 1500
    finally:
        subprocess.run(["umount", str(disk)], capture_output=True)


# -- damaged ids ---------------------------------------------------------------------------------
def _store(tmp_path, ids) -> Path:
    rows = np.eye(len(ids), 4, dtype=np.float32)
    return write_store(tmp_path / "store", rows, ids, space="clip:x", modality="text").path


def test_duplicate_ids_in_a_store_are_refused_naming_the_rows(tmp_path, capsys):
    path = _store(tmp_path, ["a", "b", "c"])
    (path / "ids-00000.jsonl").write_text('"a"\n"b"\n"a"\n')
    assert main(["store", "info", str(path)]) == 2
    assert "id 'a' is used by rows 0 and 2; ids in a store must be unique" in capsys.readouterr().err


@pytest.mark.parametrize("text, words", [('"a"\n"b"\n', "holds 2 ids lines, its shard has 3 rows"),
                                         ('"a"\n7\n"c"\n', "line 2: expected a JSON string, got int")])
def test_an_ids_file_that_does_not_match_its_shard_is_named(tmp_path, text, words):
    path = _store(tmp_path, ["a", "b", "c"])
    (path / "ids-00000.jsonl").write_text(text)
    with pytest.raises(StoreError, match=f"ids-00000.jsonl.*{words}"):
        open_store(path).ids


def test_duplicate_ids_from_an_id_column_are_refused(tiny_clip_dir, tmp_path, capsys):
    table = tmp_path / "captions.csv"
    table.write_text("key,caption\nk1,a dog\nk2,a cat\nk1,a bird\n")
    code = main(["embed", "--space", f"clip:{tiny_clip_dir}", "--modality", "text", "--input",
                 str(table), "--column", "caption", "--id-column", "key", "--out",
                 str(tmp_path / "s"), "--quiet"])
    assert code == 2
    assert "'k1' is listed twice; ids must be unique" in capsys.readouterr().err


# -- options out of range ------------------------------------------------------------------------
BAD_OPTIONS = [
    (["embed", "--space", "clip:toy", "--modality", "text", "--input", "x", "--out", "y",
      "--workers", "-3"], "argument --workers: must be >= 0, got -3"),
    (["embed", "--space", "clip:toy", "--modality", "text", "--input", "x", "--out", "y",
      "--batch-size", "0"], "argument --batch-size: must be >= 1, got 0"),
    (["demo", "--scale", "0"], "argument --scale: must be in [0.1, 10], got 0"),
    (["demo", "--scale", "-1"], "argument --scale: must be in [0.1, 10], got -1"),
    (["demo", "--scale", "1e-9"], "argument --scale: must be in [0.1, 10], got 1e-9"),
    (["demo", "--scale", "nan"], "argument --scale: must be in [0.1, 10], got nan"),
    (["demo", "--epochs", "-1"], "argument --epochs: must be >= 1, got -1"),
    (["demo", "--seed", "-2"], "argument --seed: must be in [0, 4294967295], got -2"),
    (["search", "idx", "--text", "a", "-k", "0"], "argument -k: must be >= 1, got 0"),
    (["serve", "idx", "--port", "70000"], "argument --port: must be in [0, 65535], got 70000"),
    (["eval", "zero-shot", "--limit", "zero"], "argument --limit: must be a whole number >= 1"),
]


@pytest.mark.parametrize("argv, words", BAD_OPTIONS, ids=[" ".join(a[:1] + a[-2:]) for a, _ in BAD_OPTIONS])
def test_options_out_of_range_are_refused_before_anything_runs(capsys, argv, words):
    with pytest.raises(SystemExit) as caught:
        main(argv)
    assert caught.value.code == 2
    assert words in capsys.readouterr().err


def test_an_out_that_is_a_file_is_named(tiny_clip_dir, tmp_path, capsys):
    texts, out = _texts(tmp_path, 3), tmp_path / "notes.txt"
    out.write_text("my notes")
    code = main(["embed", "--space", f"clip:{tiny_clip_dir}", "--modality", "text", "--input",
                 str(texts), "--out", str(out), "--quiet"])
    assert code == 2
    assert f"{out}: is a file, not a folder" in capsys.readouterr().err
    assert out.read_text() == "my notes"


# -- no traceback reaches a user -----------------------------------------------------------------
def _failing_command(error: BaseException):
    def run(args):
        raise error
    return run


@pytest.mark.parametrize("error, code, words", [
    (RuntimeError("something inside broke"), 1,
     "cmcr: internal error: RuntimeError: something inside broke"),
    (OSError(errno.EACCES, "Permission denied", "/data/x.npy"), 2,
     "cmcr: error: /data/x.npy: Permission denied"),
    (MemoryError(), 2, "cmcr: error: out of memory"),
])
def test_any_failure_is_one_line_and_debug_shows_the_traceback(monkeypatch, capsys, error, code,
                                                               words):
    import cmcr.cli.core as core

    monkeypatch.setattr(core, "run_store_info", _failing_command(error))
    assert main(["store", "info", "x"]) == code
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err and len(err.strip().splitlines()) <= 2
    with pytest.raises(type(error)):
        main(["store", "info", "x", "--debug"])


def test_a_real_process_prints_one_line_not_a_traceback(tmp_path):
    missing = tmp_path / f"no-such-{uuid.uuid4().hex}"
    done = subprocess.run([sys.executable, "-m", "cmcr", "store", "info", str(missing)],
                          capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.startswith("cmcr: error: ")
    assert "Traceback" not in done.stderr
    debug = subprocess.run([sys.executable, "-m", "cmcr", "--debug", "store", "info", str(missing)],
                           capture_output=True, text=True)
    assert "Traceback" in debug.stderr and "StoreError" in debug.stderr
