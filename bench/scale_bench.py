"""Does the batch-inference path stay flat per board as volume grows? 10x, 100x and 1000x the demo's 40 held-out boards.

    .venv/bin/python bench/scale_bench.py [--scales 10 100 1000] [--out bench/scale_runs/latest.json]

Per scale, on a fresh local stage and DuckDB file, with N small synthetic board pairs generated on the fly
(96x96 JPEGs, distinct content, a template beside each board; the pixels are not the point), it times the steps that
could hide a quadratic cost, each per board:
- ``list``: ``LocalStage.list`` of the upload folder (what the sensor and the asset list);
- ``pair``: ``stage_templates`` (each board's template, one LIST per folder);
- ``plan``: the upload sensor's ``plan_uploads`` over the listing (settling, dedup by content hash, run keys), with
  an in-memory history and every file settled;
- ``infer+rows+insert``: ``run_batch`` (decoder thread, model thread, caller) with a constant-output detector (the
  model's own cost is per board by construction and measured elsewhere: bench/RESULTS.md), then ``build_rows`` and
  ``replace_batch`` of DEFECT_LOGS + BOARD_INSPECTIONS in one transaction;
- ``query``: the dashboard's yield query over the stored rows.
Flat = the per-board time at 1000x within a small factor of 10x (it includes fixed costs that shrink per board).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pcb_pipeline.backends.base import stage_templates  # noqa: E402
from pcb_pipeline.backends.local import DuckDBWarehouse, LocalStage  # noqa: E402
from pcb_pipeline.core.defect_logs import InspectedImage, build_rows  # noqa: E402
from pcb_pipeline.vision.batch import run_batch  # noqa: E402
from pcb_pipeline.vision.detector import Detection  # noqa: E402

DEMO_BOARDS = 40
YIELD_SQL = ("SELECT factory_line_id, COUNT(*) AS boards, SUM(IFF(defect_count = 0, 1, 0)) AS passed "
             "FROM BOARD_INSPECTIONS GROUP BY factory_line_id")


class ConstantDetector:
    """Two detections per board, instantly: isolates the pipeline's own per-board cost."""

    def predict(self, images, conf=None):
        return [[Detection(1, "short", 0.9, 10, 10, 20, 20), Detection(3, "spur", 0.8, 30, 30, 40, 44)]
                for _ in images]


class EmptyHistory:
    def known_keys(self):
        return set()

    def existing_run_keys(self, run_keys):
        return set()

    def content_owners(self, md5s):
        return {}

    def template_files_read(self, versions):
        return set()


def write_boards(stage_root: Path, n: int, seed: int = 0) -> list[str]:
    import cv2

    rng = np.random.default_rng(seed)
    folder = stage_root / "uploads" / "line1"
    folder.mkdir(parents=True, exist_ok=True)
    old = time.time() - 3600  # settled: the sensor would read them now
    paths = []
    template = np.full((96, 96), 255, np.uint8)
    template[20:30, :] = 0
    ok, tbytes = cv2.imencode(".jpg", template)
    for i in range(n):
        board = template.copy()
        y, x = rng.integers(0, 90, 2)
        board[y:y + 4, x:x + 4] = 255 - board[y, x]
        board[0, :8] = np.frombuffer(i.to_bytes(8, "little"), np.uint8)  # distinct content per board
        ok, data = cv2.imencode(".jpg", board)
        for name, payload in ((f"{i:07d}_test.jpg", data), (f"{i:07d}_temp.jpg", tbytes)):
            p = folder / name
            p.write_bytes(payload.tobytes())
            os.utime(p, (old, old))
        paths.append(f"uploads/line1/{i:07d}_test.jpg")
    return paths


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def run_scale(n: int, work: Path) -> dict:
    from pcb_pipeline.defs.sensors import UploadCursor, UploadSensorSettings, plan_uploads

    stage = LocalStage(work / "stage")
    wh = DuckDBWarehouse(work / "warehouse.duckdb")
    wh.ensure_schema()
    _, t_write = timed(lambda: write_boards(stage.root, n))
    listing, t_list = timed(lambda: stage.list("uploads"))
    boards = [f.path for f in listing if f.path.endswith("_test.jpg")]
    templates, t_pair = timed(lambda: stage_templates(stage, boards))
    settings = UploadSensorSettings(settle_s=0, stable_s=0, max_runs_per_tick=10 * n, tick_budget_s=1e9)
    plan, t_plan = timed(lambda: plan_uploads(listing, UploadCursor(), time.time(), settings, EmptyHistory(),
                                              lambda f: stage.path(f.path).read_bytes()))

    def infer_and_store():
        images = {p: stage.path(p) for p in boards}
        inspected = [InspectedImage(name, img.shape[1], img.shape[0], dets)
                     for name, img, dets, err in run_batch(ConstantDetector(), images) if err is None]
        logs, inspections = build_rows("scale", inspected, {}, "bench/1", "run", datetime.now(timezone.utc))
        return wh.replace_batch("batch_id", "scale", {"DEFECT_LOGS": logs, "BOARD_INSPECTIONS": inspections})

    written, t_store = timed(infer_and_store)
    rows, t_query = timed(lambda: wh.query(YIELD_SQL))
    assert written["BOARD_INSPECTIONS"] == n and len(templates) == n, (written, len(templates))
    per = {k: 1e6 * v / n for k, v in {"list": t_list, "pair": t_pair, "plan": t_plan, "infer+rows+insert": t_store,
                                        "query": t_query}.items()}
    return {"boards": n, "files_listed": len(listing), "runs_planned": len(plan.requests),
            "rows": written, "seconds": {"write_files": round(t_write, 2), "list": round(t_list, 3),
                                         "pair": round(t_pair, 3), "plan": round(t_plan, 3),
                                         "infer+rows+insert": round(t_store, 3), "query": round(t_query, 3)},
            "us_per_board": {k: round(v, 1) for k, v in per.items()}}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--scales", type=int, nargs="+", default=[10, 100, 1000])
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "scale_runs" / "latest.json")
    a = p.parse_args(argv)
    results = []
    for scale in a.scales:
        with tempfile.TemporaryDirectory(prefix=f"pcb-scale-{scale}-") as tmp:
            r = run_scale(DEMO_BOARDS * scale, Path(tmp))
        r["scale"] = scale
        results.append(r)
        print(json.dumps(r), flush=True)
    base = results[0]["us_per_board"]
    ratio = {k: round(results[-1]["us_per_board"][k] / base[k], 2) if base[k] else None for k in base}
    summary = {"date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()}, {os.cpu_count()} cores",
               "command": " ".join(["bench/scale_bench.py", *(argv or sys.argv[1:])]), "results": results,
               f"per_board_ratio_{a.scales[-1]}x_vs_{a.scales[0]}x": ratio}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps(summary[f"per_board_ratio_{a.scales[-1]}x_vs_{a.scales[0]}x"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
