"""Deep PCB protocol metrics on hand-computed cases."""
from __future__ import annotations

import math

import numpy as np
import pytest

from pcb_pipeline.core.deeppcb import Box
from pcb_pipeline.core.detection_metrics import (
    AT_AOI_RECALL, average_precision, box_iou, compare_at_matched_recall, comparison_metrics, evaluate_detections, match_detections, matched_recall,
    operating_point, pr_curve)

GT = (0, 0, 10, 10)


def shifted_by_iou(iou: float) -> tuple[float, float, float, float]:
    """A 10x10 box slid right along the x axis so that its IoU with GT is exactly ``iou``."""
    w = 200 * iou / (10 * (1 + iou))  # overlap width: 10w / (200 - 10w) = iou
    return (10 - w, 0, 20 - w, 10)


def test_box_iou_values():
    iou = box_iou([GT], [GT, (5, 0, 15, 10), (20, 20, 30, 30), (0, 0, 5, 5)])
    assert iou.shape == (1, 4)
    assert iou[0] == pytest.approx([1.0, 1 / 3, 0.0, 0.25])
    assert box_iou([], [GT]).shape == (0, 1)
    assert box_iou(np.zeros((2, 6)), []).shape == (2, 0)
    assert box_iou([GT], [shifted_by_iou(0.3)])[0, 0] == pytest.approx(0.3)


def test_perfect_detector_scores_one():
    gts = [[(10, 10, 40, 40, 0), (100, 100, 130, 140, 3)], [(5, 5, 30, 30, 5)]]
    preds = [[(*g[:4], 0.9, g[4]) for g in img] for img in gts]
    rep = evaluate_detections(preds, gts, num_classes=6)
    assert rep.map == 1.0
    assert rep.ap[0] == rep.ap[3] == rep.ap[5] == 1.0
    assert math.isnan(rep.ap[1])  # no ground truth for class 1: excluded from the mean
    assert rep.best_f["f"] == 1.0
    assert rep.best_f_point.fp == 0 and rep.best_f_point.fn == 0


def test_iou_just_below_the_bar_is_a_miss_and_just_above_a_hit():
    gts = [[(*GT, 2)]]
    miss = evaluate_detections([[(*shifted_by_iou(0.30), 0.9, 2)]], gts)
    assert miss.ap[2] == 0.0 and miss.best_f["f"] == 0.0
    hit = evaluate_detections([[(*shifted_by_iou(0.34), 0.9, 2)]], gts)
    assert hit.ap[2] == 1.0
    # exactly the threshold is not enough: the protocol says strictly greater than 0.33
    exact = match_detections([[(*shifted_by_iou(0.33), 0.9, 2)]], gts, iou_threshold=0.33 + 1e-12)
    assert not exact.tp.any()


def test_class_mismatch_is_a_miss_unless_class_agnostic():
    gts = [[(*GT, 1)]]
    preds = [[(*GT, 0.8, 4)]]
    typed = evaluate_detections(preds, gts, num_classes=6)
    assert typed.ap[1] == 0.0  # the short was not found
    assert math.isnan(typed.ap[4])  # the wrong-class call is an FP of class 4, which has no ground truth
    assert typed.map == 0.0
    op = operating_point(preds, gts, 0.5)
    assert (op.tp, op.fp, op.fn) == (0, 1, 1)
    agnostic = evaluate_detections(preds, gts, class_agnostic=True)
    assert agnostic.ap == {0: 1.0}


def test_duplicates_count_as_false_positives():
    gts = [[(*GT, 0)]]
    preds = [[(*GT, 0.9, 0), (0, 0, 10, 9, 0.8, 0)]]
    op = operating_point(preds, gts, 0.0)
    assert (op.tp, op.fp, op.fn) == (1, 1, 0)
    assert op.precision == 0.5 and op.false_calls_per_board == 1.0
    rep = evaluate_detections(preds, gts)
    assert rep.ap[0] == 1.0  # the duplicate ranks below the hit
    assert rep.best_f["threshold"] == 0.9


def test_greedy_by_confidence_takes_the_best_overlap_first():
    gts = [[(0, 0, 10, 10, 0), (6, 0, 16, 10, 0)]]
    a = (4, 0, 14, 10, 0.9, 0)  # IoU 0.43 with the first, 0.67 with the second: takes the second
    b = (7, 0, 17, 10, 0.8, 0)  # IoU 0.82 with the second (taken), 0.18 with the first: nothing left
    m = match_detections([[b, a]], gts)
    assert list(m.tp) == [False, True]


