"""Detection metrics in pure numpy: IoU, the Deep PCB benchmark protocol, false calls at matched recall.

The Deep PCB protocol: a detection is a true positive when its IoU with a ground-truth box of the same class that is
not yet matched is **strictly greater than 0.33**; detections are taken greedily by confidence (highest first, over
all images), each one matching the unmatched same-class box it overlaps most. A detection that matches nothing (a
duplicate, a wrong class, a box too far off) is a false positive; a ground-truth box that nothing matched is a miss.
The class-agnostic variant (``class_agnostic=True``) ignores classes: it scores untyped detectors such as the legacy
AOI baseline, and asks only "was the defect found".

Inputs, per image (a sequence aligned by position, or a mapping keyed by image id with the same keys on both sides):
- predictions: rows ``(x1, y1, x2, y2, score, class_id)`` (a list of tuples or an (N, 6) array);
- ground truths: rows ``(x1, y1, x2, y2, class_id)`` (tuples, an (M, 5) array, or objects with those attributes,
  e.g. ``deeppcb.Box``).
Coordinates are pixel corners; box area is ``(x2 - x1) * (y2 - y1)``.

Vocabulary of the business KPI:
- *false calls per board*: false positives divided by the number of images (boards) scored;
- *false-call rate* (``fpr`` in reports): false positives / all calls = 1 - precision, at an operating point;
- *matched recall*: the operating point (confidence threshold) at which a detector first reaches a target recall,
  so two detectors are compared at the same share of defects found.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

DEEPPCB_IOU = 0.33


# --------------------------------------------------------------------------------------------------------- IoU


def _corners(x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.size == 0:
        return np.zeros((0, 4))
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2 or x.shape[1] < 4:
        raise ValueError(f"boxes must be rows of at least (x1, y1, x2, y2), got shape {x.shape}")
    return x[:, :4]


def box_iou(a, b) -> np.ndarray:
    """IoU matrix between boxes ``a`` (N, >=4) and ``b`` (M, >=4), corners x1 y1 x2 y2. Returns (N, M)."""
    a, b = _corners(a), _corners(b)
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    ix1 = np.maximum(a[:, None, 0], b[None, :, 0])
    iy1 = np.maximum(a[:, None, 1], b[None, :, 1])
    ix2 = np.minimum(a[:, None, 2], b[None, :, 2])
    iy2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(ix2 - ix1, 0, None) * np.clip(iy2 - iy1, 0, None)
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    union = area_a[:, None] + area_b[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / union, 0.0)


# ------------------------------------------------------------------------------------------- input handling


def _pred_array(rows) -> np.ndarray:
    arr = np.asarray(rows if len(rows) else np.zeros((0, 6)), dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 6:
        raise ValueError(f"predictions must be rows of (x1, y1, x2, y2, score, class_id), got shape {arr.shape}")
    return arr


def _gt_array(rows) -> np.ndarray:
    rows = list(rows)
    if rows and hasattr(rows[0], "x1"):
        rows = [(r.x1, r.y1, r.x2, r.y2, r.class_id) for r in rows]
    arr = np.asarray(rows if rows else np.zeros((0, 5)), dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 5:
        raise ValueError(f"ground truths must be rows of (x1, y1, x2, y2, class_id), got shape {arr.shape}")
    return arr


def _aligned(predictions, ground_truths) -> tuple[list[np.ndarray], list[np.ndarray]]:
    if isinstance(predictions, Mapping) or isinstance(ground_truths, Mapping):
        if not (isinstance(predictions, Mapping) and isinstance(ground_truths, Mapping)):
            raise TypeError("pass both predictions and ground truths as mappings keyed by image id, or neither")
        extra = set(predictions) - set(ground_truths)
        if extra:
            raise ValueError(f"predictions for images without ground truth: {sorted(extra)[:5]}")
        keys = list(ground_truths)
        preds = [_pred_array(predictions.get(k, [])) for k in keys]
        gts = [_gt_array(ground_truths[k]) for k in keys]
        return preds, gts
    if len(predictions) != len(ground_truths):
        raise ValueError(f"{len(predictions)} prediction lists for {len(ground_truths)} images")
    return [_pred_array(p) for p in predictions], [_gt_array(g) for g in ground_truths]


# ------------------------------------------------------------------------------------------------ matching


@dataclass
class Matches:
    """Every prediction scored against the ground truth (one row per prediction, all images)."""

    scores: np.ndarray  # (P,)
    classes: np.ndarray  # (P,) predicted class (0 everywhere when class-agnostic)
    tp: np.ndarray  # (P,) bool
    image_index: np.ndarray  # (P,)
    n_gt: dict[int, int]  # class -> ground-truth count (class-agnostic: {0: all})
    n_images: int


def match_detections(predictions, ground_truths, iou_threshold: float = DEEPPCB_IOU,
                     class_agnostic: bool = False) -> Matches:
    """Greedy, confidence-ordered one-to-one matching (IoU strictly above the threshold, same class)."""
    preds, gts = _aligned(predictions, ground_truths)
    scores, classes, tps, images = [], [], [], []
    n_gt: dict[int, int] = {}
    for i, (p, g) in enumerate(zip(preds, gts)):
        pc = np.zeros(len(p), dtype=np.int64) if class_agnostic else p[:, 5].astype(np.int64)
        gc = np.zeros(len(g), dtype=np.int64) if class_agnostic else g[:, 4].astype(np.int64)
        for c in np.unique(gc):
            n_gt[int(c)] = n_gt.get(int(c), 0) + int((gc == c).sum())
        tp = np.zeros(len(p), dtype=bool)
        if len(p) and len(g):
            order = np.argsort(-p[:, 4], kind="stable")
            iou = box_iou(p[:, :4], g[:, :4])
            iou[pc[:, None] != gc[None, :]] = -1.0  # never match across classes
            taken = np.zeros(len(g), dtype=bool)
            for j in order:
                cand = np.where(taken, -1.0, iou[j])
                k = int(np.argmax(cand))
                if cand[k] > iou_threshold:
                    taken[k] = True
                    tp[j] = True
        scores.append(p[:, 4])
        classes.append(pc)
        tps.append(tp)
        images.append(np.full(len(p), i, dtype=np.int64))
    cat = (lambda xs, dt: np.concatenate(xs).astype(dt) if xs else np.zeros(0, dtype=dt))
    return Matches(cat(scores, np.float64), cat(classes, np.int64), cat(tps, bool), cat(images, np.int64),
                   n_gt, len(preds))


# ------------------------------------------------------------------------------------------------- curves


@dataclass
class PRCurve:
    """Precision/recall at each distinct confidence threshold (ties kept together), highest threshold first."""

    thresholds: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    tp: np.ndarray
    fp: np.ndarray
    n_gt: int

    def to_dict(self) -> dict:
        return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in asdict(self).items()}


def pr_curve(scores: np.ndarray, tp: np.ndarray, n_gt: int) -> PRCurve:
    order = np.argsort(-scores, kind="stable")
    s, t = scores[order], tp[order]
    ctp = np.cumsum(t)
    cfp = np.cumsum(~t)
    if len(s):
        last = np.r_[s[1:] != s[:-1], True]  # last prediction of each tie group: an achievable operating point
        s, ctp, cfp = s[last], ctp[last], cfp[last]
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(ctp + cfp > 0, ctp / np.maximum(ctp + cfp, 1), 1.0)
        recall = ctp / n_gt if n_gt > 0 else np.zeros_like(ctp, dtype=np.float64)
    return PRCurve(s, precision.astype(np.float64), recall.astype(np.float64), ctp, cfp, int(n_gt))


def average_precision(curve: PRCurve) -> float:
    """All-point interpolated AP (VOC 2010+): area under the monotone precision envelope. NaN without ground truth."""
    if curve.n_gt == 0:
        return float("nan")
    if len(curve.recall) == 0:
        return 0.0
    r = np.r_[0.0, curve.recall, 1.0]
    p = np.r_[1.0, curve.precision, 0.0]
    p = np.maximum.accumulate(p[::-1])[::-1]
    return float(np.sum((r[1:] - r[:-1]) * p[1:]))


def best_f_score(curve: PRCurve, beta: float = 1.0) -> dict:
    """The operating point with the highest F-beta; its threshold is the lowest score still called a defect."""
    if len(curve.thresholds) == 0 or curve.n_gt == 0:
        return {"f": 0.0, "threshold": None, "precision": 0.0, "recall": 0.0}
    p, r = curve.precision, curve.recall
    b2 = beta * beta
    with np.errstate(divide="ignore", invalid="ignore"):
        f = np.where(p + r > 0, (1 + b2) * p * r / (b2 * p + r), 0.0)
    k = int(np.argmax(f))
    return {"f": float(f[k]), "threshold": float(curve.thresholds[k]), "precision": float(p[k]),
            "recall": float(r[k])}


# --------------------------------------------------------------------------------------- operating points


@dataclass
class OperatingPoint:
    threshold: float | None  # calls are detections with score >= threshold (None: no call at all)
    tp: int
    fp: int
    fn: int
    n_images: int
    precision: float
    recall: float
    false_calls_per_board: float
    fpr: float  # false-call rate = FP / (TP + FP) = 1 - precision
    boards_with_false_call: float  # share of boards carrying at least one false call
    target_recall: float | None = None
    reached: bool | None = None  # matched-recall points: whether the target was reached at all

    def to_dict(self) -> dict:
        return asdict(self)


def _point(m: Matches, threshold: float | None, n_gt: int) -> OperatingPoint:
    keep = m.scores >= threshold if threshold is not None else np.zeros(len(m.scores), dtype=bool)
    tp = int(m.tp[keep].sum())
    fp = int((~m.tp[keep]).sum())
    boards_fp = len(np.unique(m.image_index[keep & ~m.tp]))
    n = max(m.n_images, 1)
    return OperatingPoint(
        threshold=None if threshold is None else float(threshold), tp=tp, fp=fp, fn=n_gt - tp, n_images=m.n_images,
        precision=tp / (tp + fp) if tp + fp else 1.0, recall=tp / n_gt if n_gt else 0.0,
        false_calls_per_board=fp / n, fpr=fp / (tp + fp) if tp + fp else 0.0, boards_with_false_call=boards_fp / n)


def operating_point(predictions, ground_truths, threshold: float, iou_threshold: float = DEEPPCB_IOU,
                    class_agnostic: bool = False) -> OperatingPoint:
    """Counts when every detection with score >= threshold is called a defect."""
    m = match_detections(predictions, ground_truths, iou_threshold, class_agnostic)
    return _point(m, threshold, sum(m.n_gt.values()))


def _matched_recall(m: Matches, target_recall: float) -> OperatingPoint:
    n_gt = sum(m.n_gt.values())
    curve = pr_curve(m.scores, m.tp, n_gt)
    hit = np.nonzero(curve.recall >= target_recall - 1e-12)[0]
    if len(hit):
        op = _point(m, float(curve.thresholds[hit[0]]), n_gt)
        op.reached = True
    else:  # never reaches it: report its lowest threshold (its highest recall), flagged
        op = _point(m, float(curve.thresholds[-1]) if len(curve.thresholds) else None, n_gt)
        op.reached = False
    op.target_recall = float(target_recall)
    return op


def matched_recall(predictions, ground_truths, target_recall: float, iou_threshold: float = DEEPPCB_IOU,
                   class_agnostic: bool = False) -> OperatingPoint:
    """The highest threshold at which the detector's recall reaches ``target_recall``, and its false calls there."""
    return _matched_recall(match_detections(predictions, ground_truths, iou_threshold, class_agnostic), target_recall)


