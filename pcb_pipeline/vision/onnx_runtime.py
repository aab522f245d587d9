"""Lean ONNX Runtime inference for an Ultralytics YOLO detection export: no ultralytics, no torch at run time.

It reproduces what ``YOLO(onnx).predict`` does, step by step, with cv2 and numpy:
1. letterbox to the model's fixed input size exactly as ``ultralytics.data.augment.LetterBox`` (scale to fit,
   ``cv2.INTER_LINEAR``, centred grey (114) padding, the same ``round(d - 0.1)`` / ``round(d + 0.1)`` split);
2. BGR -> RGB, HWC -> CHW, uint8 -> float32 / 255 (numpy, straight into the input array);
3. one ``InferenceSession.run`` (session created once; threads and spinning chosen for a small, shared CPU);
4. ``non_max_suppression`` as ultralytics does it with ``multi_label=False``: best class per anchor, keep
   ``score > conf``, at most 30 000 candidates by score, class-wise greedy NMS (boxes offset by ``class * 7680``, a box
   is suppressed when its IoU with a kept one is **> iou**), at most ``max_det`` kept;
5. boxes back to the original image (``scale_boxes``: padding removed, divided by the per-axis gain, clipped).

The export's output is (1, 4 + nc, anchors): xywh in input pixels, then per-class scores (already sigmoid).
"""
from __future__ import annotations

import ast
import os
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

MAX_WH = 7680  # ultralytics' per-class coordinate offset for class-aware NMS
MAX_NMS = 30000  # ultralytics' cap on candidates entering NMS
PAD_VALUE = 114


def default_threads() -> int:
    """Intra-op threads: ``PCB_ORT_THREADS`` if set, else every core up to 4 (2 on the 2-core dev box).

    On the 2-core box 2 threads win when the other core is free (28-31 ms vs 47 ms per 640 image) and cost nothing
    measurable when other processes keep it busy (bench/RESULTS.md)."""
    env = os.environ.get("PCB_ORT_THREADS")
    if env:
        return max(1, int(env))
    return max(1, min(os.cpu_count() or 1, 4))


# ------------------------------------------------------------------------------------------- preprocessing


@dataclass(frozen=True)
class Letterbox:
    """How an image was fitted into the model input: per-axis gain and the left/top padding."""

    gain_x: float
    gain_y: float
    pad_x: int
    pad_y: int
    orig_h: int
    orig_w: int


def letterbox(image: np.ndarray, new_shape: tuple[int, int]) -> tuple[np.ndarray, Letterbox]:
    """Resize and pad a BGR (or grey) uint8 image to ``new_shape`` (h, w) like ultralytics' LetterBox(auto=False)."""
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    elif image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    elif image.shape[2] == 1:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    h, w = image.shape[:2]
    nh, nw = new_shape
    r = min(nh / h, nw / w)
    unpad_w, unpad_h = max(round(w * r), 1), max(round(h * r), 1)
    dw, dh = (nw - unpad_w) / 2, (nh - unpad_h) / 2
    if (w, h) != (unpad_w, unpad_h):
        image = cv2.resize(image, (unpad_w, unpad_h), interpolation=cv2.INTER_LINEAR)
    top, bottom = round(dh - 0.1), round(dh + 0.1)
    left, right = round(dw - 0.1), round(dw + 0.1)
    if top or bottom or left or right:
        image = cv2.copyMakeBorder(image, top, bottom, left, right, cv2.BORDER_CONSTANT,
                                   value=(PAD_VALUE, PAD_VALUE, PAD_VALUE))
    # scale_boxes recomputes the gain from the shapes the same way
    return image, Letterbox(unpad_w / w, unpad_h / h, left, top, h, w)


def to_blob(image: np.ndarray) -> np.ndarray:
    """HxWx3 BGR uint8 -> 1x3xHxW RGB float32 in [0, 1].

    Channel by channel into one preallocated array: 0.4 ms at 640x640 where cv2.dnn.blobFromImage takes 3.8 ms, with
    bit-identical values."""
    h, w = image.shape[:2]
    blob = np.empty((1, 3, h, w), dtype=np.float32)
    scale = np.float32(1.0 / 255.0)
    for c in range(3):
        np.multiply(image[:, :, 2 - c], scale, out=blob[0, c], dtype=np.float32)
    return blob


