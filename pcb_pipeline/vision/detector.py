"""Inference with a trained detector: ONNX Runtime when an exported model is present, else PyTorch."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from pcb_pipeline.core.classes import CLASS_NAMES
from pcb_pipeline.core.images import read_image


@dataclass(frozen=True)
class Detection:
    class_id: int
    class_name: str
    confidence: float
    x1: float
    y1: float
    x2: float
    y2: float

    def to_dict(self) -> dict:
        return asdict(self)


def training_imgsz(weights: Path, default: int = 640) -> int:
    """The image size a .pt checkpoint was trained at (inference at another size loses accuracy)."""
    import torch

    ckpt = torch.load(str(weights), map_location="cpu", weights_only=False)
    return int((ckpt.get("train_args") or {}).get("imgsz", default))


class Detector:
    def __init__(self, weights: Path | str, conf: float = 0.25, prefer_onnx: bool = True, imgsz: int | None = None):
        from ultralytics import YOLO

        weights = Path(weights)
        if not weights.is_file():
            raise FileNotFoundError(f"model weights not found: {weights}")
        onnx = weights.with_suffix(".onnx")
        self.backend = "onnxruntime" if (weights.suffix == ".onnx" or (prefer_onnx and onnx.is_file())) else "torch"
        self.weights = onnx if self.backend == "onnxruntime" else weights
        if imgsz is None:
            pt = weights.with_suffix(".pt")
            imgsz = training_imgsz(pt) if pt.is_file() else 640
        self.imgsz = imgsz
        self.conf = conf
        self.model = YOLO(str(self.weights), task="detect")

    def predict(self, images: list[np.ndarray | Path], conf: float | None = None) -> list[list[Detection]]:
        """Detect defects; images are BGR arrays or paths (decoded with clear errors)."""
        arrays = [read_image(im) if isinstance(im, (str, Path)) else im for im in images]
        out = []
        for arr in arrays:  # one at a time: the ONNX export has a fixed batch of 1
            res = self.model.predict(arr, imgsz=self.imgsz, conf=self.conf if conf is None else conf,
                                     device="cpu", verbose=False)[0]
            out.append(_detections(res))
        return out


def _detections(result) -> list[Detection]:
    boxes = result.boxes
    xyxy = boxes.xyxy.cpu().numpy() if len(boxes) else np.zeros((0, 4))
    confs = boxes.conf.cpu().numpy() if len(boxes) else []
    cls = boxes.cls.cpu().numpy().astype(int) if len(boxes) else []
    return [Detection(int(c), CLASS_NAMES[int(c)], round(float(s), 4), *(round(float(v), 1) for v in b))
            for b, s, c in zip(xyxy, confs, cls)]


CLASS_COLOURS = [(0, 0, 230), (0, 140, 255), (200, 0, 200), (230, 120, 0), (0, 170, 0), (160, 80, 0)]


def draw_detections(image: np.ndarray, detections: list[Detection], thickness: int = 2) -> np.ndarray:
    """Boxes with class name and confidence on a copy of a BGR image."""
    import cv2

    out = image.copy()
    for d in detections:
        colour = CLASS_COLOURS[d.class_id % len(CLASS_COLOURS)]
        p1, p2 = (int(d.x1), int(d.y1)), (int(d.x2), int(d.y2))
        cv2.rectangle(out, p1, p2, colour, thickness)
        label = f"{d.class_name} {d.confidence:.2f}"
        (tw, th), _ = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, 0.45, 1)
        y = max(th + 2, p1[1])
        cv2.rectangle(out, (p1[0], y - th - 3), (p1[0] + tw + 2, y), colour, -1)
        cv2.putText(out, label, (p1[0] + 1, y - 2), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
    return out
