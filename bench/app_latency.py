"""Vision Lab latency: upload -> boxes rendered, measured on the app's own function, against the raw model call.

    .venv/bin/python bench/app_latency.py [--weights W | --untrained-imgsz 640] [--data ../shared/deeppcb]
                                          [--n 60] [--cores 2] [--backend auto|torch] [--json out.json]

What is timed, per board image (JPEG bytes as uploaded), interleaved so that load on the machine hits both alike:
  app      pcb_pipeline.app.vision.inspect_bytes: decode (with every bad-input check) + inference at the app's
           confidence floor + drawing the boxes above the slider's default confidence (0.25)
  app+img  the same plus what st.image then does with the array (BGR->RGB, JPEG encode at quality 100 with Streamlit's
           own helper), i.e. everything the server does before the browser receives the picture
  raw      the model call alone on an already decoded array: Detector.predict_rows at conf 0.25 (same backend:
           the ONNX Runtime session with its letterbox/NMS, or Ultralytics predict for PyTorch)
Ratio = app / raw (medians). The model is loaded once (as st.cache_resource does), then warmed up.
A reference-aware model (stamped pcb_input=reference) gets each board's template: `app` then also decodes the
template and builds the composite (what the page does), `raw` is the model call on the ready composite.

Weights: --weights (a .pt with best.onnx beside it, or an .onnx), else the registered champion of PCB_HOME (what
the app loads), else --untrained-imgsz N builds an untrained YOLOv12-n exported to ONNX at N px: same compute as a
trained model of that size (the weights do not change the network's cost; NMS sees few boxes).
The process is pinned to --cores CPUs (sched_setaffinity) before torch / ONNX Runtime start their thread pools.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def pin_cores(n: int) -> list[int]:
    cpus = sorted(os.sched_getaffinity(0))
    chosen = cpus[:n]
    os.sched_setaffinity(0, set(chosen))
    os.environ.setdefault("OMP_NUM_THREADS", str(len(chosen)))
    return chosen


def board_images(data_root: Path | None, n: int) -> list[tuple[str, bytes, bytes]]:
    """(name, board bytes, template bytes) for n Deep PCB pairs (synthetic ones without the dataset)."""
    from pcb_pipeline.core.deeppcb import read_split

    if data_root is not None and (data_root / "PCBData" / "trainval.txt").is_file():
        samples = read_split(data_root / "PCBData" / "trainval.txt")
    else:
        from pcb_pipeline.core.synthetic import write_synthetic_deeppcb

        tmp = Path(tempfile.mkdtemp(prefix="app_bench_boards_"))
        write_synthetic_deeppcb(tmp, groups=2, images_per_group=max(2, n // 2), seed=3)
        samples = read_split(tmp / "PCBData" / "trainval.txt")
    step = max(1, len(samples) // n)
    return [(s.test_image.name, s.test_image.read_bytes(), s.template_image.read_bytes()) for s in samples[::step][:n]]


def untrained_onnx(imgsz: int, out_dir: Path) -> Path:
    from ultralytics import YOLO

    model = YOLO("yolo12n.yaml")
    exported = Path(model.export(format="onnx", imgsz=imgsz, dynamic=False, simplify=True, opset=None))
    target = out_dir / f"yolo12n_untrained_{imgsz}.onnx"
    target.write_bytes(exported.read_bytes())
    return target


def resolve_weights(args) -> tuple[Path, str]:
    if args.weights:
        return Path(args.weights), f"--weights {args.weights}"
    if args.untrained_imgsz:
        return untrained_onnx(args.untrained_imgsz, Path(tempfile.mkdtemp(prefix="app_bench_model_"))), \
            f"untrained yolo12n.yaml exported to ONNX at {args.untrained_imgsz}"
    from pcb_pipeline.app.model import champion_version, champion_weights

    v = champion_version()
    return champion_weights(v), f"registered champion {v.name} v{v.version} (run {v.run_id})"


def stats(xs: list[float]) -> dict:
    xs = sorted(xs)
    return {"median_ms": round(1000 * statistics.median(xs), 1), "p90_ms": round(1000 * xs[int(0.9 * (len(xs) - 1))], 1),
            "min_ms": round(1000 * xs[0], 1), "mean_ms": round(1000 * statistics.fmean(xs), 1), "n": len(xs)}


def run(args) -> dict:
    cores = pin_cores(args.cores)
    from pcb_pipeline import settings

    settings.configure()
    import numpy as np
    from streamlit.elements.lib import image_utils

    from pcb_pipeline.app import vision
    from pcb_pipeline.app.model import load_detector

    weights, weights_desc = resolve_weights(args)
    t0 = time.perf_counter()
    if args.backend == "torch":  # for comparison: the PyTorch fallback the app uses when no best.onnx exists
        from pcb_pipeline.vision.detector import Detector

        detector = Detector(weights, prefer_onnx=False)
        detector.predict([np.zeros((detector.imgsz, detector.imgsz, 3), np.uint8)])
    else:
        detector = load_detector(weights, warm_up=True)
    load_s = time.perf_counter() - t0
    images = board_images(Path(args.data) if args.data else None, args.n)
    reference = detector.needs_template
    network_inputs = [detector.model_input(vision.load_image(b, name), vision.load_image(t, name) if reference
                                           else None) for name, b, t in images]

    def app(i):
        name, data, template = images[i % len(images)]
        return vision.inspect_bytes(data, name, detector, conf=0.25, template=template if reference else None)[0]

    def app_img(i):
        annotated = app(i)
        return image_utils._np_array_to_bytes(np.ascontiguousarray(vision.for_display(annotated)[:, :, ::-1]),
                                              output_format="JPEG")

    def raw(i):  # the detector's own model call on a decoded array (ONNX Runtime session or Ultralytics predict)
        return detector.network_rows(network_inputs[i % len(network_inputs)], conf=0.25)

    for i in range(3):  # warm-up of every path
        app(i), app_img(i), raw(i)
    times: dict[str, list[float]] = {"app": [], "app+img": [], "raw": []}
    fns = {"app": app, "app+img": app_img, "raw": raw}
    for i in range(args.n):
        order = ["app", "app+img", "raw"] if i % 2 == 0 else ["raw", "app+img", "app"]
        for k in order:
            t = time.perf_counter()
            fns[k](i)
            times[k].append(time.perf_counter() - t)
    res = {k: stats(v) for k, v in times.items()}
    shape = network_inputs[0].shape
    return {
        "date": dt.date.today().isoformat(),
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "cpus_total": os.cpu_count(), "cores_pinned": cores, "load_avg_1m": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
        "weights": weights_desc, "backend": detector.backend, "imgsz": detector.imgsz,
        "model_input": detector.input_mode,
        "torch_threads": __import__("torch").get_num_threads(),
        "image": f"{shape[1]}x{shape[0]} JPEG", "images": len(images), "model_load_s": round(load_s, 2),
        "results": res,
        "ratio_app_over_raw": round(res["app"]["median_ms"] / res["raw"]["median_ms"], 2),
        "ratio_app_img_over_raw": round(res["app+img"]["median_ms"] / res["raw"]["median_ms"], 2),
        "goal_ms": 500, "goal_met": res["app+img"]["p90_ms"] < 500,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights")
    ap.add_argument("--untrained-imgsz", type=int)
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "deeppcb"))
    ap.add_argument("--n", type=int, default=60)
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--backend", choices=["auto", "torch"], default="auto",
                    help="auto: what the app loads (ONNX Runtime when best.onnx is beside best.pt); torch: PyTorch")
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    out = run(args)
    text = json.dumps(out, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    r = out["results"]
    print(f"\n| {out['date']} | {out['weights']} | {out['backend']} @ {out['imgsz']} | "
          f"{r['app']['median_ms']} / {r['app']['p90_ms']} | {r['app+img']['median_ms']} / {r['app+img']['p90_ms']} | "
          f"{r['raw']['median_ms']} / {r['raw']['p90_ms']} | {out['ratio_app_over_raw']} | "
          f"{out['load_avg_1m']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