# ----------------------------------------------------------------------------------------------------- NMS


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy NMS with torchvision.ops.nms semantics: indices kept, highest score first.

    A box is suppressed when its IoU with an already kept box is strictly greater than ``iou_threshold`` (a NaN IoU,
    from two empty boxes, suppresses nothing). Areas are ``(x2 - x1) * (y2 - y1)``.
    """
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float32).reshape(-1)
    if len(boxes) == 0:
        return np.zeros(0, dtype=np.int64)
    x1, y1, x2, y2 = boxes.T
    areas = (x2 - x1) * (y2 - y1)
    order = np.argsort(-scores, kind="stable")
    keep = []
    with np.errstate(divide="ignore", invalid="ignore"):
        while order.size:
            i = order[0]
            keep.append(i)
            if order.size == 1:
                break
            rest = order[1:]
            w = np.maximum(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), 0.0)
            h = np.maximum(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), 0.0)
            inter = w * h
            iou = inter / (areas[i] + areas[rest] - inter)
            order = rest[~(iou > iou_threshold)]
    return np.asarray(keep, dtype=np.int64)


def batched_nms(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, iou_threshold: float,
                agnostic: bool = False) -> np.ndarray:
    """Class-wise NMS: boxes of different classes never suppress each other (ultralytics' offset trick)."""
    if agnostic or len(boxes) == 0:
        return nms(boxes, scores, iou_threshold)
    offset = np.asarray(classes, dtype=np.float32).reshape(-1, 1) * MAX_WH
    return nms(np.asarray(boxes, dtype=np.float32) + offset, scores, iou_threshold)


def postprocess(output: np.ndarray, conf: float, iou: float, max_det: int, lb: Letterbox,
                agnostic: bool = False) -> np.ndarray:
    """Raw (1, 4 + nc, A) export output -> (N, 6) rows x1 y1 x2 y2 score class, in original image pixels."""
    pred = output[0]
    cls_scores = pred[4:]
    best = cls_scores.max(axis=0)
    cand = np.nonzero(best > conf)[0]
    if cand.size == 0:
        return np.zeros((0, 6), dtype=np.float32)
    scores = best[cand]
    classes = cls_scores[:, cand].argmax(axis=0)
    if cand.size > MAX_NMS:
        top = np.argsort(-scores, kind="stable")[:MAX_NMS]
        cand, scores, classes = cand[top], scores[top], classes[top]
    xywh = pred[:4, cand].T
    boxes = np.empty_like(xywh)
    half_w, half_h = xywh[:, 2] / 2, xywh[:, 3] / 2
    boxes[:, 0] = xywh[:, 0] - half_w
    boxes[:, 1] = xywh[:, 1] - half_h
    boxes[:, 2] = xywh[:, 0] + half_w
    boxes[:, 3] = xywh[:, 1] + half_h
    keep = batched_nms(boxes, scores, classes, iou, agnostic)[:max_det]
    boxes, scores, classes = boxes[keep], scores[keep], classes[keep]
    boxes[:, [0, 2]] = ((boxes[:, [0, 2]] - lb.pad_x) / lb.gain_x).clip(0, lb.orig_w)
    boxes[:, [1, 3]] = ((boxes[:, [1, 3]] - lb.pad_y) / lb.gain_y).clip(0, lb.orig_h)
    return np.concatenate([boxes, scores[:, None], classes[:, None].astype(np.float32)], axis=1)


# ------------------------------------------------------------------------------------------------- model


class OnnxYolo:
    """One ONNX Runtime model for an ultralytics detection export (fixed or dynamic input size).

    Thread spinning (idle intra-op workers busy-wait for the next operator) is worth it only when a core is free for
    them: measured on the 2-core box (bench/RESULTS.md), spinning gives 28 ms vs 36.5 ms per 640 image on a lightly
    loaded machine, but 118 ms vs 95 ms when other processes keep both cores busy, where the spinning workers steal
    the time slices of the one doing the work. ``spinning``: True / False fix it; None reads ``PCB_ORT_SPINNING``
    (``1``, ``0`` or ``auto``, the default): per call, a spinning session while the 1-minute load average leaves a
    quarter of the cores free, else a non-spinning one (the second session is created on first use; both share the
    model file; the second adds about 50 MB of resident memory). The load average includes this process: continuous
    inference (a batch) keeps it non-spinning, which suits a batch, whose decoder thread needs the core.
    """

    def __init__(self, path: Path | str, imgsz: int | None = None, threads: int | None = None,
                 spinning: bool | None = None):
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"ONNX model not found: {self.path}")
        self.threads = threads or default_threads()
        if spinning is None:
            env = os.environ.get("PCB_ORT_SPINNING", "auto").strip().lower()
            spinning = {"1": True, "true": True, "0": False, "false": False}.get(env)
        self.spinning = spinning  # True, False, or None: decided per call from the load
        self._sessions: dict[bool, object] = {}
        first = self._make_session(bool(spinning))
        inp = first.get_inputs()[0]
        self.input_name = inp.name
        meta = first.get_modelmeta().custom_metadata_map
        self.metadata = dict(meta)
        self.names = _parse_names(meta.get("names"))
        self.task = meta.get("task", "detect")
        if self.task != "detect":
            raise ValueError(f"{self.path}: a '{self.task}' export, not a detection model")
        h, w = inp.shape[2], inp.shape[3]
        self.dynamic = not (isinstance(h, int) and isinstance(w, int))
        if self.dynamic:
            size = imgsz or _meta_imgsz(meta) or 640
            self.input_hw = (int(size), int(size))
        else:
            self.input_hw = (int(h), int(w))
        self.batch = inp.shape[0] if isinstance(inp.shape[0], int) else None

    def _make_session(self, spin: bool):
        import onnxruntime as ort

        if spin not in self._sessions:
            so = ort.SessionOptions()
            so.intra_op_num_threads = self.threads
            so.inter_op_num_threads = 1
            so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            so.log_severity_level = 3
            so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
            self._sessions[spin] = ort.InferenceSession(str(self.path), sess_options=so,
                                                        providers=["CPUExecutionProvider"])
        return self._sessions[spin]

    def spin_now(self) -> bool:
        """Whether this call should use the spinning session."""
        if self.spinning is not None:
            return bool(self.spinning)
        if self.threads <= 1:
            return False  # nothing to spin for
        try:
            load = os.getloadavg()[0]
        except OSError:
            return False
        return load < 0.75 * (os.cpu_count() or 1)

    @property
    def session(self):
        return self._make_session(self.spin_now())

    @property
    def imgsz(self) -> int:
        return max(self.input_hw)

    def preprocess(self, image: np.ndarray) -> tuple[np.ndarray, Letterbox]:
        padded, lb = letterbox(image, self.input_hw)
        return to_blob(padded), lb

    def run(self, blob: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: blob})[0]

    def predict(self, image: np.ndarray, conf: float = 0.25, iou: float = 0.7, max_det: int = 300,
                agnostic: bool = False, timings: dict | None = None) -> np.ndarray:
        """(N, 6) float32 rows x1 y1 x2 y2 score class for one BGR image; ``timings`` collects seconds per stage."""
        t0 = time.perf_counter()
        blob, lb = self.preprocess(image)
        t1 = time.perf_counter()
        out = self.run(blob)
        t2 = time.perf_counter()
        rows = postprocess(out, conf, iou, max_det, lb, agnostic)
        if timings is not None:
            t3 = time.perf_counter()
            for k, v in (("preprocess", t1 - t0), ("inference", t2 - t1), ("postprocess", t3 - t2)):
                timings[k] = timings.get(k, 0.0) + v
        return rows


def _parse_names(text: str | None) -> dict[int, str] | None:
    if not text:
        return None
    try:
        names = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return None
    return {int(k): str(v) for k, v in names.items()} if isinstance(names, dict) else None


def _meta_imgsz(meta: dict) -> int | None:
    try:
        v = ast.literal_eval(meta.get("imgsz", ""))
    except (ValueError, SyntaxError):
        return None
    if isinstance(v, (list, tuple)) and v:
        return int(max(v))
    return int(v) if isinstance(v, int) else None
