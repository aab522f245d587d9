"""Which crops pay for test-time flips, on a saved verifier (no retraining).

    .venv/bin/python bench/verifier_flip_sure.py WEIGHTS.pt [--sure 2 0.999 0.99 0.98 0.95] [--timed 60]

For each `FLIP_SURE` (a crop whose most likely class is below it is also judged by its other views; > 1: every
crop), on the validation groups of trainval: typed Deep PCB mAP and best F, false calls per board against the legacy
AOI at the AOI's recall and at recall 0.99, the share of crops flipped, and ms per board on one thread for the whole
served path (template registration and composite, candidates, crops, ONNX Runtime, decode: `Detector.predict_rows`
on the decoded board and template) beside the legacy AOI (`aoi.inspect_pair`) in the same loop on the same boards.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ["OMP_NUM_THREADS"] = "1"

import cv2  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from served_path_ms import median_ms  # noqa: E402
from verifier_bench import validation_set  # noqa: E402

from pcb_pipeline.core import aoi  # noqa: E402
from pcb_pipeline.vision import verifier as vf  # noqa: E402
from pcb_pipeline.vision.detector import Detector  # noqa: E402


def served_ms(onnx: Path, samples, sure: float) -> tuple[float, float]:
    """Median ms per board, one thread: the served two-stage path and the legacy AOI, alternating board by board."""
    cv2.setNumThreads(1)
    det = Detector(onnx, conf=0.001, threads=1)
    det.model.sure = sure
    pairs = [(cv2.imread(str(s.test_image)), cv2.imread(str(s.template_image))) for s in samples]
    return median_ms(det, aoi.inspect_pair, pairs)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("weights", type=Path)
    p.add_argument("--sure", type=float, nargs="+", default=[2.0, 0.999, 0.995, 0.99, 0.98, 0.95])
    p.add_argument("--timed", type=int, default=60, help="validation boards timed per setting")
    p.add_argument("--out", type=Path, help="write the table as JSON here")
    a = p.parse_args()
    val = validation_set()
    va = val.crops
    net, meta = vf.load_checkpoint(a.weights)
    dual = vf.reads_polarity_dual(meta)
    onnx = Path(tempfile.mkdtemp()) / "verifier.onnx"
    vf.export_onnx(net, onnx, {"pcb_input": "reference", vf.INVERT_KEY: meta.get(vf.INVERT_KEY, 0)})
    one_view, _ = vf.predict_crops(net, va.crops, va.scales, sure=0.0)
    table = []
    for sure in a.sure:
        probs, rel = vf.predict_crops(net, va.crops, va.scales, sure=sure, dual=dual)
        ms, ms_aoi = served_ms(onnx, val.samples[:a.timed], sure)
        row = {"sure": sure, "flipped_share": float((one_view.max(1) < sure).mean()), **val.score(probs, rel),
               "ms_per_board": ms, "ms_per_board_aoi": ms_aoi}
        table.append(row)
        print(json.dumps({k: v if v is None else round(v, 4) for k, v in row.items()}), flush=True)
    if a.out:
        a.out.write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "command": " ".join(sys.argv),
                                     "machine": f"{platform.machine()} {platform.processor()}, {os.cpu_count()} cores",
                                     "weights": str(a.weights), "val_crops": int(len(va.labels)), "table": table},
                                    indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