# ------------------------------------------------------------------------------------------------- reports


@dataclass
class DetectionReport:
    iou_threshold: float
    class_agnostic: bool
    n_images: int
    n_gt: int
    n_predictions: int
    ap: dict[int, float]  # class -> AP (class-agnostic: {0: AP}); NaN where the class has no ground truth
    map: float  # mean over classes with ground truth
    best_f: dict  # f, threshold, precision, recall (all classes pooled)
    best_f_point: OperatingPoint | None
    curve: PRCurve = field(repr=False)

    def to_dict(self, class_names: Sequence[str] | None = None, curve: bool = False) -> dict:
        name = (lambda c: class_names[c]) if class_names is not None else str
        d = {
            "protocol": f"Deep PCB: IoU > {self.iou_threshold}, greedy by confidence"
                        + (", class-agnostic" if self.class_agnostic else ", same class"),
            "n_images": self.n_images, "n_gt": self.n_gt, "n_predictions": self.n_predictions,
            "ap": {("all" if self.class_agnostic else name(c)): (None if math.isnan(v) else v)
                   for c, v in self.ap.items()},
            "map": self.map, "best_f": self.best_f,
            "best_f_point": self.best_f_point.to_dict() if self.best_f_point else None,
        }
        if curve:
            d["curve"] = self.curve.to_dict()
        return d


