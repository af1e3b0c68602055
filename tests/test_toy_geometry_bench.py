"""bench/toy_geometry.py (the measurements behind docs/regimes.md' toy-geometry table) still
runs: every option on a tiny problem, one JSON line with the geometry it reports."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from cmcr.world.concepts import COLOURS

BENCH = Path(__file__).resolve().parents[1] / "bench" / "toy_geometry.py"


def test_the_toy_geometry_bench_runs_and_reports_the_geometry():
    run = subprocess.run([sys.executable, str(BENCH), "--train", "128", "--test", "64",
                          "--epochs", "1", "--factors", "frame,bg,badge", "--palette", "48",
                          "--batch-size", "64", "--hard-batches"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    line = [row for row in run.stdout.splitlines() if row.startswith("{")][-1]
    result = json.loads(line)
    assert result["factors"] == ["badge", "bg", "frame"] and result["palette"] == 48
    assert result["hard_batches"] is True
    for key in ("effective_dim", "effective_dim_text", "modality_gap", "matched_cosine",
                "within_cosine", "gap_stability", "i2t_r1"):
        assert isinstance(result[key], float), key
    assert 1.0 <= result["effective_dim"] <= 512 and 0.0 <= result["i2t_r1"] <= 1.0


def test_the_grid_world_draws_what_its_captions_name(tmp_path):
    sys.path.insert(0, str(BENCH.parent))
    try:
        from toy_geometry import CELL_WORDS, GLYPHS, grid_board, make_grid_pairs
    finally:
        sys.path.remove(str(BENCH.parent))

    paths, captions, first = make_grid_pairs(3, 4, 2, 4, tmp_path)
    for path, caption, first_value in zip(paths, captions, first):
        words = caption.split()
        assert words[0::2] == list(CELL_WORDS[:4]) and words[1] == first_value
        pixels = np.asarray(Image.open(path), np.int32)
        for cell, name in enumerate(words[1::2]):  # each cell's centre is its named colour
            row, column = divmod(cell, 2)
            centre = pixels[row * 32 + 16, column * 32 + 16]
            assert np.abs(centre - np.array(COLOURS[name])).max() <= 20, (caption, cell)
    glyph_boards = [grid_board(np.array([value] * 4), 2, glyphs=True) for value in range(5)]
    assert len({board.tobytes() for board in glyph_boards}) == len(GLYPHS)


def test_the_toy_geometry_bench_runs_on_the_grid_world():
    run = subprocess.run([sys.executable, str(BENCH), "--world", "grid", "--grid", "2",
                          "--values", "3", "--glyphs", "--train", "128", "--test", "64",
                          "--epochs", "1", "--batch-size", "64"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads([row for row in run.stdout.splitlines() if row.startswith("{")][-1])
    assert result["world"] == "grid" and result["glyphs"] is True
    shares = result["image_spectrum_pct"]
    assert len(shares) == 12 and shares == sorted(shares, reverse=True) and sum(shares) <= 100.5
