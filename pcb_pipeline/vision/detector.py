"""Inference with a trained detector: ONNX Runtime when an exported model is present, else PyTorch."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from pcb_pipeline.core.classes import CLASS_NAMES
from pcb_pipeline.core.reference import (INPUT_MODE_KEY, REFERENCE, TEST_ONLY, MissingTemplateError,
                                         check_input_mode, reference_composite)
from pcb_pipeline.vision.verifier import VERIFIER_KIND, VerifierRuntime, is_verifier_checkpoint, onnx_kind


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


def _checkpoint(weights: Path) -> dict:
    import torch

    return torch.load(str(weights), map_location="cpu", weights_only=False)


def training_imgsz(weights: Path | dict, default: int = 640) -> int:
    """The image size a .pt checkpoint (a path, or one already loaded) was trained at (inference at another size
    loses accuracy)."""
    ckpt = weights if isinstance(weights, dict) else _checkpoint(weights)
    return int((ckpt.get("train_args") or {}).get("imgsz", default))


def stamp_input_mode(weights: Path, mode: str) -> None:
    """Record the input mode in a .pt checkpoint or an ONNX file (in place)."""
    weights = Path(weights)
    check_input_mode(mode)
    if weights.suffix == ".onnx":
        import onnx

        model = onnx.load(str(weights))
        kept = [p for p in model.metadata_props if p.key != INPUT_MODE_KEY]
        del model.metadata_props[:]
        model.metadata_props.extend(kept)
        entry = model.metadata_props.add()
        entry.key, entry.value = INPUT_MODE_KEY, mode
        onnx.save(model, str(weights))
    else:
        import torch

        ckpt = _checkpoint(weights)
        ckpt[INPUT_MODE_KEY] = mode
        torch.save(ckpt, str(weights))


class Detector:
    """A trained detector behind one interface.

    ``backend`` is ``"onnxruntime"`` when an ONNX export is used (``weights`` is a .onnx file, or ``prefer_onnx`` and a
    ``.onnx`` sits beside the ``.pt``): then the lean path in ``onnx_runtime`` runs it (cv2 letterbox, one ONNX
    Runtime session, numpy NMS; neither ultralytics nor torch is imported). Otherwise ``"torch"``: ultralytics'
    PyTorch predict. Both give the same boxes (tests/vision/test_onnx_runtime.py).

    ``input_mode`` is ``"reference"`` for a reference-aware model: each board image must then come with its
    template (``predict(..., templates=...)``), and the model sees the composite of ``core.reference``.

    ``kind`` is ``"verifier"`` for the two-stage inspector (an ONNX file stamped ``pcb_kind=verifier``: AOI
    candidates, then the crop verifier, `vision.verifier.VerifierRuntime`), else ``"yolo"``: callers never need to
    know which one they hold.
    """

    def __init__(self, weights: Path | str, conf: float = 0.25, prefer_onnx: bool = True, imgsz: int | None = None,
                 *, iou: float = 0.7, max_det: int = 300, threads: int | None = None):
        weights = Path(weights)
        if not weights.is_file():
            raise FileNotFoundError(f"model weights not found: {weights}")
        onnx = weights.with_suffix(".onnx")
        self.backend = "onnxruntime" if (weights.suffix == ".onnx" or (prefer_onnx and onnx.is_file())) else "torch"
        self.weights = onnx if self.backend == "onnxruntime" else weights
        self.conf = conf
        self.iou = iou
        self.max_det = max_det
        self.kind = "yolo"
        if self.backend == "onnxruntime" and onnx_kind(self.weights) == VERIFIER_KIND:
            self.kind, self.imgsz, self.input_mode = VERIFIER_KIND, None, REFERENCE
            self.model = VerifierRuntime(self.weights, threads=threads)
        elif self.backend == "onnxruntime":
            from pcb_pipeline.vision.onnx_runtime import OnnxYolo

            self.model = OnnxYolo(self.weights, imgsz=imgsz, threads=threads)
            # a fixed-size export runs at its own input size whatever was asked (it cannot take another)
            self.imgsz = self.model.imgsz
            self.input_mode = check_input_mode(self.model.metadata.get(INPUT_MODE_KEY, TEST_ONLY))
        else:
            from ultralytics import YOLO

            ckpt = _checkpoint(self.weights) if self.weights.suffix == ".pt" else {}
            if is_verifier_checkpoint(ckpt):  # weights only, no network to hand to ultralytics
                raise ValueError(f"{self.weights} is a two-stage inspector's checkpoint: it is served from its ONNX "
                                 f"export ({onnx.name} beside it)")
            self.imgsz = imgsz or training_imgsz(ckpt)
            self.input_mode = check_input_mode(ckpt.get(INPUT_MODE_KEY) or TEST_ONLY)
            self.model = YOLO(str(self.weights), task="detect")

    @property
    def needs_template(self) -> bool:
        return self.input_mode == REFERENCE

    def model_input(self, image: np.ndarray, template: np.ndarray | None) -> np.ndarray:
        """The array the network sees: the board image, or its reference composite for a reference-aware model."""
        if not self.needs_template:
            return image
        if template is None:
            raise MissingTemplateError("this model compares each board with its defect-free template: give the "
                                       "template image too (Deep PCB: <id>_temp.jpg beside <id>_test.jpg)")
        return reference_composite(image, template)

    def predict(self, images: list[np.ndarray | Path], conf: float | None = None,
                templates: list[np.ndarray | Path | None] | None = None) -> list[list[Detection]]:
        """Detect defects; images (and templates) are BGR arrays or paths (decoded with clear errors)."""
        from pcb_pipeline.core.images import read_image

        conf = self.conf if conf is None else conf
        templates = templates or [None] * len(images)
        if len(templates) != len(images):
            raise ValueError(f"{len(images)} images but {len(templates)} templates")
        out = []
        for im, tm in zip(images, templates):  # one at a time: the ONNX export has a fixed batch of 1
            arr = read_image(im) if isinstance(im, (str, Path)) else im
            tmpl = read_image(tm) if isinstance(tm, (str, Path)) and self.needs_template else tm
            out.append(_rows_to_detections(self.predict_rows(arr, conf, template=tmpl)))
        return out

    def predict_inputs(self, model_inputs: list[np.ndarray], conf: float | None = None) -> list[list[Detection]]:
        """Detect defects in arrays ``model_input`` already prepared (the batch pipeline builds reference composites
        on its decoder thread, beside inference)."""
        conf = self.conf if conf is None else conf
        return [_rows_to_detections(self.network_rows(x, conf)) for x in model_inputs]

    def predict_rows(self, image: np.ndarray, conf: float | None = None, timings: dict | None = None,
                     template: np.ndarray | None = None) -> np.ndarray:
        """One decoded BGR image -> (N, 6) float array x1 y1 x2 y2 score class (unrounded), highest score first."""
        return self.network_rows(self.model_input(image, template), conf, timings)

    def network_rows(self, image: np.ndarray, conf: float | None = None, timings: dict | None = None) -> np.ndarray:
        """``predict_rows`` on an array that is already the network's input (see ``model_input``)."""
        conf = self.conf if conf is None else conf
        if self.kind == VERIFIER_KIND:
            return self.model.rows(image, conf)[: self.max_det]
        if self.backend == "onnxruntime":
            return self.model.predict(image, conf=conf, iou=self.iou, max_det=self.max_det, timings=timings)
        res = self.model.predict(image, imgsz=self.imgsz, conf=conf, iou=self.iou, max_det=self.max_det,
                                 device="cpu", verbose=False)[0]
        if timings is not None:
            for k, v in res.speed.items():
                timings[k] = timings.get(k, 0.0) + v / 1000.0
        b = res.boxes
        if not len(b):
            return np.zeros((0, 6), dtype=np.float32)
        return np.concatenate([b.xyxy.cpu().numpy(), b.conf.cpu().numpy()[:, None],
                               b.cls.cpu().numpy()[:, None]], axis=1).astype(np.float32)


def _rows_to_detections(rows: np.ndarray) -> list[Detection]:
    return [Detection(int(r[5]), CLASS_NAMES[int(r[5])], round(float(r[4]), 4), *(round(float(v), 1) for v in r[:4]))
            for r in rows]


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
