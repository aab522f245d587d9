"""Evaluate weights on any Deep PCB split file: Ultralytics mAP50 / mAP50-95 overall and per class."""
from __future__ import annotations

import tempfile
from pathlib import Path

from pcb_pipeline.core import deeppcb, yolo_format
from pcb_pipeline.vision.detector import training_imgsz
from pcb_pipeline.vision.train import evaluation_metrics


def evaluate_split(weights: Path, split_file: Path, imgsz: int | None = None, batch: int = 8) -> dict:
    from ultralytics import YOLO

    samples = deeppcb.read_split(split_file)
    if not samples:
        raise ValueError(f"split file {split_file} lists no images")
    pt = Path(weights)
    imgsz = imgsz or (training_imgsz(pt) if pt.suffix == ".pt" else 640)
    with tempfile.TemporaryDirectory(prefix="pcb-eval-") as tmp:
        ds = yolo_format.write_yolo_dataset({"val": samples}, Path(tmp) / "dataset")
        model = YOLO(str(pt), task="detect")
        val = model.val(data=str(ds.data_yaml), split="val", imgsz=imgsz, batch=batch, device="cpu", plots=False,
                        verbose=False, project=str(Path(tmp) / "runs"), name="val")
        metrics = evaluation_metrics(val)
    per_class = {k[len("ap50_"):]: {"ap50": v, "ap50_95": metrics[f"ap50_95_{k[len('ap50_'):]}"]}
                 for k, v in metrics.items() if k.startswith("ap50_") and not k.startswith("ap50_95_")}
    return {"weights": str(pt), "split": str(split_file), "images": len(samples), "imgsz": imgsz,
            "map50": metrics["map50"], "map50_95": metrics["map50_95"], "precision": metrics["precision"],
            "recall": metrics["recall"], "per_class": per_class}
