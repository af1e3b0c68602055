"""bench/gpu_check.py: the GPU check runs its sections on the CPU, and says so without CUDA."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "gpu_check.py"


def load_script():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def run_script(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True,
                          timeout=timeout)


def test_cpu_quick_run_checks_every_section_and_passes(tmp_path):
    numbers_file = tmp_path / "numbers.json"
    result = run_script("--cpu", "--quick", "--json", str(numbers_file))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for title in ("== embed:", "== train:", "== search:"):
        assert title in result.stdout
    assert "FAIL" not in result.stdout
    assert result.stdout.rstrip().endswith("all checks passed")
    numbers = json.loads(numbers_file.read_text())["numbers"]
    for space, modality in (("clip", "image"), ("clip", "text"), ("clap", "audio"),
                            ("clap", "text")):
        for dtype in ("float16", "bfloat16"):  # half precision on the CPU, against float32
            assert numbers[f"embed/{space}/{modality}/{dtype}"]["min_cosine"] >= 0.999
    assert numbers["train/steps_per_s"] > 0
    assert numbers["search/torch top-k on cpu"]["recall"] >= 0.999


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")
def test_without_cuda_nothing_is_checked_and_it_exits_zero():
    result = run_script(timeout=120)
    assert result.returncode == 0
    assert "no CUDA device: nothing checked" in result.stdout
    assert "==" not in result.stdout


def test_row_cosines_and_recall_on_hand_made_numbers():
    gpu_check = load_script()
    reference = np.array([[1.0, 0.0], [0.0, 2.0]])
    candidate = np.array([[1.0, 1.0], [0.0, 3.0]])
    assert np.allclose(gpu_check.row_cosines(reference, candidate), [2 ** -0.5, 1.0])
    found, truth = np.array([[1, 2, 3], [4, 5, 6]]), np.array([[3, 2, 1], [4, 5, 9]])
    assert gpu_check.top_k_recall(found, truth) == pytest.approx((1 + 2 / 3) / 2)


def test_a_row_below_the_cosine_bound_is_a_failed_check():
    gpu_check = load_script()
    report = gpu_check.Report()
    reference = np.eye(4, 8, dtype=np.float32)
    drifted = reference.copy()
    drifted[2, 3] = 0.05  # cosine 0.9988 with its float32 row
    for rows in (reference, drifted):
        gpu_check._report_embed_row(report, SimpleNamespace(min_cosine=0.999), "clip", "image",
                                    "bfloat16", "cpu", "cpu", rows, reference, 1.0, 1.0)
    assert len(report.failures) == 1 and "min 0.998" in report.failures[0]
