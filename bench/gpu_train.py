"""GPU training recipe: yolo12n on Deep PCB trainval (group split), evaluated three ways, exported to ONNX.

Run through ``bench/gpu_train.sh`` (which installs the carried wheels and sets the offline environment); directly:

    OUT=/tmp/out python bench/gpu_train.py [--data .gpu_data/deeppcb] [--hours 0.1] [--input test|reference] [--smoke]

Steps, each recorded in $OUT/metrics.json as soon as it ends (a later failure loses nothing before it):
1. environment (GPU, versions) and the group split (``group_split``: validation groups never seen in training);
2. the legacy AOI baseline (``core.aoi``, parameters tuned on training groups by bench/aoi_tune.py) on the
   validation pairs, in a process pool, before training starts (CPU only);
3. conversion with ``write_yolo_dataset``; training yolo12n from ``yolo12n.yaml`` (no pretrained weights) with the
   product's "full" profile (imgsz 960, patience 50, mosaic closed for the last third) and a device wall-clock cap (ultralytics ``time=`` hours: epochs are re-estimated after each epoch so the LR schedule and the
   closing no-mosaic epochs fit the budget). Binary board images: no HSV jitter, vertical and horizontal flips,
   mosaic on. AMP: ultralytics' AMP check downloads yolo26n.pt (no network here), so the check is replaced by
   ``True`` and fp16 mixed precision is used;
4. ultralytics validation of best.pt on the validation groups (mAP50, mAP50-95, per class);
5. the Deep PCB protocol (``core.detection_metrics``: IoU > 0.33, typed and class-agnostic) on the same images,
   and the model vs the AOI baseline at matched recall (false calls per board, false-call rate);
6. ONNX export (CPU graph, 640, simplified) next to best.pt.
``--input reference`` (the default; GPU_TRAIN_INPUT=test for the board image alone) trains the reference-aware variant: every image is the
composite of ``core.reference`` (test, registered template layout, difference), for training, validation and the
protocol predictions alike; best.pt and best.onnx are stamped so that ``Detector`` asks for templates.
Files in $OUT (at most 8 come back): metrics.json, train.log (by the .sh), results.csv, best.pt, best.onnx,
val_predictions.json, results.md.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import shutil
import sys
import time
import traceback
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pcb_pipeline.core.aoi import DEFAULT_PARAMS, AOIParams, inspect_sample  # noqa: E402
from pcb_pipeline.core.classes import CLASS_NAMES  # noqa: E402
from pcb_pipeline.core.deeppcb import group_split, read_labels, read_split, split_file_path  # noqa: E402
from pcb_pipeline.core.detection_metrics import compare_at_matched_recall, evaluate_detections  # noqa: E402
from pcb_pipeline.core.reference import INPUT_MODES, REFERENCE, sample_composite  # noqa: E402
from pcb_pipeline.core.yolo_format import write_yolo_dataset  # noqa: E402
from pcb_pipeline.vision.detector import stamp_input_mode  # noqa: E402

T0 = time.perf_counter()


def log(msg: str) -> None:
    print(f"[gpu_train {time.perf_counter() - T0:7.1f}s] {msg}", flush=True)


class Record:
    """metrics.json, rewritten after every step."""

    def __init__(self, path: Path):
        self.path = path
        self.data: dict = {}

    def __setitem__(self, key, value):
        self.data[key] = value
        self.data["elapsed_s"] = round(time.perf_counter() - T0, 1)
        self.path.write_text(json.dumps(self.data, indent=1, default=_jsonable) + "\n")

    def __getitem__(self, key):
        return self.data[key]


def _jsonable(o):
    try:
        import numpy as np

        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
    except ImportError:
        pass
    return str(o)


def step(rec: Record, name: str):
    """Decorator-free guard: run fn, record its result or its traceback under ``name``."""
    def run(fn, *a, **kw):
        t = time.perf_counter()
        log(f"--- {name}")
        try:
            out = fn(*a, **kw)
            rec[name] = out
            log(f"--- {name} done in {time.perf_counter() - t:.1f} s")
            return out
        except Exception as e:  # noqa: BLE001 - record and go on: later steps may still work
            rec[name] = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-4000:]}
            log(f"--- {name} FAILED: {type(e).__name__}: {e}")
            traceback.print_exc()
            return None
    return run


# ------------------------------------------------------------------------------------------------ environment


def environment() -> dict:
    env = {"python": platform.python_version(), "machine": platform.node(), "cpus": os.cpu_count()}
    try:
        import torch

        env["torch"] = torch.__version__
        env["cuda"] = torch.cuda.is_available()
        if torch.cuda.is_available():
            env["gpu"] = torch.cuda.get_device_name(0)
            env["gpu_mem_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
    except Exception as e:  # noqa: BLE001
        env["torch_error"] = repr(e)
    for mod in ("ultralytics", "cv2", "numpy", "onnx", "onnxruntime", "onnxslim"):
        try:
            env[mod] = __import__(mod).__version__
        except Exception as e:  # noqa: BLE001
            env[mod] = f"missing ({type(e).__name__})"
    return env


def patch_ultralytics(block_polars: bool) -> None:
    """Offline-safe ultralytics: no AMP-check download, no polars needed, no logger integrations."""
    if block_polars:  # simulate the GPU machine (no polars wheel carried: 54 MB of the 64 MiB budget)
        sys.modules["polars"] = None  # type: ignore[assignment]
    import ultralytics.engine.trainer as trainer_mod
    import ultralytics.utils.checks as checks
    from ultralytics.utils import SETTINGS

    def check_amp_offline(model):  # the real check downloads yolo26n.pt to compare FP32 and AMP outputs
        import torch

        ok = next(model.parameters()).device.type == "cuda" and torch.cuda.is_available()
        log(f"AMP check replaced (offline): amp={'fp16' if ok else 'off (not on CUDA)'}")
        return ok

    checks.check_amp = check_amp_offline
    trainer_mod.check_amp = check_amp_offline

    def read_results_csv(self):  # ultralytics reads results.csv with polars in save_model(): stdlib instead
        import csv

        try:
            with open(self.csv, newline="") as f:
                rows = list(csv.DictReader(f))
        except OSError:
            return {}
        out: dict[str, list] = {}
        for r in rows:
            for k, v in r.items():
                k = k.strip()
                try:
                    out.setdefault(k, []).append(float(v))
                except (TypeError, ValueError):
                    out.setdefault(k, []).append(v)
        return out

    trainer_mod.BaseTrainer.read_results_csv = read_results_csv
    off = {k: False for k in ("mlflow", "tensorboard", "wandb", "clearml", "comet", "dvc", "neptune", "raytune",
                              "hub", "sync") if k in SETTINGS}
    SETTINGS.update(off)


# ------------------------------------------------------------------------------------------------------- AOI


def _aoi_rows(args):
    sample, params = args
    t = time.perf_counter()
    res = inspect_sample(sample, params)
    return res.rows(), res.misaligned, time.perf_counter() - t


def run_aoi(val, params: AOIParams, workers: int) -> tuple[dict, list]:
    ctx = multiprocessing.get_context("spawn")  # CUDA may be initialised in this process already: no fork
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as ex:
        out = list(ex.map(_aoi_rows, [(s, params) for s in val], chunksize=4))
    rows = [o[0] for o in out]
    gts = [_gts(s) for s in val]
    agn = evaluate_detections(rows, gts, class_agnostic=True)
    typed = evaluate_detections(rows, gts, num_classes=len(CLASS_NAMES))
    from pcb_pipeline.core.detection_metrics import operating_point

    return {
        "params": params.to_dict(),
        "n_images": len(val),
        "misaligned": [s.image_id for s, o in zip(val, out) if o[1]],
        "ms_per_pair_one_core": round(1000 * sum(o[2] for o in out) / max(1, len(out)), 1),
        "operating": operating_point(rows, gts, params.threshold, class_agnostic=True).to_dict(),
        "class_agnostic": agn.to_dict(),
        "typed": typed.to_dict(class_names=CLASS_NAMES),
    }, rows


def _gts(sample) -> list[tuple]:
    return [(b.x1, b.y1, b.x2, b.y2, b.class_id) for b in read_labels(sample.label_file)]


# ------------------------------------------------------------------------------------------------ training


def recipe(smoke: bool, hours: float, device: str) -> dict:
    """The product's "full" profile (vision/profiles.py: imgsz 960, patience 50, no HSV, mosaic closed for the last
    third, seed 0), the same one the Snowflake ML Job trains with, plus what this one lent GPU needs: a wall cap
    for the device budget (ultralytics re-estimates the epochs to fit it), large batches, AMP, RAM cache."""
    from pcb_pipeline.vision.profiles import resolve_profile

    r = resolve_profile("full")
    r.update(pretrained=False, time=hours, batch=64, workers=14, cache="ram", device=device, amp=True,
             optimizer="auto", cos_lr=False, plots=False, deterministic=False, val=True)  # val: patience needs it
    if smoke:
        r.update(imgsz=160, epochs=1, time=None, batch=4, workers=0, cache=False)  # amp=True: patched check runs
    # GPU_TRAIN_SET="batch=16,scale=0.5": recipe variants for the tuning table, without editing the script
    for item in filter(None, os.environ.get("GPU_TRAIN_SET", "").split(",")):
        key, value = item.split("=", 1)
        r[key] = type(r[key])(value) if key in r and r[key] is not None and not isinstance(r[key], bool) else value
    return r


def train(data_yaml: Path, project: Path, rec_recipe: dict) -> dict:
    from ultralytics import YOLO

    model = YOLO(rec_recipe["model"])
    kw = {k: v for k, v in rec_recipe.items() if k not in ("model",) and v is not None}
    t = time.perf_counter()
    model.train(data=str(data_yaml), project=str(project), name="train", exist_ok=True, verbose=True, **kw)
    wall = time.perf_counter() - t
    tr = model.trainer
    save_dir = Path(tr.save_dir)
    csv_rows = (save_dir / "results.csv").read_text().splitlines() if (save_dir / "results.csv").exists() else []
    return {"wall_s": round(wall, 1), "epochs_completed": max(0, len(csv_rows) - 1),
            "epochs_planned_final": int(tr.epochs), "save_dir": str(save_dir),
            "best": str(tr.best), "last": str(tr.last)}


def ultralytics_val(weights: Path, data_yaml: Path, imgsz: int, device: str, project: Path) -> dict:
    from ultralytics import YOLO

    m = YOLO(str(weights))
    mt = m.val(data=str(data_yaml), split="val", imgsz=imgsz, batch=32, device=device, plots=False, conf=0.001,
               iou=0.7, project=str(project), name="val", exist_ok=True, verbose=False)
    per_class = {}
    for i, c in enumerate(mt.box.ap_class_index):
        p, r, ap50, ap = mt.box.class_result(i)
        per_class[CLASS_NAMES[int(c)]] = {"precision": p, "recall": r, "ap50": ap50, "ap50_95": ap}
    return {"map50": float(mt.box.map50), "map50_95": float(mt.box.map), "precision": float(mt.box.mp),
            "recall": float(mt.box.mr), "per_class": per_class, "speed_ms": dict(mt.speed)}


def _model_inputs(val, input_mode: str):
    """What the model sees per validation pair: the test image path, or its reference composite (an array)."""
    for s in val:
        if input_mode == REFERENCE:
            yield sample_composite(s)
        else:
            yield str(s.test_image)


def model_predictions(weights: Path, val, imgsz: int, device: str, input_mode: str) -> tuple[list, dict]:
    from ultralytics import YOLO

    m = YOLO(str(weights))
    rows, speed = [], {"preprocess": 0.0, "inference": 0.0, "postprocess": 0.0}
    inputs = list(_model_inputs(val, input_mode))
    for res in m.predict(inputs, imgsz=imgsz, conf=0.001, iou=0.7, max_det=300, device=device, stream=True,
                         verbose=False, batch=16):
        b = res.boxes
        xyxy = b.xyxy.cpu().numpy().tolist()
        conf = b.conf.cpu().numpy().tolist()
        cls = b.cls.cpu().numpy().astype(int).tolist()
        rows.append([(*(round(v, 1) for v in xy), round(c, 5), k) for xy, c, k in zip(xyxy, conf, cls)])
        for k in speed:
            speed[k] += res.speed.get(k, 0.0) / len(inputs)
    return rows, {k: round(v, 2) for k, v in speed.items()}


def deeppcb_protocol(rows, val) -> dict:
    gts = [_gts(s) for s in val]
    return {
        "typed": evaluate_detections(rows, gts, num_classes=len(CLASS_NAMES)).to_dict(class_names=CLASS_NAMES),
        "class_agnostic": evaluate_detections(rows, gts, class_agnostic=True).to_dict(),
    }


def versus_aoi(model_rows, aoi_rows, val, aoi_report: dict) -> dict:
    gts = [_gts(s) for s in val]
    targets = {"aoi_operating_recall": aoi_report["operating"]["recall"], "0.90": 0.90, "0.95": 0.95,
               "0.98": 0.98}
    out = {}
    for name, r in targets.items():
        out[name] = {
            "class_agnostic": compare_at_matched_recall(model_rows, aoi_rows, gts, r, class_agnostic=True),
            "typed": compare_at_matched_recall(model_rows, aoi_rows, gts, r, class_agnostic=False),
        }
    return out


def export_onnx(weights: Path, imgsz: int) -> dict:
    from ultralytics import YOLO

    t = time.perf_counter()
    path = YOLO(str(weights)).export(format="onnx", imgsz=imgsz, device="cpu", simplify=True, dynamic=False)
    return {"path": str(path), "seconds": round(time.perf_counter() - t, 1),
            "mib": round(Path(path).stat().st_size / 2**20, 2)}


def results_md(rec: Record) -> str:
    d = rec.data
    env, tr, uv = d.get("environment", {}), d.get("train", {}), d.get("ultralytics_val", {})
    dp, aoi, vs = d.get("deeppcb_protocol", {}), d.get("aoi_baseline", {}), d.get("fpr_reduction", {})
    lines = [f"GPU: {env.get('gpu')} | torch {env.get('torch')} | ultralytics {env.get('ultralytics')} | "
             f"input: {d.get('input_mode', 'test')} | recipe: {json.dumps(d.get('recipe', {}))}", ""]
    if "wall_s" in tr:
        lines.append(f"- training: {tr['epochs_completed']} epochs in {tr['wall_s']} s wall; "
                     f"whole script {d.get('elapsed_s')} s")
    if "map50" in uv:
        pc = ", ".join(f"{k} {v['ap50']:.3f}" for k, v in uv["per_class"].items())
        lines.append(f"- ultralytics val (held-out groups): mAP50 {uv['map50']:.4f}, mAP50-95 {uv['map50_95']:.4f};"
                     f" AP50 per class: {pc}")
    if "typed" in dp:
        t, a = dp["typed"], dp["class_agnostic"]
        lines.append(f"- Deep PCB protocol (IoU>0.33): mAP {t['map']:.4f}, best F {t['best_f']['f']:.4f}; "
                     f"class-agnostic AP {a['map']:.4f}, best F {a['best_f']['f']:.4f}")
    if "operating" in aoi:
        o = aoi["operating"]
        lines.append(f"- AOI baseline (val): AP {aoi['class_agnostic']['map']:.4f}, at its tuned threshold recall "
                     f"{o['recall']:.4f} precision {o['precision']:.4f} false calls/board "
                     f"{o['false_calls_per_board']:.3f}; typed mAP {aoi['typed']['map']:.4f}")
    for name, v in vs.items() if isinstance(vs, dict) else []:
        if not isinstance(v, dict) or "class_agnostic" not in v:
            continue
        c = v["class_agnostic"]
        lines.append(f"- matched recall {c['target_recall']:.4f} ({name}), class-agnostic: model false calls/board "
                     f"{c['model']['false_calls_per_board']:.3f} (reached {c['model']['reached']}) vs AOI "
                     f"{c['baseline']['false_calls_per_board']:.3f} (reached {c['baseline']['reached']}); "
                     f"fpr_reduction {c['fpr_reduction']}")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path(os.environ.get("GPU_DATA", ROOT / ".gpu_data" / "deeppcb")))
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "/tmp/gpu_out")))
    ap.add_argument("--work", type=Path, default=Path(os.environ.get("GPU_WORK", "/tmp/gpu_work")))
    ap.add_argument("--hours", type=float, default=float(os.environ.get("GPU_TRAIN_HOURS", "0.1")))
    ap.add_argument("--input", choices=INPUT_MODES, default=os.environ.get("GPU_TRAIN_INPUT", "reference"),
                    help="model input: the test image, or the reference composite (core.reference)")
    ap.add_argument("--smoke", action="store_true", default=os.environ.get("GPU_TRAIN_SMOKE") == "1",
                    help="CPU check of the whole path: 16+8 images, 1 epoch at 160")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    rec = Record(args.out / "metrics.json")

    rec["environment"] = environment()
    log(json.dumps(rec["environment"]))
    patch_ultralytics(block_polars=os.environ.get("GPU_TRAIN_BLOCK_POLARS", "1") == "1")
    import torch

    device = "0" if torch.cuda.is_available() and not args.smoke else "cpu"

    if not (args.data / "PCBData" / "trainval.txt").is_file():
        fallback = ROOT.parent / "shared" / "deeppcb"
        log(f"no Deep PCB at {args.data}; using {fallback}")
        args.data = fallback
    samples = read_split(split_file_path(args.data, "trainval"))
    train_s, val_s = group_split(samples)
    if args.smoke:
        train_s, val_s = train_s[::50][:16], val_s[::25][:8]
    rec["split"] = {"data": str(args.data), "train_images": len(train_s), "val_images": len(val_s),
                    "train_groups": sorted({s.group for s in train_s}),
                    "val_groups": sorted({s.group for s in val_s})}
    log(json.dumps(rec["split"]))

    # AOI first: CPU work, done before the GPU is busy; needs the validation templates
    held: dict = {}

    def aoi_step():
        report, held["aoi_rows"] = run_aoi(val_s, DEFAULT_PARAMS, min(12, os.cpu_count() or 2))
        return report

    aoi_report = step(rec, "aoi_baseline")(aoi_step)
    aoi_rows = held.get("aoi_rows")

    ds = step(rec, "dataset")(lambda: write_yolo_dataset({"train": train_s, "val": val_s}, args.work / "deeppcb_yolo",
                                                          input_mode=args.input).to_dict())
    if not ds:
        return 2
    data_yaml = Path(ds["data_yaml"])
    rec["input_mode"] = args.input
    rec["recipe"] = recipe(args.smoke, args.hours, device)
    t_train = time.perf_counter()
    tr = step(rec, "train")(train, data_yaml, args.work / "runs", rec["recipe"])
    spent = time.perf_counter() - t_train
    if not tr and spent < 0.4 * 3600 * (args.hours or 0) and not args.smoke:
        # an early failure (data loader shared memory, batch too large...): once more, conservatively, in the time left
        retry = {**rec["recipe"], "batch": 32, "workers": 4, "cache": False,
                 "time": round(max(0.02, args.hours - spent / 3600), 4)}
        rec["recipe_retry"] = retry
        tr = step(rec, "train_retry")(train, data_yaml, args.work / "runs_retry", retry)
    if not tr:
        return 3
    weights = Path(tr["best"]) if Path(tr["best"]).exists() else Path(tr["last"])
    shutil.copyfile(weights, args.out / "best.pt")
    stamp_input_mode(args.out / "best.pt", args.input)
    results_csv = Path(tr["save_dir"]) / "results.csv"
    if results_csv.exists():
        shutil.copyfile(results_csv, args.out / "results.csv")
    imgsz = rec["recipe"]["imgsz"]

    step(rec, "ultralytics_val")(ultralytics_val, weights, data_yaml, imgsz, device, args.work / "runs")
    def predict_step():
        held["rows"], speed = model_predictions(weights, val_s, imgsz, device, args.input)
        return {"n_images": len(held["rows"]), "n_boxes": sum(map(len, held["rows"])), "speed_ms": speed}

    if step(rec, "model_predictions")(predict_step):
        rows = held["rows"]
        (args.out / "val_predictions.json").write_text(json.dumps(
            {"image_ids": [s.image_id for s in val_s], "model": rows, "aoi": aoi_rows,
             "columns": ["x1", "y1", "x2", "y2", "score", "class_id"]}, default=_jsonable))
        step(rec, "deeppcb_protocol")(deeppcb_protocol, rows, val_s)
        if aoi_rows is not None and aoi_report:
            step(rec, "fpr_reduction")(versus_aoi, rows, aoi_rows, val_s, aoi_report)
    exp = step(rec, "export")(export_onnx, weights, imgsz)
    if exp and Path(exp["path"]).exists():
        shutil.copyfile(exp["path"], args.out / "best.onnx")
        stamp_input_mode(args.out / "best.onnx", args.input)
    (args.out / "results.md").write_text(results_md(rec))
    rec["done"] = True
    log("summary:\n" + results_md(rec))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
