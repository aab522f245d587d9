"""run_batch: order, bad inputs, overlap of inference with the caller's work, model failures, early close."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from pcb_pipeline.vision import batch
from pcb_pipeline.vision.batch import run_batch


class FakeDetector:
    """Records which images it saw; ``fail_on`` raises inside the model; ``gate`` makes a call wait."""

    def __init__(self, fail_on: int | None = None):
        self.calls: list[int] = []
        self.called = {}
        self.fail_on = fail_on

    def predict(self, images, conf=None):
        marker = int(images[0][0, 0, 0])
        if marker == self.fail_on:
            raise RuntimeError("model exploded")
        self.calls.append(marker)
        self.called.setdefault(marker, threading.Event()).set()
        return [[("det", marker, conf)]]

    def event(self, marker: int) -> threading.Event:
        return self.called.setdefault(marker, threading.Event())


def _image_files(tmp_path, n: int) -> dict:
    import cv2

    out = {}
    for i in range(n):
        img = np.full((64, 64, 3), 255, np.uint8)
        img[0, 0] = i  # the fake detector reads this back
        p = tmp_path / f"board{i}.png"
        cv2.imwrite(str(p), img)
        out[f"board{i}"] = p
    return out


def test_results_come_back_in_order_and_bad_images_do_not_stop_the_batch(tmp_path):
    files = _image_files(tmp_path, 6)
    (tmp_path / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 this JPEG stops here")
    (tmp_path / "empty.png").write_bytes(b"")
    images = {**dict(list(files.items())[:3]), "corrupt": tmp_path / "corrupt.jpg", "missing": tmp_path / "nope.png",
              "empty": tmp_path / "empty.png", **dict(list(files.items())[3:])}
    det = FakeDetector()
    out = list(run_batch(det, images, prefetch=2))
    assert [o[0] for o in out] == list(images)
    errors = {name: err for name, _, _, err in out if err}
    assert set(errors) == {"corrupt", "missing", "empty"}
    assert "corrupt.jpg" in errors["corrupt"] and "no such file" in errors["missing"] and "empty" in errors["empty"]
    for name, image, dets, err in out:
        if err:
            assert image is None and dets == []
        else:
            assert image.shape == (64, 64, 3) and dets == [("det", int(name[-1]), None)]
    assert det.calls == [0, 1, 2, 3, 4, 5]


def test_conf_is_passed_through(tmp_path):
    det = FakeDetector()
    (_, _, dets, _), = run_batch(det, dict(list(_image_files(tmp_path, 1).items())), conf=0.05)
    assert dets == [("det", 0, 0.05)]


def test_the_next_image_is_inferred_while_the_caller_handles_the_previous_one(tmp_path):
    """Inference runs on its own thread: while the caller is busy with result 0 (writing rows, plots), the model is
    already called on image 1. A serial generator would only call it when the caller asks for the next item."""
    det = FakeDetector()
    gen = run_batch(det, _image_files(tmp_path, 3), prefetch=2)
    name, *_ = next(gen)
    assert name == "board0"
    assert det.event(1).wait(timeout=10), "image 1 was not inferred while the caller held result 0"
    assert [n for n, *_ in gen] == ["board1", "board2"]


def test_decoding_overlaps_inference(tmp_path, monkeypatch):
    """Image i+1 is decoded while the model works on image i."""
    decoded = {}
    real = batch.read_image

    def recording_read(path):
        img = real(path)
        decoded.setdefault(int(img[0, 0, 0]), threading.Event()).set()
        return img

    class SlowDetector(FakeDetector):
        def predict(self, images, conf=None):
            marker = int(images[0][0, 0, 0])
            if marker == 0:
                assert decoded.setdefault(1, threading.Event()).wait(timeout=10), "no decode during inference"
            return super().predict(images, conf)

    monkeypatch.setattr(batch, "read_image", recording_read)
    assert [n for n, *_ in run_batch(SlowDetector(), _image_files(tmp_path, 3), prefetch=2)] == \
        ["board0", "board1", "board2"]


def test_a_model_failure_stops_the_batch_with_the_error(tmp_path):
    gen = run_batch(FakeDetector(fail_on=2), _image_files(tmp_path, 5))
    assert [next(gen)[0], next(gen)[0]] == ["board0", "board1"]
    with pytest.raises(RuntimeError, match="model exploded"):
        next(gen)


def test_closing_early_stops_the_worker_threads(tmp_path):
    before = {t.name for t in threading.enumerate()}
    gen = run_batch(FakeDetector(), _image_files(tmp_path, 8), prefetch=2)
    next(gen)
    gen.close()
    deadline = time.time() + 10
    while time.time() < deadline and any(t.name.startswith(("pcb-infer", "pcb-decode")) and t.name not in before
                                         for t in threading.enumerate()):
        time.sleep(0.05)
    assert not [t.name for t in threading.enumerate() if t.name.startswith(("pcb-infer", "pcb-decode"))]


def test_empty_batch():
    assert list(run_batch(FakeDetector(), {})) == []


def test_real_detector_through_the_batch(smoke_weights, synthetic_samples, tmp_path):
    from pcb_pipeline.vision.detector import Detector

    det = Detector(smoke_weights, conf=0.001)
    bad = tmp_path / "bad.jpg"
    bad.write_text("not an image")
    images = {s.image_id: s.test_image for s in synthetic_samples[:3]}
    images["bad"] = bad
    out = list(run_batch(det, images))
    assert [o[0] for o in out] == list(images)
    assert "not an image" in out[-1][3]
    for (name, image, dets, err), s in zip(out[:3], synthetic_samples[:3]):
        assert err is None and dets == det.predict([s.test_image])[0]


def test_torch_fallback_through_the_batch(smoke_weights, synthetic_samples):
    """The PyTorch path runs on the inference thread too (ultralytics' predictor is created there)."""
    from pcb_pipeline.vision.detector import Detector

    det = Detector(smoke_weights, conf=0.001, prefer_onnx=False)
    out = list(run_batch(det, {s.image_id: s.test_image for s in synthetic_samples[:2]}))
    assert [o[3] for o in out] == [None, None]
    assert out[0][2] == det.predict([synthetic_samples[0].test_image])[0]


class FakeReferenceDetector:
    """A reference-aware detector: records on which thread composites are built and what the network sees."""

    needs_template = True

    def __init__(self):
        self.prepared_on: list[str] = []
        self.seen: list[int] = []

    def model_input(self, image, template):
        from pcb_pipeline.core.reference import MissingTemplateError

        if template is None:
            raise MissingTemplateError("no template")
        self.prepared_on.append(threading.current_thread().name)
        return image + template  # marker + 1

    def predict_inputs(self, inputs, conf=None):
        self.seen.append(int(inputs[0][0, 0, 0]))
        return [[("det", int(inputs[0][0, 0, 0]))]]


def test_reference_composites_are_built_on_the_decoder_thread(tmp_path):
    import cv2

    images = _image_files(tmp_path, 3)
    one = tmp_path / "one.png"
    img = np.zeros((64, 64, 3), np.uint8)
    img[0, 0] = 1
    cv2.imwrite(str(one), img)
    det = FakeReferenceDetector()
    got = list(run_batch(det, images, templates={"board0": one, "board2": one}))
    assert [g[0] for g in got] == ["board0", "board1", "board2"]
    assert got[0][2] == [("det", 1)] and got[2][2] == [("det", 3)]  # the network saw image + template
    assert got[0][1][0, 0, 0] == 0  # the caller gets the board image itself (to draw on), not the composite
    assert got[1][3].endswith("no template") and got[1][2] == []
    assert det.seen == [1, 3] and det.prepared_on and all(n.startswith("pcb-decode") for n in det.prepared_on)
