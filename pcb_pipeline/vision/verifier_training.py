"""Training of the two-stage reference inspector (a profile of kind "verifier", `vision.profiles`) from a
reference-mode YOLO dataset, inside the one training entrypoint (`vision.train`): the same MLflow run, the same
outputs (best.pt, best.onnx, metrics.json), the same metric names the gate reads (map50, map50_95, ...).

Candidate crops of the train split teach the verifier; every epoch is scored on the boards of the val split (the
held-out board groups) by the full two-stage decode, and the epoch with the best val mAP50 is kept (the last one when
the profile averages the weights, `ema`). A fixed, seeded number of epochs: every machine trains the same model,
only the time differs.
"""
from __future__ import annotations

import json
import time
from dataclasses import fields
from pathlib import Path
from typing import Callable

import numpy as np

from pcb_pipeline.core import aoi
from pcb_pipeline.core import candidates as cands
from pcb_pipeline.core.classes import CLASS_NAMES, NUM_CLASSES
from pcb_pipeline.core.detection_metrics import (AT_AOI_RECALL, AT_RECALL_099, DEEPPCB_IOU, comparison_metrics,
                                                 compare_at_matched_recall, evaluate_detections)
from pcb_pipeline.core.images import read_image
from pcb_pipeline.core.reference import REFERENCE
from pcb_pipeline.core.yolo_format import IMAGE_GLOB, dataset_input_mode, parse_yolo_label_file
from pcb_pipeline.vision import verifier as vf

MAP50_95_IOUS = tuple(np.round(np.arange(0.5, 0.96, 0.05), 2))
# Profile keys that are not VerifierTrainConfig fields but belong to the profile itself.
PROFILE_KEYS = {"kind", "workers"}


class VerifierDatasetError(ValueError):
    pass


# ------------------------------------------------------------------------------------------------ the dataset

def dataset_boards(dataset_dir: Path, split: str) -> list[tuple[Path, Path]]:
    """(composite image, label file) of every board of one split of a reference-mode YOLO dataset."""
    images = sorted((Path(dataset_dir) / "images" / split).glob(IMAGE_GLOB))
    if not images:
        raise VerifierDatasetError(f"no images under {Path(dataset_dir) / 'images' / split}")
    return [(im, Path(dataset_dir) / "labels" / split / f"{im.stem}.txt") for im in images]


