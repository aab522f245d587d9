"""What the reference-aware input costs at inference: building the composite vs the network itself, same run.

    .venv/bin/python bench/bench_reference_cost.py [--deeppcb ../shared/deeppcb] [--onnx .gpu_models/best.onnx]
        [--pairs 40] [--rounds 3]

For ``--pairs`` real Deep PCB pairs (decoded once, outside the timings): ``reference_composite`` with and without
registration (``aoi.estimate_shift``), and one lean ONNX Runtime inference at the export's size (the baseline: any
640x640 input costs the network the same). Medians over ``--rounds`` passes, in ms per image, and their ratios.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pcb_pipeline.core import deeppcb  # noqa: E402
from pcb_pipeline.core.aoi import load_gray  # noqa: E402
from pcb_pipeline.core.reference import reference_composite  # noqa: E402


def per_image_ms(fn, items, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        for it in items:
            fn(it)
        times.append((time.perf_counter() - t) / len(items) * 1000)
    return statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--deeppcb", type=Path, default=ROOT.parent / "shared" / "deeppcb")
    ap.add_argument("--onnx", type=Path, default=ROOT / ".gpu_models" / "best.onnx")
    ap.add_argument("--pairs", type=int, default=40)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    from pcb_pipeline.vision.onnx_runtime import OnnxYolo

    samples = deeppcb.read_split(deeppcb.split_file_path(args.deeppcb))[:: max(1, 1000 // args.pairs)][: args.pairs]
    pairs = [(load_gray(s.test_image), load_gray(s.template_image)) for s in samples]
    model = OnnxYolo(args.onnx)
    composites = [reference_composite(t, r) for t, r in pairs]
    model.predict(composites[0])  # warm-up
    res = {
        "date": str(date.today()), "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "load_avg_1m_at_start": os.getloadavg()[0], "pairs": len(pairs), "rounds": args.rounds,
        "onnx": str(args.onnx), "input": f"{model.input_hw[0]}x{model.input_hw[1]}",
        "composite_ms": per_image_ms(lambda p: reference_composite(*p), pairs, args.rounds),
        "composite_unregistered_ms": per_image_ms(lambda p: reference_composite(*p, register=False), pairs,
                                                  args.rounds),
        "onnx_inference_ms": per_image_ms(lambda c: model.predict(c), composites, args.rounds),
    }
    res["composite_over_inference"] = round(res["composite_ms"] / res["onnx_inference_ms"], 3)
    print(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