def evaluate_detections(predictions, ground_truths, iou_threshold: float = DEEPPCB_IOU, class_agnostic: bool = False,
                        num_classes: int | None = None) -> DetectionReport:
    """Per-class AP, mAP, the pooled precision/recall curve and the best F-score under the Deep PCB protocol."""
    m = match_detections(predictions, ground_truths, iou_threshold, class_agnostic)
    classes = {0} if class_agnostic else set(m.n_gt) | set(np.unique(m.classes).tolist())
    if num_classes is not None and not class_agnostic:
        classes |= set(range(num_classes))
    ap = {}
    for c in sorted(classes):
        sel = m.classes == c
        ap[int(c)] = average_precision(pr_curve(m.scores[sel], m.tp[sel], m.n_gt.get(int(c), 0)))
    valid = [v for v in ap.values() if not math.isnan(v)]
    n_gt = sum(m.n_gt.values())
    curve = pr_curve(m.scores, m.tp, n_gt)
    bf = best_f_score(curve)
    return DetectionReport(
        iou_threshold=iou_threshold, class_agnostic=class_agnostic, n_images=m.n_images, n_gt=n_gt,
        n_predictions=len(m.scores), ap=ap, map=float(np.mean(valid)) if valid else float("nan"), best_f=bf,
        best_f_point=_point(m, bf["threshold"], n_gt) if bf["threshold"] is not None else None, curve=curve)


