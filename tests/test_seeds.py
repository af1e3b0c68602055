"""Aggregating demo runs over world seeds, on hand-made metrics."""

import pytest

from cmcr.world.report import seeds_summary_text
from cmcr.world.seeds import aggregate


def _run(seed: int, cmcr_r1: float, ablated_r1: float, significant: bool) -> dict:
    def direction(r1):
        return {"R@1": r1, "R@5": 80.0, "R@10": 90.0, "mAP": 40.0,
                "ci95": {k: [0.0, 100.0] for k in ("R@1", "R@5", "R@10", "mAP")}}

    effect = {k: {"effect": 0.0, "ci95": [-1.0, 1.0], "significant": False}
              for k in ("R@1", "R@5", "R@10", "mAP")}
    effect["R@1"] = {"effect": cmcr_r1 - ablated_r1, "ci95": [1.0, 9.0], "significant": significant}
    return {"seed": seed, "test_pairs": 300,
            "methods": {"cmcr": {"audio_to_image": direction(cmcr_r1),
                                 "image_to_audio": direction(cmcr_r1)},
                        "no_noise": {"audio_to_image": direction(ablated_r1),
                                     "image_to_audio": direction(ablated_r1)}},
            "components": {"noise": {"ablation": "no_noise", "audio_to_image": effect,
                                     "image_to_audio": effect}},
            "regime": {"clip": {"dim": 32, "noise_var": 0.004, "modality_gap": 0.1 * seed,
                                "matched_cosine": 0.8, "noise_cosine": 0.94}},
            "cmcr_to_upper_bound_R@1": 0.8}


def test_aggregate_gives_mean_spread_and_significant_seed_counts():
    summary = aggregate([_run(0, 50.0, 40.0, True), _run(1, 60.0, 54.0, True),
                         _run(2, 55.0, 53.0, False)])
    r1 = summary["methods"]["cmcr"]["audio_to_image"]["R@1"]
    assert summary["seeds"] == [0, 1, 2] and r1["values"] == [50.0, 60.0, 55.0]
    assert r1["mean"] == pytest.approx(55.0) and r1["std"] == pytest.approx(5.0)
    assert "ci95" not in summary["methods"]["cmcr"]["audio_to_image"]  # a key, not a metric
    noise = summary["components"]["noise"]["audio_to_image"]["R@1"]
    assert noise["mean"] == pytest.approx(6.0) and noise["values"] == [10.0, 6.0, 2.0]
    assert noise["seeds_significant_positive"] == 2 and noise["seeds_significant_negative"] == 0
    assert summary["regime"]["clip"]["modality_gap"]["mean"] == pytest.approx(0.1)
    text = seeds_summary_text(summary)
    assert "55.0 ± 5.0" in text and "noise (+6.0)" in text


def test_methods_missing_from_a_seed_are_left_out():
    first, second = _run(0, 50.0, 40.0, True), _run(1, 60.0, 54.0, True)
    del second["methods"]["no_noise"]
    assert set(aggregate([first, second])["methods"]) == {"cmcr"}
