"""A deterministic defect dataset for the question -> SQL tests and the evaluation set.

Rows follow the real table contracts (sql/tables.sql, pcb_pipeline.core.defect_logs, pcb_pipeline.core.metadata):
boards with metadata, one inspection per board image with its defect count, and one DEFECT_LOGS row per defect.
Timestamps fall in the `days` days up to `today`, so relative ranges (yesterday, last week, this month) have rows.
Lines differ on purpose (SHANGHAI has more mousebites, PENANG more shorts, GUADALAJARA fewer defects overall) so that
breakdowns and top-N questions have one right answer.
"""
from __future__ import annotations

import hashlib
import json
import random
from datetime import date, datetime, timedelta

import pandas as pd

from pcb_pipeline.core.classes import CLASS_NAMES
from pcb_pipeline.core.defect_logs import DEFECT_LOG_COLUMNS, INSPECTION_COLUMNS
from pcb_pipeline.core.metadata import FACTORY_LINES, board_metadata

# relative weights of the six classes per line
CLASS_WEIGHTS = {
    "SHANGHAI": (1.0, 1.0, 3.0, 1.2, 1.0, 0.8),
    "SHENZHEN": (1.2, 1.0, 1.0, 1.8, 1.0, 1.0),
    "PENANG": (1.0, 2.6, 1.0, 1.0, 1.2, 0.9),
    "GUADALAJARA": (1.0, 1.0, 1.0, 1.0, 1.0, 2.2),
}
# mean defects per board and the share of defect-free boards, per line
LINE_PROFILE = {"SHANGHAI": (5.0, 0.20), "SHENZHEN": (4.2, 0.25), "PENANG": (4.6, 0.22), "GUADALAJARA": (3.0, 0.35)}
MODEL_VERSIONS = ("pcb-yolo12n/3", "pcb-yolo12n/4")


def generate(n_boards: int = 600, days: int = 75, seed: int = 11, today: date | None = None) -> dict[str, pd.DataFrame]:
    """{"PCB_METADATA": ..., "BOARD_INSPECTIONS": ..., "DEFECT_LOGS": ...} with the columns of sql/tables.sql."""
    today = today or date.today()
    rng = random.Random(seed)
    meta_rows, insp_rows, log_rows = [], [], []
    for n in range(n_boards):
        group = f"{90000 + (n % 24) * 10}"
        board_id = f"{group}{n:03d}"
        meta = board_metadata(board_id, f"group{group}", today)
        meta["source_image_path"] = f"raw/demo/group{group}/{board_id}_test.jpg"
        meta_rows.append(meta)
        line = meta["factory_line_id"]
        # inspected 0..2 days after manufacture, spread over the window (some boards today)
        day_offset = rng.randrange(0, days)
        ts = datetime.combine(today - timedelta(days=day_offset), datetime.min.time()) + timedelta(
            seconds=rng.randrange(6 * 3600, 22 * 3600))
        if ts > datetime.now():
            ts = datetime.combine(today, datetime.min.time()) + timedelta(seconds=rng.randrange(0, 3600))
        batch_id = f"demo-{ts:%Y%m%d}"
        mean, p_clean = LINE_PROFILE[line]
        if rng.random() < p_clean:
            k = 0
        else:
            k = max(1, min(14, int(round(rng.gauss(mean, 2.6)))))
        model_version = MODEL_VERSIONS[0] if day_offset > 30 else MODEL_VERSIONS[1]
        image_path = meta["source_image_path"]
        insp_rows.append([batch_id, board_id, ts, k, line, model_version, "run-demo", image_path])
        weights = CLASS_WEIGHTS[line]
        for i in range(k):
            cls_id = rng.choices(range(len(CLASS_NAMES)), weights=weights)[0]
            conf = round(min(0.99, max(0.25, rng.betavariate(6, 2))), 4)
            x1, y1 = rng.randrange(0, 600), rng.randrange(0, 600)
            x2, y2 = x1 + rng.randrange(8, 40), y1 + rng.randrange(8, 40)
            iid = hashlib.sha1(f"{batch_id}|{image_path}|{i}".encode()).hexdigest()[:20]
            log_rows.append([iid, batch_id, board_id, ts, CLASS_NAMES[cls_id], cls_id, conf,
                             json.dumps([x1, y1, x2, y2]), float(x1), float(y1), float(x2), float(y2), 640, 640, line,
                             model_version, "run-demo", image_path])
    metadata = pd.DataFrame(meta_rows)[["board_id", "board_group", "manufacturing_date", "factory_line_id",
                                        "product_type", "production_shift", "source_image_path"]]
    return {
        "PCB_METADATA": metadata,
        "BOARD_INSPECTIONS": pd.DataFrame(insp_rows, columns=INSPECTION_COLUMNS),
        "DEFECT_LOGS": pd.DataFrame(log_rows, columns=DEFECT_LOG_COLUMNS),
    }


def load_into(warehouse, frames: dict[str, pd.DataFrame] | None = None, **kw) -> dict[str, int]:
    """Insert the sample rows through the Warehouse interface (tables must exist: warehouse.ensure_schema())."""
    frames = frames or generate(**kw)
    keys = {"PCB_METADATA": ["board_id"], "BOARD_INSPECTIONS": ["batch_id", "image_path"],
            "DEFECT_LOGS": ["inference_id"]}
    return {t: warehouse.upsert(t, keys[t], df) for t, df in frames.items()}


def _ensure_lines() -> None:  # keep the profile tables in step with the project's factory lines
    assert set(LINE_PROFILE) == set(FACTORY_LINES) == set(CLASS_WEIGHTS)


_ensure_lines()
