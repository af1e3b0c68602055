"""bench/toy_geometry.py (the measurements behind docs/regimes.md' toy-geometry table) still
runs: every option on a tiny problem, one JSON line with the geometry it reports."""

import json
import subprocess
import sys
from pathlib import Path

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
