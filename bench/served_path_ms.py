"""ms per board of the served two-stage path and the legacy AOI, for the code of any checkout, one thread.

    .venv/bin/python bench/served_path_ms.py CHECKOUT VERIFIER.onnx [--boards 60]

`Detector.predict_rows` on the decoded board and template (template registration and composite, candidates, crops,
ONNX Runtime, decode), then the legacy AOI (`aoi.inspect_pair`) on the same pair, board by board, over the first
validation boards of trainval's group split; prints the medians as JSON. To compare two versions of the code in one
run, alternate them on the same weights, e.g. with a worktree of the older commit:

    git worktree add /tmp/old <commit>
    for i in 1 2; do for c in /tmp/old .; do .venv/bin/python bench/served_path_ms.py $c best.onnx; done; done
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ["OMP_NUM_THREADS"] = "1"


def median_ms(detector, inspect_pair, pairs) -> tuple[float, float]:
    """Median ms per board of ``detector.predict_rows`` (board and template) and of ``inspect_pair`` (the legacy AOI)
    on the same pairs, board by board, after one warm-up."""
    import numpy as np

    detector.predict_rows(pairs[0][0], template=pairs[0][1])  # warm-up
    two_stage, legacy = [], []
    for test, template in pairs:
        t = time.perf_counter(); detector.predict_rows(test, template=template); two_stage.append(time.perf_counter() - t)
        t = time.perf_counter(); inspect_pair(test, template); legacy.append(time.perf_counter() - t)
    return 1000 * float(np.median(two_stage)), 1000 * float(np.median(legacy))


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("checkout", type=Path, help="the repository whose pcb_pipeline is timed")
    p.add_argument("onnx", type=Path, help="a two-stage inspector's ONNX export (pcb_kind=verifier)")
    p.add_argument("--boards", type=int, default=60)
    p.add_argument("--deeppcb", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "deeppcb")
    a = p.parse_args()
    sys.path.insert(0, str(a.checkout.resolve()))
    import cv2

    from pcb_pipeline.core import aoi, deeppcb
    from pcb_pipeline.vision.detector import Detector

    cv2.setNumThreads(1)
    _, val = deeppcb.group_split(deeppcb.read_split(deeppcb.split_file_path(a.deeppcb)))
    pairs = [(cv2.imread(str(s.test_image)), cv2.imread(str(s.template_image))) for s in val[:a.boards]]
    two_stage, legacy = median_ms(Detector(a.onnx, conf=0.001, threads=1), aoi.inspect_pair, pairs)
    print(json.dumps({"checkout": str(a.checkout), "boards": len(pairs), "two_stage_ms": round(two_stage, 1),
                      "legacy_aoi_ms": round(legacy, 1)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