def compare_at_matched_recall(model_predictions, baseline_predictions, ground_truths, target_recall: float | None = None,
                              iou_threshold: float = DEEPPCB_IOU, class_agnostic: bool = True) -> dict:
    """False calls of a model vs a baseline at the same recall (class-agnostic by default: the baseline is untyped).

    Without ``target_recall``, the baseline's own best-F recall is used (its natural operating point), capped at the
    highest recall the model reaches so that the comparison stays matched.
    """
    mm = match_detections(model_predictions, ground_truths, iou_threshold, class_agnostic)
    mb = match_detections(baseline_predictions, ground_truths, iou_threshold, class_agnostic)
    n_gt = sum(mm.n_gt.values())
    if target_recall is None:
        bf = best_f_score(pr_curve(mb.scores, mb.tp, n_gt))
        model_max = pr_curve(mm.scores, mm.tp, n_gt).recall
        target_recall = min(bf["recall"], float(model_max.max()) if len(model_max) else 0.0)
    pm, pb = _matched_recall(mm, target_recall), _matched_recall(mb, target_recall)

    def ratio(a: float, b: float) -> float | None:
        return None if b == 0 else 1.0 - a / b

    return {
        "target_recall": float(target_recall),
        "class_agnostic": class_agnostic,
        "model": pm.to_dict(),
        "baseline": pb.to_dict(),
        "fpr_reduction": ratio(pm.fpr, pb.fpr),  # 1 - model false-call rate / baseline false-call rate
        "false_calls_reduction": ratio(pm.false_calls_per_board, pb.false_calls_per_board),
    }


# Names of a matched-recall comparison flattened into plain metrics (a model registry stores flat floats):
# <figure>_<point>, point AT_AOI_RECALL (the baseline's operating recall) or AT_RECALL_099.
AT_AOI_RECALL = "aoi_recall"
AT_RECALL_099 = "recall_0_99"
COMPARISON_FIGURES = ("fpr", "aoi_fpr", "false_calls_per_board", "aoi_false_calls_per_board", "fpr_reduction",
                      "target_recall")


def comparison_metrics(comparison: dict, point: str) -> dict[str, float]:
    """A `compare_at_matched_recall` result as flat metrics named `<figure>_<point>` (COMPARISON_FIGURES); a
    figure that is undefined (no baseline false call to reduce) is left out."""
    model, base = comparison["model"], comparison["baseline"]
    values = {"fpr": model["fpr"], "aoi_fpr": base["fpr"], "false_calls_per_board": model["false_calls_per_board"],
              "aoi_false_calls_per_board": base["false_calls_per_board"],
              "fpr_reduction": comparison["fpr_reduction"], "target_recall": comparison["target_recall"]}
    return {f"{k}_{point}": float(v) for k, v in values.items() if v is not None}
