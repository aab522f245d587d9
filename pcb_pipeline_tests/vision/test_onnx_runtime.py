"""The lean ONNX Runtime path against ultralytics: letterbox, NMS, post-processing and whole predictions."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from pcb_pipeline.core.detection_metrics import box_iou
from pcb_pipeline.core.images import read_image
from pcb_pipeline.vision.onnx_runtime import Letterbox, OnnxYolo, batched_nms, letterbox, nms, postprocess, to_blob

REAL_WEIGHTS = Path(__file__).resolve().parents[2] / ".gpu_models" / "best.pt"


def _random_boxes(rng, n, size=600.0, clustered=True):
    centres = rng.uniform(50, size - 50, (max(1, n // 6), 2))
    c = centres[rng.integers(0, len(centres), n)] + rng.normal(0, 12, (n, 2)) if clustered \
        else rng.uniform(0, size, (n, 2))
    wh = rng.uniform(8, 80, (n, 2))
    return np.concatenate([c - wh / 2, c + wh / 2], axis=1).astype(np.float32)


# ------------------------------------------------------------------------------------------------------ NMS


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("iou", [0.3, 0.5, 0.7])
def test_nms_keeps_exactly_what_torchvision_keeps(seed, iou):
    import torch
    import torchvision

    rng = np.random.default_rng(seed)
    boxes = _random_boxes(rng, 300)
    scores = rng.permutation(300).astype(np.float32) / 300 + 0.001  # distinct scores
    ref = torchvision.ops.nms(torch.from_numpy(boxes), torch.from_numpy(scores), iou).numpy()
    assert np.array_equal(nms(boxes, scores, iou), ref)


def test_nms_edge_cases():
    assert nms(np.zeros((0, 4)), np.zeros(0), 0.5).size == 0
    assert nms([[0, 0, 10, 10]], [0.9], 0.5).tolist() == [0]
    # IoU exactly at the threshold is kept (suppression needs IoU > threshold); a duplicate is suppressed
    a, b = [0, 0, 10, 10], [5, 0, 15, 10]  # IoU = 50 / 150 = 1/3
    assert sorted(nms([a, b], [0.9, 0.8], 1 / 3 + 1e-6).tolist()) == [0, 1]
    assert nms([a, a], [0.8, 0.9], 0.5).tolist() == [1]
    # empty boxes (IoU NaN) suppress nothing, as in torchvision
    assert sorted(nms([[3, 3, 3, 3], [3, 3, 3, 3]], [0.9, 0.8], 0.5).tolist()) == [0, 1]


def test_batched_nms_never_suppresses_across_classes():
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [1, 1, 10, 10]], dtype=np.float32)
    scores = np.array([0.9, 0.8, 0.7], dtype=np.float32)
    assert sorted(batched_nms(boxes, scores, np.array([0, 1, 0]), 0.5).tolist()) == [0, 1]
    assert batched_nms(boxes, scores, np.array([0, 1, 0]), 0.5, agnostic=True).tolist() == [0]


# ------------------------------------------------------------------------------------------ preprocessing


@pytest.mark.parametrize("shape", [(640, 640, 3), (480, 640, 3), (700, 500, 3), (333, 517, 3), (640, 640)])
def test_letterbox_and_blob_match_ultralytics_preprocessing(shape):
    import torch
    from ultralytics.data.augment import LetterBox

    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, shape, dtype=np.uint8)
    bgr = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR) if img.ndim == 2 else img
    ref = LetterBox((320, 320), auto=False, stride=32)(image=bgr)
    ours, lb = letterbox(img, (320, 320))
    assert np.array_equal(ours, ref)
    # ultralytics' predictor: BHWC uint8 -> BCHW, BGR -> RGB, float / 255
    t = torch.from_numpy(ref)[None].permute(0, 3, 1, 2).flip(1).float().div_(255).numpy()
    assert np.allclose(to_blob(ours), t, atol=1e-6)
    assert lb.orig_h == shape[0] and lb.orig_w == shape[1]


# ------------------------------------------------------------------------------------------ postprocessing


@pytest.mark.parametrize("orig", [(640, 640), (480, 640), (700, 500)])
def test_postprocess_matches_ultralytics_nms_and_scale_boxes(orig):
    import torch
    from ultralytics.utils import nms as unms
    from ultralytics.utils import ops

    rng = np.random.default_rng(sum(orig))
    n, nc, size = 2100, 6, 320
    xyxy = _random_boxes(rng, n, size=size)
    xywh = np.concatenate([(xyxy[:, :2] + xyxy[:, 2:]) / 2, xyxy[:, 2:] - xyxy[:, :2]], axis=1)
    scores = rng.uniform(0, 1, (n, nc)).astype(np.float32) ** 4  # most anchors low, a few confident
    raw = np.concatenate([xywh, scores], axis=1).T[None].astype(np.float32)  # (1, 4 + nc, anchors)
    _, lb = letterbox(np.zeros((*orig, 3), np.uint8), (size, size))
    for conf, iou in [(0.25, 0.7), (0.001, 0.7), (0.5, 0.45)]:
        ours = postprocess(raw, conf, iou, 300, lb)
        ref = unms.non_max_suppression(torch.from_numpy(raw), conf, iou, max_det=300)[0]
        ref[:, :4] = ops.scale_boxes((size, size), ref[:, :4], orig)
        ref = ref.numpy()
        assert ours.shape == ref.shape
        assert np.allclose(ours, ref, atol=1e-3), (conf, iou)


def test_postprocess_without_candidates_returns_empty_rows():
    raw = np.zeros((1, 10, 100), np.float32)
    out = postprocess(raw, 0.25, 0.7, 300, Letterbox(1.0, 1.0, 0, 0, 640, 640))
    assert out.shape == (0, 6)


# -------------------------------------------------------------------------------------- whole predictions


def _rows(result) -> np.ndarray:
    b = result.boxes
    return np.c_[b.xyxy.numpy(), b.conf.numpy(), b.cls.numpy()] if len(b) else np.zeros((0, 6))


def _matched(a: np.ndarray, b: np.ndarray) -> int:
    """Rows of ``a`` with a same-class box in ``b`` at IoU > 0.9."""
    if len(a) == 0 or len(b) == 0:
        return 0
    iou = box_iou(a, b)
    iou[a[:, 5][:, None] != b[:, 5][None, :]] = 0
    return int((iou.max(axis=1) > 0.9).sum())


def test_lean_predictions_match_ultralytics_on_the_same_onnx(smoke_onnx, synthetic_samples):
    from ultralytics import YOLO

    lean = OnnxYolo(smoke_onnx)
    ref = YOLO(str(smoke_onnx), task="detect")
    assert lean.input_hw == (160, 160) and lean.names[5] == "pin-hole"
    total = 0
    for s in synthetic_samples[::8]:
        img = read_image(s.test_image)
        ours = lean.predict(img, conf=0.001)
        theirs = _rows(ref.predict(img, imgsz=160, conf=0.001, device="cpu", verbose=False)[0])
        assert len(ours) == len(theirs)
        assert _matched(theirs, ours) == len(theirs) and _matched(ours, theirs) == len(ours)
        assert np.allclose(np.sort(ours[:, 4]), np.sort(theirs[:, 4]), atol=1e-5)
        total += len(ours)
    assert total > 0


def test_lean_predictions_match_ultralytics_pytorch(smoke_weights, synthetic_samples):
    """The smoke model is barely trained (its scores are near-ties), so the check is box-for-box at IoU > 0.9 with
    at most one box of difference per image; the strict check on a trained model is the test below."""
    from ultralytics import YOLO

    lean = OnnxYolo(smoke_weights.with_suffix(".onnx"))
    ref = YOLO(str(smoke_weights))
    for s in synthetic_samples[::8]:
        img = read_image(s.test_image)
        ours = lean.predict(img, conf=0.001)
        theirs = _rows(ref.predict(img, imgsz=160, conf=0.001, device="cpu", verbose=False)[0])
        assert abs(len(ours) - len(theirs)) <= 1
        assert _matched(theirs, ours) >= len(theirs) - 1


@pytest.mark.skipif(not REAL_WEIGHTS.with_suffix(".onnx").is_file(), reason="no GPU-trained Deep PCB weights")
def test_lean_matches_ultralytics_pytorch_on_real_weights(deeppcb_root):
    """GPU-trained yolo12n on real Deep PCB boards (present on the development machine only)."""
    import torch
    from ultralytics import YOLO

    from pcb_pipeline.core.deeppcb import read_split

    torch.set_num_threads(1)
    lean = OnnxYolo(REAL_WEIGHTS.with_suffix(".onnx"))
    ref = YOLO(str(REAL_WEIGHTS))
    for s in read_split(deeppcb_root / "PCBData" / "trainval.txt")[:1000:250]:
        img = read_image(s.test_image)
        ours = lean.predict(img, conf=0.25)
        theirs = _rows(ref.predict(img, imgsz=640, conf=0.25, device="cpu", verbose=False)[0])
        assert len(ours) == len(theirs) > 0
        assert _matched(theirs, ours) == len(theirs) and _matched(ours, theirs) == len(ours)


# ------------------------------------------------------------------------------------------------ Detector


def test_detector_runs_the_lean_path_when_the_export_is_present(smoke_weights, synthetic_samples):
    from pcb_pipeline.vision.detector import Detection, Detector

    det = Detector(smoke_weights, conf=0.001)
    assert det.backend == "onnxruntime" and det.imgsz == 160 and isinstance(det.model, OnnxYolo)
    img = read_image(synthetic_samples[0].test_image)
    (a,), (b,) = det.predict([img]), det.predict([synthetic_samples[0].test_image])
    assert a == b and all(isinstance(d, Detection) for d in a)
    gray = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)  # a single-channel array is accepted too
    assert len(det.predict([gray])[0]) == len(a)
    torch_det = Detector(smoke_weights, conf=0.001, prefer_onnx=False)
    assert torch_det.backend == "torch" and torch_det.imgsz == 160
    assert abs(len(torch_det.predict([img])[0]) - len(a)) <= 1


def test_detector_errors_are_clear(tmp_path, smoke_weights):
    from pcb_pipeline.core.images import BadImageError
    from pcb_pipeline.vision.detector import Detector

    with pytest.raises(FileNotFoundError, match="weights not found"):
        Detector(tmp_path / "missing.pt")
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 truncated")
    with pytest.raises(BadImageError, match="bad.jpg"):
        Detector(smoke_weights).predict([bad])


def test_spinning_policy(smoke_onnx, monkeypatch):
    import os

    monkeypatch.setenv("PCB_ORT_SPINNING", "0")
    assert OnnxYolo(smoke_onnx, threads=2).spin_now() is False
    monkeypatch.setenv("PCB_ORT_SPINNING", "1")
    assert OnnxYolo(smoke_onnx, threads=2).spin_now() is True
    monkeypatch.delenv("PCB_ORT_SPINNING")
    m = OnnxYolo(smoke_onnx, threads=2)
    cores = os.cpu_count() or 1
    monkeypatch.setattr(os, "getloadavg", lambda: (0.1, 0.1, 0.1))
    assert m.spin_now() is True
    busy = m.session
    monkeypatch.setattr(os, "getloadavg", lambda: (cores * 2.0, 0.1, 0.1))
    assert m.spin_now() is False and m.session is not busy
    assert OnnxYolo(smoke_onnx, threads=1).spin_now() is False  # one thread: nothing to spin for
    img = np.full((160, 160, 3), 255, np.uint8)
    a = m.predict(img, conf=0.001)
    monkeypatch.setattr(os, "getloadavg", lambda: (0.1, 0.1, 0.1))
    assert np.array_equal(a, m.predict(img, conf=0.001))  # same model either way