def test_average_precision_hand_computed():
    gts = [[(0, 0, 10, 10, 0), (50, 50, 60, 60, 0)]]
    preds = [[(0, 0, 10, 10, 0.9, 0), (100, 100, 110, 110, 0.8, 0), (50, 50, 60, 60, 0.7, 0)]]
    rep = evaluate_detections(preds, gts)
    # points (P, R): (1, .5), (.5, .5), (2/3, 1); envelope: 1 up to R=.5, 2/3 up to R=1
    assert rep.ap[0] == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    assert list(rep.curve.tp) == [1, 1, 2] and list(rep.curve.fp) == [0, 1, 1]
    assert rep.best_f["f"] == pytest.approx(0.8)  # at the last point: P 2/3, R 1
    assert rep.best_f["threshold"] == 0.7


def test_tied_scores_form_one_operating_point():
    gts = [[(0, 0, 10, 10, 0)]]
    preds = [[(0, 0, 10, 10, 0.5, 0), (30, 30, 40, 40, 0.5, 0)]]
    curve = pr_curve(match_detections(preds, gts).scores, match_detections(preds, gts).tp, 1)
    assert len(curve.thresholds) == 1 and curve.precision[0] == 0.5 and curve.recall[0] == 1.0
    assert average_precision(curve) == 0.5


def test_matched_recall_and_false_calls_per_board():
    gts = [[(0, 0, 10, 10, 0)], [(0, 0, 10, 10, 0)]]
    preds = [[(0, 0, 10, 10, 0.9, 0), (40, 40, 50, 50, 0.8, 0)],
             [(40, 40, 50, 50, 0.7, 0), (0, 0, 10, 10, 0.6, 0)]]
    half = matched_recall(preds, gts, 0.5)
    assert half.reached and half.threshold == 0.9 and half.fp == 0 and half.recall == 0.5
    full = matched_recall(preds, gts, 1.0)
    assert full.reached and full.threshold == 0.6
    assert (full.tp, full.fp) == (2, 2)
    assert full.false_calls_per_board == 1.0 and full.fpr == 0.5 and full.boards_with_false_call == 1.0
    never = matched_recall(preds, [[(0, 0, 10, 10, 0), (80, 80, 90, 90, 0)], gts[1]], 1.0)
    assert never.reached is False and never.recall == pytest.approx(2 / 3)


def test_compare_at_matched_recall():
    gts = [[(0, 0, 10, 10, 0)], [(0, 0, 10, 10, 1)]]
    model = [[(0, 0, 10, 10, 0.9, 0)], [(0, 0, 10, 10, 0.8, 1), (40, 40, 50, 50, 0.1, 2)]]
    baseline = [[(0, 0, 10, 10, 0.9, -1), (40, 40, 50, 50, 0.95, -1)], [(0, 0, 10, 10, 0.5, -1),
                                                                         (60, 60, 70, 70, 0.6, -1)]]
    cmp = compare_at_matched_recall(model, baseline, gts, target_recall=1.0)
    assert cmp["model"]["fp"] == 0 and cmp["baseline"]["fp"] == 2
    assert cmp["fpr_reduction"] == 1.0 and cmp["false_calls_reduction"] == 1.0
    auto = compare_at_matched_recall(model, baseline, gts)  # the baseline's best-F recall
    assert auto["target_recall"] == 1.0
    flat = comparison_metrics(cmp, AT_AOI_RECALL)  # what a registry stores: flat floats named <figure>_<point>
    assert flat == {"fpr_aoi_recall": 0.0, "aoi_fpr_aoi_recall": 0.5, "false_calls_per_board_aoi_recall": 0.0,
                    "aoi_false_calls_per_board_aoi_recall": 1.0, "fpr_reduction_aoi_recall": 1.0,
                    "target_recall_aoi_recall": 1.0}
    clean = compare_at_matched_recall(model, model, gts, target_recall=1.0)  # no baseline false call: no reduction
    assert "fpr_reduction_x" not in comparison_metrics(clean, "x") and "fpr_x" in comparison_metrics(clean, "x")


def test_mapping_inputs_and_box_objects():
    gts = {"a": [Box(0, 0, 10, 10, 2)], "b": []}
    preds = {"a": [(0, 0, 10, 10, 0.7, 2)], "b": [(5, 5, 15, 15, 0.6, 2)]}
    op = operating_point(preds, gts, 0.5)
    assert (op.tp, op.fp, op.n_images) == (1, 1, 2)
    with pytest.raises(ValueError, match="without ground truth"):
        operating_point({"zz": []}, gts, 0.5)
    with pytest.raises(ValueError, match="x1, y1, x2, y2, score, class_id"):
        evaluate_detections([[(0, 0, 1, 1)]], [[]])
    with pytest.raises(ValueError, match="prediction lists"):
        evaluate_detections([[]], [[], []])


def test_no_predictions():
    rep = evaluate_detections([[], []], [[(*GT, 0)], []])
    assert rep.map == 0.0 and rep.best_f["f"] == 0.0 and rep.n_predictions == 0
    assert matched_recall([[], []], [[(*GT, 0)], []], 0.9).reached is False
