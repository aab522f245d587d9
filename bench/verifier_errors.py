"""Where the two-stage inspector's remaining errors come from, on the validation groups of trainval.

    .venv/bin/python bench/verifier_errors.py --weights path/to/verifier.pt [--out bench/verifier_runs/X]

At the typed best-F threshold (Deep PCB protocol: IoU > 0.33, same class), every missed defect and every false call
is put in one bucket, so the next change aims at the largest one:

- misses: ``no_candidate`` (stage 1 proposed nothing overlapping it by IoU > 0.1), ``rejected`` (a candidate exists
  but the verifier scored it under the threshold or called it "no defect"), ``wrong_type`` (a call of another
  type covers it), ``loose_box`` (a call of its type overlaps it, IoU <= 0.33: box refinement or a merge), and
  ``taken`` (its call was matched to another defect);
- false calls: ``wrong_type``, ``loose_box_or_duplicate`` (overlaps a defect of its type) and ``background``.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from verifier_bench import load_boards  # noqa: E402

from pcb_pipeline.core import candidates as cands  # noqa: E402
from pcb_pipeline.core import deeppcb  # noqa: E402
from pcb_pipeline.core.classes import CLASS_NAMES  # noqa: E402
from pcb_pipeline.core.detection_metrics import DEEPPCB_IOU, box_iou, evaluate_detections  # noqa: E402
from pcb_pipeline.vision import verifier as vf  # noqa: E402


def board_errors(rows: np.ndarray, gt: list, candidate_boxes: np.ndarray, threshold: float) -> tuple[list, list]:
    """(misses, false calls) of one board: (bucket, class name, box side in px) each."""
    calls = rows[rows[:, 4] >= threshold]
    calls = calls[np.argsort(-calls[:, 4], kind="stable")]
    g = np.asarray([x[:4] for x in gt], np.float64).reshape(-1, 4)
    gc = np.asarray([x[4] for x in gt], np.int64)
    iou = box_iou(calls[:, :4].astype(np.float64), g) if len(calls) and len(g) else np.zeros((len(calls), len(g)))
    same = calls[:, 5].astype(np.int64)[:, None] == gc[None, :] if len(g) else np.zeros((len(calls), 0), bool)
    taken, matched = np.zeros(len(g), bool), np.zeros(len(calls), bool)
    for j in range(len(calls)):  # the metric's greedy, confidence-ordered matching
        cand = np.where(same[j] & ~taken, iou[j], -1.0)
        if len(g) and cand.max() > DEEPPCB_IOU:
            k = int(np.argmax(cand))
            taken[k] = matched[j] = True
    cover = box_iou(candidate_boxes, g) if len(candidate_boxes) and len(g) else np.zeros((0, len(g)))
    misses = []
    for k in np.flatnonzero(~taken):
        side = float(max(g[k, 2] - g[k, 0], g[k, 3] - g[k, 1]))
        if not len(cover) or cover[:, k].max() <= cands.MATCH_IOU:
            bucket = "no_candidate"
        elif (iou[:, k] > DEEPPCB_IOU).any() and (~same[:, k] & (iou[:, k] > DEEPPCB_IOU)).any():
            bucket = "wrong_type"
        elif (same[:, k] & (iou[:, k] > DEEPPCB_IOU)).any():
            bucket = "taken"
        elif (same[:, k] & (iou[:, k] > 0)).any():
            bucket = "loose_box"
        else:
            bucket = "rejected"
        misses.append((bucket, CLASS_NAMES[gc[k]], side))
    false_calls = []
    for j in np.flatnonzero(~matched):
        side = float(max(calls[j, 2] - calls[j, 0], calls[j, 3] - calls[j, 1]))
        if len(g) and (~same[j] & (iou[j] > DEEPPCB_IOU)).any():
            bucket = "wrong_type"
        elif len(g) and (same[j] & (iou[j] > 0)).any():
            bucket = "loose_box_or_duplicate"
        else:
            bucket = "background"
        false_calls.append((bucket, CLASS_NAMES[int(calls[j, 5])], side))
    return misses, false_calls


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--deeppcb", type=Path, default=ROOT.parent / "shared" / "deeppcb")
    p.add_argument("--weights", type=Path, required=True)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--out", type=Path)
    a = p.parse_args()
    _, val_s = deeppcb.group_split(deeppcb.read_split(deeppcb.split_file_path(a.deeppcb)))
    val_b = load_boards(val_s, a.workers)
    va = vf.build_crop_set(val_b, log=lambda _: None, workers=a.workers)
    net, meta = vf.load_checkpoint(a.weights)
    probs, rel = vf.predict_crops(net, va.crops, va.scales, dual=vf.reads_polarity_dual(meta))
    rows = vf.rows_by_board(va, probs, rel, [c.shape[:2] for c, _ in val_b])
    gts = [gt for _, gt in val_b]
    report = evaluate_detections([[tuple(r) for r in b] for b in rows], gts, num_classes=len(CLASS_NAMES))
    t = float(report.best_f["threshold"])
    misses, false_calls = [], []
    for i, (r, gt) in enumerate(zip(rows, gts)):
        m, f = board_errors(r, gt, va.candidate_boxes[va.board == i], t)
        misses += [(*x, val_s[i].image_id) for x in m]
        false_calls += [(*x, val_s[i].image_id) for x in f]
    summary = {
        "weights": str(a.weights), "threshold": t, "best_f": report.best_f, "map": report.map,
        "misses": dict(Counter(f"{b}/{c}" for b, c, *_ in misses).most_common()),
        "false_calls": dict(Counter(f"{b}/{c}" for b, c, *_ in false_calls).most_common()),
        "miss_list": [{"bucket": b, "class": c, "side_px": round(s, 1), "board": n} for b, c, s, n in misses],
        "false_call_list": [{"bucket": b, "class": c, "side_px": round(s, 1), "board": n}
                            for b, c, s, n in false_calls],
    }
    text = json.dumps(summary, indent=1, default=float)
    if a.out:
        a.out.mkdir(parents=True, exist_ok=True)
        (a.out / "errors.json").write_text(text + "\n")
    print(json.dumps({k: summary[k] for k in ("threshold", "best_f", "map", "misses", "false_calls")},
                     indent=1, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
