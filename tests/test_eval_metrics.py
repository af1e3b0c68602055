"""Evaluation metrics on hand-computed cases (cIoU, AUC, recognition, zero-shot, captions)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cmcr.eval.metrics import (
    average_precision,
    best_threshold,
    boxes_to_map,
    caption_positives,
    class_prototypes,
    consensus_iou,
    cross_fitted_accuracy,
    localization_metrics,
    max_f1,
    recall_at_k,
    retrieval_metrics,
    topk_accuracy,
)


# -- localisation ----------------------------------------------------------------------------------
def test_boxes_to_map_takes_the_union_of_single_annotations():
    gt_map = boxes_to_map([(0.0, 0.0, 0.5, 0.5), (0.25, 0.25, 0.75, 0.75)], size=(4, 4))
    assert gt_map.sum() == 4 + 4 - 1
    assert set(np.unique(gt_map)) == {0.0, 1.0}


def test_boxes_to_map_consensus_halves_single_votes_and_caps_at_one():
    boxes = [(0.0, 0.0, 0.5, 1.0), (0.0, 0.0, 1.0, 0.5), (0.0, 0.0, 0.5, 0.5)]
    gt_map = boxes_to_map(boxes, size=(2, 2), consensus=2)
    assert gt_map.tolist() == [[1.0, 0.5], [0.5, 0.0]]  # 3 votes -> 1, 1 vote -> 0.5


def test_consensus_iou_of_a_hand_computed_map():
    heat = np.array([[4.0, 3.0], [2.0, 1.0]])  # median threshold keeps the top half: 4 and 3
    gt = np.array([[1.0, 0.0], [0.5, 0.0]])
    # P = [[1,1],[0,0]]: sum(P*G) = 1, sum(G) = 1.5, sum(P*[G=0]) = 1 -> 1 / 2.5
    assert consensus_iou(heat, gt) == pytest.approx(0.4)


def test_consensus_iou_is_one_for_a_perfect_half_map_and_zero_for_a_disjoint_one():
    gt = np.zeros((4, 4))
    gt[:2] = 1
    heat = np.zeros((4, 4))
    heat[:2] = 1
    assert consensus_iou(heat, gt) == 1.0
    assert consensus_iou(1 - heat, gt) == 0.0


def test_localization_metrics_by_hand():
    result = localization_metrics([0.0, 0.5, 1.0, 0.25])
    assert result["cIoU@0.5"] == 50.0
    assert result["mean_cIoU"] == pytest.approx(43.75)
    thresholds = np.linspace(0, 1, 21)
    success = [np.mean(np.array([0.0, 0.5, 1.0, 0.25]) >= t) for t in thresholds]
    assert result["AUC"] == pytest.approx(100 * np.trapezoid(success, thresholds))


def test_localization_auc_is_full_for_perfect_maps_and_small_for_empty_ones():
    assert localization_metrics([1.0, 1.0])["AUC"] == pytest.approx(100.0)
    assert localization_metrics([0.0, 0.0])["AUC"] == pytest.approx(2.5)  # only t = 0 succeeds


# -- counterfactual recognition ---------------------------------------------------------------------
def test_average_precision_by_hand():
    # ranking: +, -, +, -: precisions at hits 1/1 and 2/3
    assert average_precision([0.9, 0.8, 0.7, 0.1], [1, 0, 1, 0]) == pytest.approx(100 * (1 + 2 / 3) / 2)


def test_average_precision_breaks_ties_against_positives():
    assert average_precision([0.5, 0.5], [1, 0]) == pytest.approx(50.0)


def test_max_f1_by_hand():
    # t = 0.7: precision 2/3, recall 1 -> F1 0.8; t = 0.9: precision 1, recall 1/2 -> 2/3
    assert max_f1([0.9, 0.8, 0.7, 0.1], [1, 0, 1, 0]) == pytest.approx(80.0)


def test_best_threshold_maximises_accuracy():
    assert best_threshold([0.1, 0.4, 0.6, 0.9], [0, 0, 1, 1]) == pytest.approx(0.5)
    assert best_threshold([0.1, 0.2], [0, 0]) == np.inf  # predict "no" everywhere


def test_cross_fitted_accuracy_never_fits_the_pairs_it_judges():
    scores = [0.1, 0.2, 0.9, 0.8]  # folds: even {0.1: -, 0.9: +}, odd {0.2: -, 0.8: +}
    labels = [0, 0, 1, 1]
    assert cross_fitted_accuracy(scores, labels) == 100.0
    scores = [0.1, 0.9, 0.6, 0.8, 0.3, 0.55]
    labels = [0, 1, 1, 1, 0, 0]
    # even fold {0.1: -, 0.6: +, 0.3: -} -> t = 0.45; judging odd, 0.55 (a negative) passes.
    # odd fold {0.9: +, 0.8: +, 0.55: -} -> t = 0.675; judging even, 0.6 (a positive) fails.
    assert cross_fitted_accuracy(scores, labels) == pytest.approx(100 * 4 / 6)


# -- zero-shot ---------------------------------------------------------------------------------------
def test_topk_accuracy_by_hand_with_pessimistic_ties():
    scores = np.array([[0.9, 0.1, 0.0], [0.2, 0.5, 0.7], [0.3, 0.3, 0.1]])
    result = topk_accuracy(scores, [0, 1, 1], ks=(1, 2))
    # item 0: rank 0; item 1: rank 1; item 2: tied with class 0 -> rank 1
    assert result == {"top1": pytest.approx(100 / 3), "top2": 100.0}


def test_class_prototypes_average_unit_prompts_per_class():
    prompts = np.array([[2.0, 0.0], [0.0, 3.0], [0.0, -1.0], [0.0, -5.0]])  # 2 classes x 2 templates
    prototypes = class_prototypes(prompts, 2)
    np.testing.assert_allclose(prototypes, [[np.sqrt(0.5), np.sqrt(0.5)], [0.0, -1.0]])


# -- several captions per item ---------------------------------------------------------------------
def test_caption_positives_handle_text_to_item_and_item_to_text():
    positives = caption_positives([0, 0, 1, 1], 2)
    similarity = np.array([[0.9, 0.1],  # caption 0 -> item 0 (right)
                           [0.2, 0.8],  # caption 1 -> item 1 (wrong)
                           [0.1, 0.7],  # caption 2 -> item 1 (right)
                           [0.6, 0.5]])  # caption 3 -> item 0 (wrong)
    assert recall_at_k(similarity, positives, ks=(1,))["R@1"] == 50.0
    # item 0's best caption is caption 0 (one of its own); item 1's best is caption 1 (not its own)
    assert recall_at_k(similarity.T, positives.T, ks=(1, 2))["R@1"] == 50.0
    assert recall_at_k(similarity.T, positives.T, ks=(1, 2))["R@2"] == 100.0


def test_single_caption_retrieval_agrees_with_torchmetrics():
    torchmetrics = pytest.importorskip("torchmetrics.functional.retrieval")
    rng = np.random.default_rng(0)
    similarity = rng.uniform(0.01, 1.0, size=(12, 12))  # torchmetrics drops scores <= 0
    ours = retrieval_metrics(similarity)
    for k in (1, 5, 10):
        hits = [torchmetrics.retrieval_hit_rate(torch.tensor(row), torch.eye(12, dtype=torch.bool)[i], top_k=k)
                for i, row in enumerate(similarity)]
        assert ours[f"R@{k}"] == pytest.approx(100 * float(torch.stack(hits).float().mean()))
    aps = [torchmetrics.retrieval_average_precision(torch.tensor(row), torch.eye(12, dtype=torch.bool)[i])
           for i, row in enumerate(similarity)]
    assert ours["mAP"] == pytest.approx(100 * float(torch.stack(aps).mean()))


def test_multi_caption_item_to_text_agrees_with_torchmetrics():
    torchmetrics = pytest.importorskip("torchmetrics.functional.retrieval")
    rng = np.random.default_rng(1)
    positives = caption_positives(np.repeat(np.arange(6), 3), 6).T  # items x captions
    similarity = rng.uniform(0.01, 1.0, size=positives.shape)
    ours = retrieval_metrics(similarity, positives)
    hits = [torchmetrics.retrieval_hit_rate(torch.tensor(s), torch.tensor(p), top_k=5)
            for s, p in zip(similarity, positives)]
    aps = [torchmetrics.retrieval_average_precision(torch.tensor(s), torch.tensor(p))
           for s, p in zip(similarity, positives)]
    assert ours["R@5"] == pytest.approx(100 * float(torch.stack(hits).float().mean()))
    assert ours["mAP"] == pytest.approx(100 * float(torch.stack(aps).mean()))


def test_cross_fitted_accuracy_survives_labels_that_alternate():
    from cmcr.eval.metrics import cross_fitted_accuracy

    labels = np.arange(40) % 2 == 0  # the world's counterfactual order: matched on even items
    scores = labels.astype(float) + np.linspace(0, 0.1, 40)
    assert cross_fitted_accuracy(scores, labels) == 100.0


def test_pointing_game_hand_computed():
    from cmcr.eval.metrics import pointing_game

    heat = np.zeros((2, 4, 4))
    heat[0, 1, 1] = 1.0  # inside the box
    heat[1, 3, 3] = 1.0  # outside
    gt = np.zeros((2, 4, 4))
    gt[:, 0:2, 0:2] = 1.0
    assert pointing_game(heat, gt) == 50.0


# -- protocol rules, each against a re-typed copy of its reference code -----------------------------
def _dsol_reference(predmap, normboxes):
    """DSOL music-exp/tools.py cal_ciou for one frame, re-typed (boxes x, y, w, h fractions)."""
    gtmap = np.zeros((224, 224))
    for box in normboxes:
        box = np.array(box) * 224
        gtmap[int(box[1]): int(box[1] + box[3]), int(box[0]): int(box[0] + box[2])] = 1
    thres = 0.1 * np.max(predmap)
    return np.sum((predmap > thres) * (gtmap > 0)) / (np.sum(gtmap) + np.sum((predmap > thres) * (gtmap == 0)))


def test_dsol_ciou_agrees_with_dsols_cal_ciou_on_a_non_negative_map():
    from cmcr.eval.metrics import dsol_ciou

    rng = np.random.default_rng(3)
    for _ in range(5):
        heat = rng.uniform(0, 1, (224, 224)) ** 4
        heat[0, 0] = 0.0  # DSOL's maps are activations with minimum 0: min-max scaling keeps them
        normbox = [0.25, 0.125, 0.5, 0.375]  # x, y, w, h exactly representable
        corners = [(0.25, 0.125, 0.75, 0.5)]
        assert dsol_ciou(heat, boxes_to_map(corners)) == pytest.approx(_dsol_reference(heat, [normbox]))


def test_dsol_ciou_cuts_strictly_above_a_tenth_of_the_maximum():
    from cmcr.eval.metrics import dsol_ciou

    heat = np.array([[0.0, 0.1], [0.5, 1.0]])  # 0.1 is not above 0.1 x 1
    gt = np.array([[0.0, 1.0], [1.0, 1.0]])
    assert dsol_ciou(heat, gt) == pytest.approx(2 / 3)


def _slavc_pr(bb, ciou, conf, thr):
    tp = fp = fn = 0
    for b, c, s in zip(bb, ciou, conf):
        if b == 0:
            fp += s >= thr
        elif s >= thr:
            tp, fp = (tp + 1, fp) if c >= 0.5 else (tp, fp + 1)
        else:
            fn += 1
    return (1.0 if tp + fp == 0 else tp / (tp + fp)), (1.0 if tp + fn == 0 else tp / (tp + fn))


def _slavc_reference(bb, ciou, conf):
    """SLAVC utils.py EvaluatorFull calc_ap and finalize_stats' F1 list, re-typed."""
    precision, recall = [], []
    for thr in np.sort(np.array(conf))[:-1][::-max(1, len(ciou) // 200)]:
        p, r = _slavc_pr(bb, ciou, conf, thr)
        precision.append(p)
        recall.append(r)
    pmax = [np.max(precision[i:]) for i in range(len(precision))]
    ap = sum(pmax[i] * (recall[i + 1] - recall[i]) for i in range(len(pmax) - 1))
    pr = [_slavc_pr(bb, ciou, conf, thr) for thr in sorted(conf)[::max(1, len(conf) // 10)]]
    f1 = max(2 * r * p / (r + p) if r + p > 0 else 0.0 for p, r in pr)
    return 100 * ap, 100 * f1, 100 * _slavc_pr(bb, ciou, conf, -1000)[0]


def test_slavc_metrics_agree_with_slavcs_evaluator():
    from cmcr.eval.metrics import slavc_recognition_metrics

    rng = np.random.default_rng(4)
    sounding = rng.random(450) < 0.5  # 450 pairs: AP samples every 2nd threshold, F1 every 45th
    cious = np.where(sounding, rng.random(450), 0.0)
    confidences = rng.random(450) + 0.3 * sounding
    ours = slavc_recognition_metrics(sounding, cious, confidences)
    ap, f1, precision = _slavc_reference(sounding.astype(int), cious, confidences)
    assert (ours["AP"], ours["max-F1"], ours["precision"]) == pytest.approx((ap, f1, precision))


def test_slavc_counts_a_confident_frame_in_the_wrong_place_as_a_false_positive():
    from cmcr.eval.metrics import slavc_precision_recall

    # found (conf >= 0.5, cIoU 0.6); misplaced (cIoU 0.2); missed (conf 0.1); a silent one detected
    assert slavc_precision_recall([1, 1, 1, 0], [0.6, 0.2, 0.9, 0.0], [0.9, 0.8, 0.1, 0.7], 0.5) == (1 / 3, 1 / 2)


def test_slavc_confidence_is_the_mean_of_the_top_quarter():
    from cmcr.eval.metrics import slavc_confidence, slavc_scores

    assert slavc_confidence(np.arange(10.0)) == pytest.approx((7 + 8 + 9) / 3)  # -(10) // 4 = -3
    assert slavc_scores(np.array([-1.0, 0.0, 1.0])).tolist() == [0.0, 0.5, 1.0]


@pytest.mark.parametrize("labels", [[1, 1, 1], [0, 0, 0]])
def test_recognition_metrics_refuse_a_one_class_set(labels):
    from cmcr.eval.metrics import (
        UndefinedMetricError,
        recognition_metrics,
        slavc_recognition_metrics,
    )

    with pytest.raises(UndefinedMetricError, match="needs both positives and negatives"):
        recognition_metrics([0.1, 0.5, 0.9], labels)
    with pytest.raises(UndefinedMetricError):
        average_precision([0.1, 0.5, 0.9], labels)
    with pytest.raises(UndefinedMetricError):
        slavc_recognition_metrics(labels, [0.5] * 3, [0.1, 0.5, 0.9])


# -- shipped lists and protocols -------------------------------------------------------------------
def test_shipped_imagenet_names_are_a_thousand_distinct_ones():
    from cmcr.eval.datasets.base import check_unique_class_names
    from cmcr.eval.shipped import imagenet_class_names, shipped

    names = imagenet_class_names()
    assert len(names) == 1000 and list(names)[0] == "n01440764"
    check_unique_class_names(list(names.values()), "imagenet_clip.json")
    assert (names["n02012849"], names["n03126707"]) == ("crane bird", "construction crane")
    assert (names["n03773504"], names["n04008634"]) == ("missile", "projectile")
    raw = shipped("imagenet_clip")["classnames"]  # CLIP's list verbatim: its two repeated names
    assert sorted({n for n in raw if raw.count(n) > 1}) == ["missile", "sunglasses"]


def test_template_sets_hold_their_published_templates():
    from cmcr.eval.prompts import template_set, templates_for

    assert len(template_set("modelnet40-ulip")) == 64 and template_set("modelnet40-ulip")[0] == "a point cloud model of {}."
    assert len(template_set("imagenet-80")) == 80
    assert set(template_set("imagenet-7")) <= set(template_set("imagenet-80"))
    assert templates_for("esc50") == ("This is a sound of {}",)
    assert templates_for("esc50", "all-folds") == ("this is a sound of {}.",)


def test_every_dataset_has_protocols_and_every_protocol_a_reference():
    from cmcr.eval.datasets import DATASET_READERS
    from cmcr.eval.prompts import template_set
    from cmcr.eval.protocols import PROTOCOLS

    assert set(PROTOCOLS) == set(DATASET_READERS)
    for known in PROTOCOLS.values():
        assert len({p.name for p in known}) == len(known)
        for protocol in known:
            assert protocol.reference and protocol.summary
            if protocol.templates:
                assert template_set(protocol.templates)
