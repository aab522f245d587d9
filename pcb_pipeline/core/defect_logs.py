"""Rows for DEFECT_LOGS and BOARD_INSPECTIONS from detections. Pure: the caller supplies time and versions."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import PurePosixPath

import pandas as pd

from .classes import CLASS_NAMES

DEFECT_LOG_COLUMNS = ["inference_id", "batch_id", "board_id", "timestamp", "detected_class", "class_id",
                      "confidence_score", "bounding_box_coordinates", "x1", "y1", "x2", "y2", "image_width",
                      "image_height", "factory_line_id", "model_version", "run_id", "image_path"]
INSPECTION_COLUMNS = ["batch_id", "board_id", "timestamp", "defect_count", "factory_line_id", "model_version",
                      "run_id", "image_path"]


@dataclass(frozen=True)
class InspectedImage:
    image_path: str  # stage path
    width: int
    height: int
    detections: list  # objects with class_id, confidence, x1, y1, x2, y2
    timestamp: datetime | None = None  # when the image was taken/landed; None: the batch's timestamp


def board_id_from_path(image_path: str) -> str:
    """`.../20085000_test.jpg` and `.../20085000.jpg` both name board 20085000."""
    stem = PurePosixPath(image_path).stem
    for suffix in ("_test", "_temp"):
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
    return stem


def inference_id(batch_id: str, image_path: str, index: int) -> str:
    """Stable across re-runs of a batch, so a re-run replaces rows rather than adding new ones."""
    return hashlib.sha1(f"{batch_id}|{image_path}|{index}".encode()).hexdigest()[:20]


def _naive_utc(t: datetime) -> pd.Timestamp:
    ts = pd.Timestamp(t)
    return ts.tz_convert("UTC").tz_localize(None) if ts.tzinfo else ts


def build_rows(batch_id: str, images: list[InspectedImage], factory_lines: dict[str, str], model_version: str,
               run_id: str, timestamp: datetime) -> tuple[pd.DataFrame, pd.DataFrame]:
    logs, inspections = [], []
    for im in images:
        ts = _naive_utc(im.timestamp if im.timestamp is not None else timestamp)
        board = board_id_from_path(im.image_path)
        line = factory_lines.get(board)
        ordered = sorted(im.detections, key=lambda d: (-d.confidence, d.x1, d.y1))
        for i, d in enumerate(ordered):
            box = [round(float(v), 1) for v in (d.x1, d.y1, d.x2, d.y2)]
            logs.append([inference_id(batch_id, im.image_path, i), batch_id, board, ts, CLASS_NAMES[d.class_id],
                         int(d.class_id), float(d.confidence), json.dumps(box), *box, im.width, im.height, line,
                         model_version, run_id, im.image_path])
        inspections.append([batch_id, board, ts, len(ordered), line, model_version, run_id, im.image_path])
    return (pd.DataFrame(logs, columns=DEFECT_LOG_COLUMNS), pd.DataFrame(inspections, columns=INSPECTION_COLUMNS))
