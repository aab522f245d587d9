"""Single-image latency at 640: the lean ONNX Runtime path vs ultralytics' PyTorch predict, same weights, same run.

    .venv/bin/python bench/bench_latency.py [--weights .gpu_models/best.pt] [--images 20] [--rounds 5]

Both start from a decoded BGR array (the same one) and end with boxes in image pixels (pre-processing, model, NMS,
rescaling). Torch runs at 1 thread beside ONNX Runtime (ENVIRONMENT.md: ORT uses both cores itself, and 2 torch
threads on a busy machine can be 10x slower); the ORT session uses ``default_threads()``. Calls are interleaved
image by image with the order alternating each round (ABBA), so load from other processes hits both alike; the
figure is the median over all calls, and the median of per-call-pair ratios. Also reported, for context: ultralytics'
own ONNX Runtime predict on the same .onnx, and box parity (IoU > 0.9, same class) of lean vs PyTorch.
Prints one JSON object (also written with --out).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pcb_pipeline import settings  # noqa: E402


def machine() -> dict:
    return {"cpus": os.cpu_count(), "machine": platform.machine(), "python": platform.python_version(),
            "loadavg_1m": round(os.getloadavg()[0], 2)}


def parity(a, b) -> int:
    from pcb_pipeline.core.detection_metrics import box_iou

    if len(a) == 0 or len(b) == 0:
        return 0
    iou = box_iou(a, b)
    iou[a[:, 5][:, None] != b[:, 5][None, :]] = 0
    return int((iou.max(axis=1) > 0.9).sum())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", default=str(ROOT / ".gpu_models" / "best.pt"))
    p.add_argument("--deeppcb-root", default=str(ROOT.parent / "shared" / "deeppcb"))
    p.add_argument("--images", type=int, default=20)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--torch-threads", type=int, default=1)
    p.add_argument("--ort-threads", type=int, default=None)
    p.add_argument("--no-ultralytics-onnx", action="store_true")
    p.add_argument("--spin-sweep", action="store_true",
                   help="also time the lean path with thread spinning forced on and off (interleaved)")
    p.add_argument("--out")
    args = p.parse_args(argv)
    settings.configure()
    import numpy as np
    import torch
    from ultralytics import YOLO

    from pcb_pipeline.core import deeppcb
    from pcb_pipeline.core.images import read_image
    from pcb_pipeline.vision.detector import Detector

    torch.set_num_threads(args.torch_threads)
    pt_path = Path(args.weights)
    samples = deeppcb.read_split(deeppcb.split_file_path(Path(args.deeppcb_root)))
    step = max(1, len(samples) // args.images)
    images = [read_image(s.test_image) for s in samples[::step][: args.images]]
    shapes = sorted({im.shape for im in images})

    lean = Detector(pt_path, threads=args.ort_threads)  # best.onnx beside best.pt: the lean ORT path
    assert lean.backend == "onnxruntime", "no best.onnx beside the weights"
    pt = YOLO(str(pt_path))
    ux = None if args.no_ultralytics_onnx else YOLO(str(pt_path.with_suffix(".onnx")), task="detect")
    imgsz = lean.imgsz

    def run_lean(im):
        return lean.predict_rows(im)

    def run_pt(im):
        return pt.predict(im, imgsz=imgsz, conf=0.25, device="cpu", verbose=False)[0]

    def run_ux(im):
        return ux.predict(im, imgsz=imgsz, conf=0.25, device="cpu", verbose=False)[0]

    methods = {"lean_ort": run_lean, "ultralytics_torch": run_pt}
    if args.spin_sweep:
        from pcb_pipeline.vision.onnx_runtime import OnnxYolo

        for tag, spin in (("lean_ort_spin", True), ("lean_ort_nospin", False)):
            m = OnnxYolo(pt_path.with_suffix(".onnx"), threads=args.ort_threads, spinning=spin)
            methods[tag] = (lambda im, m=m: m.predict(im))
    if ux is not None:
        methods["ultralytics_ort"] = run_ux
    for im in images[:3]:  # warm-up (first calls allocate)
        for f in methods.values():
            f(im)

    times = {k: [] for k in methods}
    ratios = []
    load = [os.getloadavg()[0]]
    names = list(methods)
    for r in range(args.rounds):
        order = names if r % 2 == 0 else names[::-1]
        for im in images:
            got = {}
            for k in order:
                t = time.perf_counter()
                methods[k](im)
                got[k] = time.perf_counter() - t
                times[k].append(got[k])
            ratios.append(got["lean_ort"] / got["ultralytics_torch"])
        load.append(os.getloadavg()[0])

    matched = total_pt = total_lean = 0
    for im in images:
        a = run_lean(im)
        b = run_pt(im).boxes
        b = np.c_[b.xyxy.numpy(), b.conf.numpy(), b.cls.numpy()] if len(b) else np.zeros((0, 6))
        matched += parity(b, a)
        total_pt += len(b)
        total_lean += len(a)

    med = {k: round(1000 * statistics.median(v), 1) for k, v in times.items()}
    result = {
        "bench": "single-image latency at 640 (decoded array -> boxes)",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": "python bench/bench_latency.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": machine(), "loadavg_1m_during": [round(x, 2) for x in load],
        "weights": str(pt_path), "imgsz": imgsz, "image_shapes": [list(s) for s in shapes],
        "images": len(images), "rounds": args.rounds, "calls_per_method": len(images) * args.rounds,
        "torch_threads": torch.get_num_threads(), "ort_threads": lean.model.threads,
        "median_ms": med,
        "p10_ms": {k: round(1000 * float(np.percentile(v, 10)), 1) for k, v in times.items()},
        "p90_ms": {k: round(1000 * float(np.percentile(v, 90)), 1) for k, v in times.items()},
        "ratio_lean_over_torch_of_medians": round(med["lean_ort"] / med["ultralytics_torch"], 3),
        "ratio_lean_over_torch_median_of_pairs": round(statistics.median(ratios), 3),
        "target": "<= 0.4",
        "parity": {"torch_boxes": total_pt, "lean_boxes": total_lean, "torch_boxes_matched_iou_0.9_same_class":
                   matched},
    }
    for k in ("lean_ort_spin", "lean_ort_nospin"):
        if k in med:
            result[f"ratio_{k}_over_torch"] = round(med[k] / med["ultralytics_torch"], 3)
    result["lean_spinning_policy"] = "auto" if lean.model.spinning is None else lean.model.spinning
    if "ultralytics_ort" in med:
        result["ratio_lean_over_ultralytics_ort"] = round(med["lean_ort"] / med["ultralytics_ort"], 3)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
