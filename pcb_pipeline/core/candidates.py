"""Stage 1 of the two-stage reference inspector: the legacy AOI retuned for recall proposes candidate regions;
each becomes a fixed-size crop of the reference composite (test, registered template, difference) with context,
which stage 2 (``vision.verifier``) classifies as one of the six defect types or "no defect" and re-boxes.

Pure numpy / OpenCV: crops and training targets, no model.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import cv2
import numpy as np

from pcb_pipeline.core import aoi
from pcb_pipeline.core.classes import NUM_CLASSES
from pcb_pipeline.core.detection_metrics import box_iou

# No opening (it erases thin opens and shorts) and every component of >= 4 pixels, untyped and unthresholded:
# on the validation groups 99.1 % of true defects get a candidate with IoU > 0.33 and every one a candidate with
# IoU > 0.1 (box refinement closes the gap), at ~10 candidates per board (bench/VERIFIER_RESULTS.md).
# The composite's template is registered already (no second global search, max_shift 0), and the local
# re-registration decides 8 x 8 blocks: on all 1000 trainval pairs the same coverage (99.80 % at IoU > 0.33) and
# 10.0 candidates per board, in 31 ms instead of 54 (bench/VERIFIER_RESULTS.md, 2026-12-07).
CANDIDATE_PARAMS = replace(aoi.DEFAULT_PARAMS, open_radius=0, min_area=4, threshold=0.0, typed=False,
                           max_shift=0, local_step=8)
BACKGROUND = NUM_CLASSES  # class index of "no defect" in the verifier's output
CROP = 64  # crop side (pixels) fed to the verifier
MIN_CONTEXT = 64  # smallest context window (pixels of the board) around a candidate
CONTEXT_SCALE = 2.0  # context window side = this times the candidate box's longer side
MATCH_IOU = 0.1  # a candidate overlapping a true defect this much learns that defect's type and box


@dataclass(frozen=True)
class Candidate:
    box: tuple[float, float, float, float]  # the AOI's box, x1 y1 x2 y2 (board pixels)
    window: tuple[float, float, float, float]  # the square context window cropped around it (may leave the board)


def composite_masks(composite: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Copper masks of the test image (B) and the registered template (G) of a reference composite."""
    return aoi.binarize(composite[..., 0]), aoi.binarize(composite[..., 1])


def propose(composite: np.ndarray, params: aoi.AOIParams = CANDIDATE_PARAMS) -> list[Candidate]:
    """Candidate regions of one board (reference composite, HxWx3)."""
    test_cu, temp_cu = composite_masks(composite)
    # the registration was judged when the composite was built (reference.reference_composite refuses a template
    # that does not line up), so no verdict here: only the tolerance band is moved, not the template itself
    *_, (grow, shrink) = aoi.register(test_cu, temp_cu, params, aoi.tolerance_masks(temp_cu, params.tolerance))
    found = aoi.to_detections(aoi.difference_components(test_cu, grow, shrink, params), params, test_cu.shape)
    return [Candidate(b := (d.x1, d.y1, d.x2, d.y2), context_window(b)) for d in found]


def context_window(box) -> tuple[float, float, float, float]:
    x1, y1, x2, y2 = box
    side = max(MIN_CONTEXT, CONTEXT_SCALE * max(x2 - x1, y2 - y1))
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    return cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2


def crop(composite: np.ndarray, window) -> np.ndarray:
    """The window resampled to CROP x CROP (HWC uint8); outside the board reads as empty laminate (255, 255, 0)."""
    x1, y1, x2, y2 = window
    scale = CROP / (x2 - x1)
    m = np.array([[scale, 0, -x1 * scale], [0, scale, -y1 * scale]], dtype=np.float32)
    return cv2.warpAffine(composite, m, (CROP, CROP), flags=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=(255, 255, 0))


def window_scale(window) -> float:
    """The window's side relative to MIN_CONTEXT (log), so the verifier knows the defect's real size."""
    return float(np.log((window[2] - window[0]) / MIN_CONTEXT))


def to_window(box, window) -> np.ndarray:
    """A board box in window coordinates (0..1)."""
    x1, y1, x2, y2 = window
    s = x2 - x1
    return np.array([(box[0] - x1) / s, (box[1] - y1) / s, (box[2] - x1) / s, (box[3] - y1) / s], dtype=np.float32)


def from_window(rel, window) -> tuple[float, float, float, float]:
    x1, y1, x2, y2 = window
    s = x2 - x1
    return (x1 + rel[0] * s, y1 + rel[1] * s, x1 + rel[2] * s, y1 + rel[3] * s)


def targets(candidates: list[Candidate], ground_truth) -> tuple[np.ndarray, np.ndarray]:
    """Per candidate: class (0..5, or BACKGROUND) and the matched true box in window coordinates (zeros for
    background). A candidate learns the true defect it overlaps most, when that overlap is above MATCH_IOU."""
    labels = np.full(len(candidates), BACKGROUND, dtype=np.int64)
    boxes = np.zeros((len(candidates), 4), dtype=np.float32)
    if not candidates or not len(ground_truth):
        return labels, boxes
    gt = np.asarray([g[:4] for g in ground_truth], dtype=np.float64)
    iou = box_iou(np.asarray([c.box for c in candidates], dtype=np.float64), gt)
    for i, c in enumerate(candidates):
        k = int(np.argmax(iou[i]))
        if iou[i, k] > MATCH_IOU:
            labels[i] = int(ground_truth[k][4])
            boxes[i] = to_window(gt[k], c.window)
    return labels, boxes