def load_board(item: tuple[Path, Path]) -> tuple[np.ndarray, list[tuple]]:
    """A composite and its ground-truth rows (x1, y1, x2, y2, class) in pixels; a board without a label file has
    no defect."""
    image_path, label_path = item
    composite = read_image(image_path)
    h, w = composite.shape[:2]
    rows = parse_yolo_label_file(label_path) if label_path.is_file() else []
    gt = [((cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h, cid)
          for cid, cx, cy, bw, bh in rows]
    return composite, gt


def train_config(params: dict) -> vf.VerifierTrainConfig:
    """The verifier's training settings from a resolved profile (overrides included); unknown keys are refused
    (a YOLO setting such as imgsz means nothing here and must not pass silently)."""
    known = {f.name: f.type for f in fields(vf.VerifierTrainConfig)}
    unknown = sorted(set(params) - set(known) - PROFILE_KEYS)
    if unknown:
        raise ValueError(f"the two-stage inspector does not take {unknown}: its settings are {sorted(known)}")
    defaults = vf.VerifierTrainConfig()
    values = {}
    for k in known:
        if k in params and params[k] is not None:
            kind = type(getattr(defaults, k)) if getattr(defaults, k) is not None else int
            values[k] = kind(params[k])
    return vf.VerifierTrainConfig(**values)


# ------------------------------------------------------------------------------------------------ scoring

def detection_metrics(rows: list, gts: list) -> dict[str, float]:
    """The gate's metric names (ultralytics' meanings: typed, IoU 0.5 and 0.5:0.95) plus the Deep PCB protocol
    (IoU > 0.33, same class), per-class AP50 included."""
    at50 = evaluate_detections(rows, gts, iou_threshold=0.5, num_classes=NUM_CLASSES)
    deeppcb = evaluate_detections(rows, gts, iou_threshold=DEEPPCB_IOU, num_classes=NUM_CLASSES)
    out = {"map50": at50.map, "precision": float(at50.best_f["precision"]),
           "recall": float(at50.best_f["recall"]), "best_f50": float(at50.best_f["f"]),
           "deeppcb_map": deeppcb.map, "deeppcb_f": float(deeppcb.best_f["f"])}
    out["map50_95"] = float(np.mean([at50.map if iou == 0.5 else
                                     evaluate_detections(rows, gts, iou_threshold=float(iou),
                                                         num_classes=NUM_CLASSES).map for iou in MAP50_95_IOUS]))
    for c, ap in at50.ap.items():
        if not np.isnan(ap):
            out[f"ap50_{CLASS_NAMES[c]}"] = float(ap)
    return {k: float(v) for k, v in out.items()}


def against_aoi(rows: list, boards: list[tuple[np.ndarray, list]]) -> dict[str, float]:
    """False calls of the two-stage inspector against the legacy AOI (default parameters) on the same boards, at
    the AOI's operating recall and at recall 0.99 (class-agnostic: the AOI's call is what it replaces)."""
    aoi_rows = [aoi.inspect_pair(c[..., 0], c[..., 1]).rows() for c, _ in boards]
    gts = [gt for _, gt in boards]
    return {**comparison_metrics(compare_at_matched_recall(rows, aoi_rows, gts), AT_AOI_RECALL),
            **comparison_metrics(compare_at_matched_recall(rows, aoi_rows, gts, target_recall=0.99), AT_RECALL_099)}


def confusion(labels: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """7 x 7 counts of candidate crops: rows the truth (six defects, then no defect), columns the verifier's call."""
    m = np.zeros((NUM_CLASSES + 1, NUM_CLASSES + 1), np.int64)
    np.add.at(m, (labels, predicted), 1)
    return m


# ------------------------------------------------------------------------------------------------ training

def train_two_stage(data_dir: Path, out_dir: Path, params: dict, mlflow, log: Callable[[str], None] = print) -> dict:
    """Train and export; returns the entrypoint's result fields (metrics, weights, onnx, input_mode). Runs inside
    the caller's MLflow run (params, per-epoch metrics, confusion matrix and example crops go there)."""
    if dataset_input_mode(data_dir) != REFERENCE:
        raise VerifierDatasetError("the two-stage inspector compares each board with its template: build the "
                                   "dataset with input_mode=reference (yolo_dataset's config)")
    cfg = train_config(params)
    workers = int(params.get("workers") or 1)
    started = time.time()
    train_items = dataset_boards(data_dir, "train")
    train_set = vf.build_crop_set(train_items, log, workers=workers, load=load_board)
    # window jitter re-crops from the boards every epoch: keep them in memory (~1.2 MB a 640 px board)
    composites = [load_board(item)[0] for item in train_items] if cfg.jitter else None
    val_boards = [load_board(item) for item in dataset_boards(data_dir, "val")]
    val_set = vf.build_crop_set(val_boards, log, workers=workers)
    sizes = [c.shape[:2] for c, _ in val_boards]
    gts = [gt for _, gt in val_boards]
    log(f"verifier crops: train {len(train_set.labels)} ({(train_set.labels != cands.BACKGROUND).mean():.0%} on a "
        f"defect), val {len(val_set.labels)} of {len(val_boards)} boards; {time.time() - started:.0f} s")
    mlflow.log_params({"kind": vf.VERIFIER_KIND, **{f.name: getattr(cfg, f.name) for f in fields(cfg)},
                       "train_crops": len(train_set.labels), "val_crops": len(val_set.labels)})

    best = {"map50": -1.0}

    def on_epoch(epoch: int, metrics: dict, net) -> None:
        probs, rel = vf.predict_crops(net, val_set.crops, val_set.scales, dual=cfg.dual_views)
        scores = detection_metrics(vf.rows_by_board(val_set, probs, rel, sizes), gts)
        mlflow.log_metrics({**metrics, **{f"val_{k}": scores[k] for k in ("map50", "deeppcb_map", "deeppcb_f")}},
                           step=epoch)
        # with a weight average the network of the last epoch is kept: the average already smooths the last few
        # hundred steps, and picking the best of epochs that differ by noise (+-0.002 mAP) only selects noise
        if "state" not in best or scores["map50"] > best["map50"] or (cfg.ema and epoch == cfg.epochs):
            best.update(map50=scores["map50"], epoch=epoch,
                        state={k: v.detach().clone() for k, v in net.state_dict().items()})
        log(f"epoch {epoch}/{cfg.epochs}: loss {metrics['loss']:.3f}  val mAP50 {scores['map50']:.3f}  "
            f"Deep PCB mAP {scores['deeppcb_map']:.3f}  elapsed {time.time() - started:.0f} s")

    train_started = time.time()
    net = vf.train_verifier(train_set, cfg, on_epoch=on_epoch, composites=composites)
    train_seconds = time.time() - train_started
    net.load_state_dict(best["state"])
    net.eval()

    probs, rel = vf.predict_crops(net, val_set.crops, val_set.scales, dual=cfg.dual_views)
    rows = vf.rows_by_board(val_set, probs, rel, sizes)
    metrics = {**detection_metrics(rows, gts), **against_aoi(rows, val_boards), "train_seconds": train_seconds,
               "epochs_completed": float(cfg.epochs), "best_epoch": float(best["epoch"])}
    out_dir = Path(out_dir)
    stamp = {"pcb_input": REFERENCE, "best_epoch": best["epoch"], "val_map50": round(metrics["map50"], 6),
             vf.INVERT_KEY: cfg.invert}
    vf.save_checkpoint(net, cfg, out_dir / "best.pt", stamp)
    vf.export_onnx(net, out_dir / "best.onnx", stamp)
    _log_diagnostics(mlflow, out_dir, val_set, probs)
    return {"metrics": metrics, "input_mode": REFERENCE, "kind": vf.VERIFIER_KIND, "weights": "best.pt",
            "onnx": "best.onnx"}


def _log_diagnostics(mlflow, out_dir: Path, val_set: vf.CropSet, probs: np.ndarray) -> None:
    """The confusion matrix of the val candidates (JSON and a picture) and a sheet of example crops, per class."""
    predicted = probs.argmax(1)
    matrix = confusion(val_set.labels, predicted)
    names = [*CLASS_NAMES, "no defect"]
    (out_dir / "confusion_matrix.json").write_text(json.dumps({"labels": names, "rows_truth_cols_call":
                                                               matrix.tolist()}, indent=1))
    mlflow.log_artifact(str(out_dir / "confusion_matrix.json"), artifact_path="training")
    mlflow.log_image(_confusion_picture(matrix, names), "training/confusion_matrix.png")
    mlflow.log_image(example_sheet(val_set, predicted), "training/val_examples.png")


def _confusion_picture(matrix: np.ndarray, names: list[str]) -> np.ndarray:
    import cv2

    cell, margin = 56, 110
    n = len(names)
    img = np.full((margin + n * cell, margin + n * cell, 3), 255, np.uint8)
    share = matrix / np.maximum(matrix.sum(1, keepdims=True), 1)
    for i in range(n):
        cv2.putText(img, names[i][:9], (4, margin + i * cell + cell // 2), cv2.FONT_HERSHEY_SIMPLEX, 0.4, 0, 1)
        cv2.putText(img, names[i][:9], (margin + i * cell + 2, margin - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.4, 0, 1)
        for j in range(n):
            shade = int(255 * (1 - share[i, j]))
            y, x = margin + i * cell, margin + j * cell
            img[y:y + cell - 2, x:x + cell - 2] = (255, shade, shade)
            cv2.putText(img, str(matrix[i, j]), (x + 6, y + cell // 2), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                        (0, 0, 0) if share[i, j] < 0.6 else (255, 255, 255), 1)
    return img[..., ::-1].copy()  # RGB for mlflow.log_image


def example_sheet(crop_set: vf.CropSet, predicted: np.ndarray, per_class: int = 6) -> np.ndarray:
    """Up to `per_class` val crops of each true class (rows), their test channel, framed green when the verifier
    called them right and red when not (RGB)."""
    side = cands.CROP + 4
    sheet = np.full(((NUM_CLASSES + 1) * side, per_class * side, 3), 255, np.uint8)
    for c in range(NUM_CLASSES + 1):
        for k, j in enumerate(np.flatnonzero(crop_set.labels == c)[:per_class]):
            tile = np.repeat(crop_set.crops[j, 0][..., None], 3, axis=2)
            frame = (0, 170, 0) if predicted[j] == c else (220, 0, 0)
            y, x = c * side, k * side
            sheet[y:y + side, x:x + side] = frame
            sheet[y + 2:y + 2 + cands.CROP, x + 2:x + 2 + cands.CROP] = tile
    return sheet
