"""Batch inference into DEFECT_LOGS: the pipelined run_batch vs a naive predict-and-insert loop, and the pipeline's
overhead over raw model time.

    .venv/bin/python bench/bench_batch.py [--weights .gpu_models/best.pt] [--images 100] [--reps 3]

Variants, interleaved rep by rep (order rotated each rep) on the same images, each into its own DuckDB file:
- ``raw_model``: ``session.run`` alone on inputs letterboxed beforehand (the pure model time; same session settings);
- ``pipeline``: ``run_batch`` (decoder thread -> lean ONNX Runtime thread -> caller), ``build_rows`` once for the batch,
  then ``DuckDBWarehouse.replace_rows`` for DEFECT_LOGS and BOARD_INSPECTIONS. Wall time from the first file read to
  the committed rows;
- ``pipeline_asset_style``: the same with ``build_rows`` called per image and the frames concatenated, as the
  ``defect_logs`` asset (through ``vision/inference.py``) did when this bench was written, minus plotting;
- ``naive``: ultralytics ``YOLO(best.pt).predict(path)`` per image and one ``INSERT`` per detection on one DuckDB
  connection with bound parameters (the kindest naive loop), torch at ``--naive-torch-threads``;
- ``naive_warehouse_api`` (``--warehouse-api-naive``): the same loop writing each row through the project's
  ``Warehouse.execute`` (a Snowflake-dialect INSERT string, transpiled, one connection per statement), the only
  single-row write the interface offers.
Throughput = images / wall second. Overhead = pipeline wall / raw model wall - 1. Medians over reps.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pcb_pipeline import settings  # noqa: E402



def _machine() -> dict:
    import platform

    return {"cpus": os.cpu_count(), "machine": platform.machine(), "python": platform.python_version()}


def run_pipeline(detector, paths, db: Path, batch_id: str, rows_per_image: bool = False) -> tuple[float, int]:
    import pandas as pd

    from pcb_pipeline.backends.local import DuckDBWarehouse
    from pcb_pipeline.core.defect_logs import InspectedImage, build_rows
    from pcb_pipeline.vision.batch import run_batch

    wh = DuckDBWarehouse(db)
    ts = datetime(2026, 11, 27, 12, 0, 0)
    t = time.perf_counter()
    logs, inspections, inspected = [], [], []
    for name, image, dets, error in run_batch(detector, {str(p): p for p in paths}):
        if error:
            continue
        if not rows_per_image:
            inspected.append(InspectedImage(name, image.shape[1], image.shape[0], dets))
            continue
        rows = build_rows(batch_id, [InspectedImage(name, image.shape[1], image.shape[0], dets)], {}, "bench/1",
                          "bench", ts)
        if len(rows[0]):
            logs.append(rows[0])
        inspections.append(rows[1])
    if not rows_per_image:
        rows = build_rows(batch_id, inspected, {}, "bench/1", "bench", ts)
        logs, inspections = [rows[0]], [rows[1]]
    wh.replace_rows("DEFECT_LOGS", "batch_id", batch_id, pd.concat(logs, ignore_index=True))
    wh.replace_rows("BOARD_INSPECTIONS", "batch_id", batch_id, pd.concat(inspections, ignore_index=True))
    wall = time.perf_counter() - t
    return wall, int(sum(len(x) for x in logs))


def _naive_rows(batch_id, path, result, ts):
    import json as _json

    from pcb_pipeline.core.classes import CLASS_NAMES
    from pcb_pipeline.core.defect_logs import board_id_from_path, inference_id

    b = result.boxes
    h, w = result.orig_shape
    out = []
    for i, (xyxy, conf, cls) in enumerate(zip(b.xyxy.tolist(), b.conf.tolist(), b.cls.tolist())):
        box = [round(v, 1) for v in xyxy]
        out.append([inference_id(batch_id, str(path), i), batch_id, board_id_from_path(str(path)), ts,
                    CLASS_NAMES[int(cls)], int(cls), float(conf), _json.dumps(box), *box, w, h, None, "bench/1",
                    "bench", str(path)])
    return out


def run_naive(model, paths, db: Path, batch_id: str, imgsz: int, warehouse_api: bool = False) -> tuple[float, int]:
    import duckdb

    from pcb_pipeline.backends.local import DuckDBWarehouse
    from pcb_pipeline.core.defect_logs import DEFECT_LOG_COLUMNS

    ts = datetime(2026, 11, 27, 12, 0, 0)
    cols = ", ".join(DEFECT_LOG_COLUMNS)
    marks = ", ".join("?" for _ in DEFECT_LOG_COLUMNS)
    n = 0
    t = time.perf_counter()
    if warehouse_api:
        wh = DuckDBWarehouse(db)
        for p in paths:
            r = model.predict(str(p), imgsz=imgsz, conf=0.25, device="cpu", verbose=False)[0]
            for row in _naive_rows(batch_id, p, r, ts):
                vals = ", ".join("NULL" if v is None else (f"'{v}'" if isinstance(v, (str, datetime)) else repr(v))
                                 for v in row)
                wh.execute(f"INSERT INTO DEFECT_LOGS ({cols}) VALUES ({vals})")
                n += 1
    else:
        con = duckdb.connect(str(db))
        for p in paths:
            r = model.predict(str(p), imgsz=imgsz, conf=0.25, device="cpu", verbose=False)[0]
            for row in _naive_rows(batch_id, p, r, ts):
                con.execute(f"INSERT INTO DEFECT_LOGS ({cols}) VALUES ({marks})", row)
                n += 1
        con.close()
    return time.perf_counter() - t, n


def run_raw(detector, blobs) -> float:
    model, name = detector.model, detector.model.input_name
    t = time.perf_counter()
    for b in blobs:
        model.session.run(None, {name: b})  # the session the detector would pick now (spinning or not)
    return time.perf_counter() - t


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", default=str(ROOT / ".gpu_models" / "best.pt"))
    p.add_argument("--deeppcb-root", default=str(ROOT.parent / "shared" / "deeppcb"))
    p.add_argument("--images", type=int, default=100)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--naive-torch-threads", type=int, default=1)
    p.add_argument("--warehouse-api-naive", action="store_true")
    p.add_argument("--skip-naive", action="store_true")
    p.add_argument("--out")
    args = p.parse_args(argv)
    settings.configure()
    import torch
    from ultralytics import YOLO

    from pcb_pipeline.backends.local import DuckDBWarehouse
    from pcb_pipeline.core import deeppcb
    from pcb_pipeline.core.images import read_image
    from pcb_pipeline.vision.detector import Detector

    torch.set_num_threads(args.naive_torch_threads)
    samples = deeppcb.read_split(deeppcb.split_file_path(Path(args.deeppcb_root)))
    step = max(1, len(samples) // args.images)
    paths = [s.test_image for s in samples[::step][: args.images]]
    detector = Detector(args.weights)
    assert detector.backend == "onnxruntime"
    blobs = [detector.model.preprocess(read_image(p))[0] for p in paths]
    model = None if args.skip_naive else YOLO(str(args.weights))
    tmp = Path(tempfile.mkdtemp(prefix="pcb-bench-batch-"))

    def fresh_db(tag: str, rep: int) -> Path:
        db = tmp / f"{tag}_{rep}.duckdb"
        DuckDBWarehouse(db).ensure_schema()
        return db

    variants = {"raw_model": lambda rep: (run_raw(detector, blobs), None),
                "pipeline": lambda rep: run_pipeline(detector, paths, fresh_db("pipe", rep), f"b{rep}"),
                "pipeline_asset_style": lambda rep: run_pipeline(detector, paths, fresh_db("pipea", rep), f"b{rep}",
                                                                 rows_per_image=True)}
    if model is not None:
        variants["naive"] = lambda rep: run_naive(model, paths, fresh_db("naive", rep), f"b{rep}", detector.imgsz)
        if args.warehouse_api_naive:
            variants["naive_warehouse_api"] = lambda rep: run_naive(model, paths, fresh_db("naivewh", rep), f"b{rep}",
                                                                    detector.imgsz, warehouse_api=True)
    # warm-up: sessions, torch kernels, DuckDB
    run_raw(detector, blobs[:3])
    run_pipeline(detector, paths[:3], fresh_db("warm", 0), "w")
    if model is not None:
        run_naive(model, paths[:3], fresh_db("warmn", 0), "w", detector.imgsz)

    names = list(variants)
    walls = {k: [] for k in names}
    rows = {k: [] for k in names}
    load = [os.getloadavg()[0]]
    for rep in range(args.reps):
        order = names[rep % len(names):] + names[: rep % len(names)]
        for k in order:
            wall, n = variants[k](rep)
            walls[k].append(wall)
            rows[k].append(n)
            load.append(os.getloadavg()[0])
            print(f"rep {rep} {k}: {wall:.2f} s ({len(paths) / wall:.1f} img/s) rows {n}", file=sys.stderr,
                  flush=True)

    med = {k: statistics.median(v) for k, v in walls.items()}
    res = {
        "bench": "batch inference into DEFECT_LOGS (DuckDB)",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": "python bench/bench_batch.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": _machine(), "loadavg_1m_during": [round(x, 2) for x in load],
        "weights": args.weights, "imgsz": detector.imgsz, "images": len(paths), "reps": args.reps,
        "ort_threads": detector.model.threads, "naive_torch_threads": torch.get_num_threads(),
        "wall_s_median": {k: round(v, 3) for k, v in med.items()},
        "wall_s_all": {k: [round(x, 3) for x in v] for k, v in walls.items()},
        "images_per_s": {k: round(len(paths) / v, 2) for k, v in med.items()},
        "ms_per_image": {k: round(1000 * v / len(paths), 1) for k, v in med.items()},
        "defect_rows": {k: v[0] for k, v in rows.items() if v[0] is not None},
        "pipeline_overhead_over_raw_model": round(med["pipeline"] / med["raw_model"] - 1, 4),
        "overhead_median_of_reps": round(statistics.median(p / r - 1 for p, r in zip(walls["pipeline"],
                                                                                       walls["raw_model"])), 4),
        "asset_style_overhead_over_raw_model": round(med["pipeline_asset_style"] / med["raw_model"] - 1, 4),
        "targets": {"speedup_vs_naive": ">= 3", "overhead": "<= 0.10"},
    }
    for k in ("naive", "naive_warehouse_api"):
        if k in med:
            res[f"speedup_pipeline_vs_{k}"] = round(med[k] / med["pipeline"], 2)
            res[f"speedup_asset_style_vs_{k}"] = round(med[k] / med["pipeline_asset_style"], 2)
    text = json.dumps(res, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
