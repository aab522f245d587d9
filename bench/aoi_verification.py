"""Could the model cut the legacy AOI's false calls by verifying them (the AOI flags, the model confirms)?

    .venv/bin/python bench/aoi_verification.py --weights A.onnx [--weights B.onnx ...] [--deeppcb ../shared/deeppcb]

On the held-out validation groups: the AOI (``core.aoi`` defaults, tuned on training groups) calls, and each call is
re-scored by the model: its score becomes the highest confidence of a model box overlapping it with IoU >= tau (0
when none), its class that box's class. False calls per board of this verified AOI vs the AOI alone (ranked by its own
area score) at matched recall, class-agnostic, IoU > 0.33 (``compare_at_matched_recall``). A verified AOI can only
remove calls, so its recall ceiling is the AOI's.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pcb_pipeline.core import aoi as aoi_mod  # noqa: E402
from pcb_pipeline.core import deeppcb  # noqa: E402
from pcb_pipeline.core.detection_metrics import box_iou, compare_at_matched_recall  # noqa: E402


def verify(aoi_rows: list, model_rows: list, tau: float) -> list:
    """AOI calls re-scored (and typed) by the most confident overlapping model box."""
    out = []
    for calls, dets in zip(aoi_rows, model_rows):
        ious = box_iou(np.array([c[:4] for c in calls]), np.array([d[:4] for d in dets])) if calls and dets else None
        rows = []
        for i, call in enumerate(calls):
            score, cls = 0.0, int(call[5])
            if ious is not None and (ious[i] >= tau).any():
                k = max(np.flatnonzero(ious[i] >= tau), key=lambda j: dets[j][4])
                score, cls = float(dets[k][4]), int(dets[k][5])
            rows.append((*call[:4], score, cls))
        out.append(rows)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--deeppcb", type=Path, default=ROOT.parent / "shared" / "deeppcb")
    ap.add_argument("--weights", type=Path, action="append", required=True)
    ap.add_argument("--tau", type=float, action="append", default=None)
    args = ap.parse_args()
    from pcb_pipeline.vision.detector import Detector
    from pcb_pipeline.vision.evaluate import aoi_rows, ground_truth, model_rows, select_samples

    val = select_samples(deeppcb.split_file_path(args.deeppcb), val_groups=True)
    gts = [ground_truth(s) for s in val]
    aoi = [r[0] for r in aoi_rows(val, aoi_mod.DEFAULT_PARAMS, 1)]
    report = {}
    for w in args.weights:
        rows, errors = model_rows(Detector(w, conf=0.001), val)
        assert not errors, errors
        for tau in args.tau or (0.1, 0.3):
            verified = verify(aoi, rows, tau)
            cells = {}
            for r in (0.90, 0.95, 0.979):
                c = compare_at_matched_recall(verified, aoi, gts, r, class_agnostic=True)
                cells[f"recall_{r}"] = {"verified_fcpb": c["model"]["false_calls_per_board"],
                                        "verified_reached": c["model"]["reached"],
                                        "aoi_fcpb": c["baseline"]["false_calls_per_board"],
                                        "fpr_reduction": c["fpr_reduction"]}
            report[f"{w} tau={tau}"] = cells
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
