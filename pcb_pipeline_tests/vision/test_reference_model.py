"""A reference-aware model end to end: training stamps it, Detector asks for templates, the batch pipeline and
``evaluate`` feed it composites, and a board without a usable template is that board's error."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from pcb_pipeline.core import deeppcb, yolo_format
from pcb_pipeline.core.aoi import load_gray
from pcb_pipeline.core.reference import MissingTemplateError, reference_composite
from pcb_pipeline.core.images import read_image
from pcb_pipeline.vision.batch import run_batch
from pcb_pipeline.vision.detector import Detector


@pytest.fixture(scope="module")
def reference_weights(tmp_path_factory, synthetic_root):
    """Smoke-profile weights (1 epoch, imgsz 160) trained by the training entrypoint on reference composites."""
    from pcb_pipeline.vision import train

    work = tmp_path_factory.mktemp("reference_model")
    tr, val = deeppcb.group_split(deeppcb.read_split(synthetic_root / "PCBData" / "trainval.txt"))
    ds = yolo_format.write_yolo_dataset({"train": tr, "val": val}, work / "dataset", input_mode="reference")
    out = work / "out"
    result = train.train(train.parse_args(["--data", str(ds.root), "--profile", "smoke", "--out", str(out)]))
    assert result["input_mode"] == "reference"
    return out / "best.pt"


@pytest.mark.parametrize("prefer_onnx", [True, False])
def test_the_stamp_travels_with_pt_and_onnx(reference_weights, smoke_weights, prefer_onnx):
    det = Detector(reference_weights, prefer_onnx=prefer_onnx)
    assert det.backend == ("onnxruntime" if prefer_onnx else "torch")
    assert det.input_mode == "reference" and det.needs_template
    plain = Detector(smoke_weights, prefer_onnx=prefer_onnx)
    assert plain.input_mode == "test" and not plain.needs_template


def test_stamping_the_onnx_keeps_ultralytics_metadata(reference_weights):
    from pcb_pipeline.vision.onnx_runtime import OnnxYolo

    m = OnnxYolo(reference_weights.with_suffix(".onnx"))
    assert m.metadata["pcb_input"] == "reference"
    assert m.names and len(m.names) == 6 and m.imgsz == 160 and m.task == "detect"


def test_the_model_sees_the_composite(reference_weights, synthetic_samples):
    from pcb_pipeline.vision.onnx_runtime import OnnxYolo

    s = synthetic_samples[0]
    det = Detector(reference_weights, conf=0.001)
    test, template = read_image(s.test_image), read_image(s.template_image)
    ours = det.predict_rows(test, template=template)
    composite = reference_composite(load_gray(s.test_image), load_gray(s.template_image))
    direct = OnnxYolo(reference_weights.with_suffix(".onnx")).predict(composite, conf=0.001)
    assert len(ours) > 0
    np.testing.assert_allclose(ours, direct, atol=1e-4)
    by_path = det.predict([s.test_image], templates=[s.template_image])[0]
    assert len(by_path) == len(ours)
    with pytest.raises(MissingTemplateError, match="template"):
        det.predict([s.test_image])
    with pytest.raises(ValueError, match="2 images but 1 templates"):
        det.predict([s.test_image, s.test_image], templates=[s.template_image])


def test_batch_errors_are_per_board(reference_weights, synthetic_samples, tmp_path):
    det = Detector(reference_weights, conf=0.001)
    a, b, c, d = synthetic_samples[:4]
    small = tmp_path / "small_temp.png"
    import cv2

    cv2.imwrite(str(small), np.full((64, 64), 255, np.uint8))
    images = {s.image_id: s.test_image for s in (a, b, c, d)}
    templates = {a.image_id: a.template_image, b.image_id: tmp_path / "gone_temp.jpg", d.image_id: small}
    got = {name: (dets, err) for name, _, dets, err in run_batch(det, images, templates=templates)}
    assert got[a.image_id][1] is None and len(got[a.image_id][0]) > 0
    assert "gone_temp.jpg" in got[b.image_id][1]
    assert "give the template image" in got[c.image_id][1]
    assert "same size" in got[d.image_id][1] and str(d.test_image) in got[d.image_id][1]


def test_a_test_image_model_never_reads_templates(smoke_weights, synthetic_samples, tmp_path):
    det = Detector(smoke_weights, conf=0.001)
    s = synthetic_samples[0]
    out = list(run_batch(det, {"x": s.test_image}, templates={"x": tmp_path / "does_not_exist.jpg"}))
    assert out[0][3] is None


def test_evaluate_feeds_composites_and_says_so(reference_weights, synthetic_root):
    from pcb_pipeline.vision.evaluate import evaluate_split

    r = evaluate_split(reference_weights, synthetic_root / "PCBData" / "trainval.txt", val_groups=True,
                       aoi_workers=1)
    assert r["input_mode"] == "reference" and r["unreadable_images"] == {}
    assert 0.0 <= r["map50"] <= 1.0 and r["deeppcb_protocol"]["n_predictions"] > 0
    assert r["aoi_baseline"] is not None and r["fpr_reduction"] is not None


def test_evaluate_lists_boards_without_templates(reference_weights, synthetic_root, tmp_path):
    from pcb_pipeline.vision.evaluate import evaluate_split

    root = tmp_path / "copy"
    shutil.copytree(synthetic_root, root)
    samples = deeppcb.read_split(root / "PCBData" / "trainval.txt")
    samples[0].template_image.unlink()
    r = evaluate_split(reference_weights, root / "PCBData" / "trainval.txt", aoi=False)
    assert list(r["unreadable_images"]) == [samples[0].image_id]
    assert r["deeppcb_protocol"]["n_images"] == len(samples)
    assert r["ultralytics_val_images"] == len(samples) - 1 and 0.0 <= r["map50"] <= 1.0


def test_cli_predict_finds_the_template_beside_the_image(reference_weights, synthetic_samples, tmp_path, capsys):
    import json

    from pcb_pipeline.cli import main

    s = synthetic_samples[0]
    lonely = tmp_path / "lonely_test.jpg"
    shutil.copyfile(s.test_image, lonely)
    rc = main(["predict", "--weights", str(reference_weights), "--conf", "0.001", "--json", str(s.test_image),
               str(lonely)])
    out = json.loads(capsys.readouterr().out)
    assert rc == 1 and out["input_mode"] == "reference"
    found, missing = out["results"]
    assert "error" not in found and len(found["detections"]) > 0
    assert "template" in missing["error"]
    rc = main(["predict", "--weights", str(reference_weights), "--conf", "0.001", "--json", str(lonely),
               "--template", str(s.template_image)])
    assert rc == 0 and "error" not in json.loads(capsys.readouterr().out)["results"][0]
    assert main(["predict", "--weights", str(reference_weights), str(lonely), str(lonely),
                 "--template", str(s.template_image)]) == 2
    assert "one per image" in capsys.readouterr().err


def test_mlflow_model_reads_the_template_column(reference_weights, smoke_weights, synthetic_samples):
    from types import SimpleNamespace

    import pandas as pd

    from pcb_pipeline.vision.mlflow_model import OUTPUT_COLUMNS, PCBDefectDetectorModel

    s = synthetic_samples[0]
    model = PCBDefectDetectorModel()
    model.load_context(SimpleNamespace(artifacts={"weights": str(reference_weights)}))
    model.detector.conf = 0.001
    with_path = model.predict(None, pd.DataFrame({"image_path": [str(s.test_image)], "board_id": ["b1"],
                                                  "template_path": [str(s.template_image)]}))
    with_bytes = model.predict(None, pd.DataFrame({"image_bytes": [s.test_image.read_bytes()],
                                                   "template_bytes": [s.template_image.read_bytes()]}))
    assert list(with_path.columns) == OUTPUT_COLUMNS and len(with_path) > 0 and set(with_path["board_id"]) == {"b1"}
    assert with_path.drop(columns="board_id").equals(with_bytes.drop(columns="board_id"))
    with pytest.raises(MissingTemplateError):
        model.predict(None, pd.DataFrame({"image_path": [str(s.test_image)]}))
    plain = PCBDefectDetectorModel()
    plain.load_context(SimpleNamespace(artifacts={"weights": str(smoke_weights)}))
    assert len(plain.predict(None, pd.DataFrame({"image_path": [str(s.test_image)],
                                                 "template_path": ["/nowhere.jpg"]})).columns) == 8
