"""The training entrypoint trains the two-stage inspector (a profile of kind verifier) like it trains a YOLO: the
same outputs, the gate's metric names, an MLflow run with params, per-epoch metrics and diagnostics."""
from __future__ import annotations

import json

import numpy as np
import pytest

from pcb_pipeline.core import deeppcb, yolo_format
from pcb_pipeline.core.reference import MissingTemplateError
from pcb_pipeline.vision import verifier_training as vt


def _dataset(root, out, input_mode):
    train_s, val_s = deeppcb.group_split(deeppcb.read_split(deeppcb.split_file_path(root)))
    return yolo_format.write_yolo_dataset({"train": train_s, "val": val_s}, out, input_mode=input_mode).root


@pytest.fixture(scope="module")
def trained(tmp_path_factory, synthetic_root):
    import mlflow

    from pcb_pipeline.vision import train

    work = tmp_path_factory.mktemp("verifier_training")
    data = _dataset(synthetic_root, work / "dataset", "reference")
    out = work / "out"
    result = train.train(train.parse_args(["--data", str(data), "--profile", "verifier_smoke", "--out", str(out),
                                           "--run-name", "verifier-tests", "--set", "epochs=3"]))
    return data, out, {**result, "tracking_uri": mlflow.get_tracking_uri()}


def test_outputs_and_metrics_match_the_yolo_contract(trained):
    _, out, result = trained
    assert {p.name for p in out.iterdir()} >= {"best.pt", "best.onnx", "metrics.json"}
    assert json.loads((out / "metrics.json").read_text()) == {k: v for k, v in result.items() if k != "tracking_uri"}
    assert (result["kind"], result["input_mode"], result["weights"], result["onnx"]) == \
        ("verifier", "reference", "best.pt", "best.onnx")
    m = result["metrics"]
    for key in ("map50", "map50_95", "precision", "recall", "deeppcb_map", "deeppcb_f", "train_seconds"):
        assert np.isfinite(m[key]), key
    assert 0 <= m["map50_95"] <= m["map50"] <= 1
    assert m["epochs_completed"] == 3 and 1 <= m["best_epoch"] <= 3
    # both files say whether the network learnt polarity duals, so serving knows to ask it about them
    from pcb_pipeline.vision import verifier as vf

    _, meta = vf.load_checkpoint(out / "best.pt")
    served = vf.VerifierRuntime(out / "best.onnx", threads=1)
    assert float(meta[vf.INVERT_KEY]) == float(served.metadata[vf.INVERT_KEY])
    assert served.dual == vf.reads_polarity_dual(meta)
    assert {"false_calls_per_board_aoi_recall", "aoi_false_calls_per_board_aoi_recall",
            "false_calls_per_board_recall_0_99", "target_recall_aoi_recall"} <= m.keys()


def test_the_mlflow_run_holds_params_epochs_and_diagnostics(trained):
    import mlflow

    _, _, result = trained
    client = mlflow.MlflowClient(result["tracking_uri"])
    run = client.get_run(result["run_id"])
    assert run.data.params["kind"] == "verifier" and run.data.params["epochs"] == "3"
    assert run.data.tags["pcb.kind"] == "verifier"
    assert [h.step for h in client.get_metric_history(result["run_id"], "val_map50")] == [1, 2, 3]
    artifacts = {a.path for folder in ("training", "weights") for a in client.list_artifacts(result["run_id"], folder)}
    assert {"training/confusion_matrix.json", "training/confusion_matrix.png", "training/val_examples.png",
            "weights/best.pt", "weights/best.onnx"} <= artifacts


def test_the_checkpoint_is_weights_only_and_the_detector_serves_it_with_templates(trained, synthetic_root):
    import torch

    from pcb_pipeline.vision.detector import Detector

    _, out, _ = trained
    torch.load(out / "best.pt", map_location="cpu", weights_only=True)  # no pickled code
    detector = Detector(out / "best.pt", conf=0.0)
    assert detector.kind == "verifier" and detector.needs_template
    sample = deeppcb.read_split(deeppcb.split_file_path(synthetic_root))[0]
    (found,) = detector.predict([sample.test_image], templates=[sample.template_image])
    assert all(0 <= d.x1 < d.x2 <= 640 and 0 <= d.y1 < d.y2 <= 640 for d in found), found
    with pytest.raises(MissingTemplateError):
        detector.predict([sample.test_image])


def test_a_dataset_of_boards_alone_is_refused_with_the_reason(tmp_path, synthetic_root):
    from pcb_pipeline.vision import train

    data = _dataset(synthetic_root, tmp_path / "dataset", "test")
    with pytest.raises(vt.VerifierDatasetError, match="input_mode=reference"):
        train.train(train.parse_args(["--data", str(data), "--profile", "verifier_smoke", "--out",
                                      str(tmp_path / "out")]))


def test_settings_are_typed_and_yolo_settings_refused():
    cfg = vt.train_config({"kind": "verifier", "epochs": "7", "lr": "0.01", "width": 16, "workers": 2})
    assert (cfg.epochs, cfg.lr, cfg.width) == (7, 0.01, 16)
    with pytest.raises(ValueError, match="imgsz"):
        vt.train_config({"kind": "verifier", "imgsz": 640})


def test_boards_load_with_pixel_boxes_and_a_board_without_labels_is_clean(trained, tmp_path):
    data, _, _ = trained
    image, label = vt.dataset_boards(data, "train")[0]
    composite, gt = vt.load_board((image, label))
    h, w = composite.shape[:2]
    rows = yolo_format.parse_yolo_label_file(label)
    assert len(gt) == len(rows) > 0
    assert all(0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h and c in range(6) for x1, y1, x2, y2, c in gt)
    assert vt.load_board((image, tmp_path / "missing.txt"))[1] == []
    with pytest.raises(vt.VerifierDatasetError, match="no images"):
        vt.dataset_boards(tmp_path, "train")


def test_confusion_counts_every_crop_once():
    labels = np.array([0, 0, 6, 3, 6])
    called = np.array([0, 1, 6, 3, 0])
    m = vt.confusion(labels, called)
    assert m.shape == (7, 7) and m.sum() == 5
    assert (m[0, 0], m[0, 1], m[6, 6], m[3, 3], m[6, 0]) == (1, 1, 1, 1, 1)


def test_with_a_weight_average_the_last_epoch_is_kept(trained, tmp_path):
    from pcb_pipeline.vision import train

    data, _, _ = trained
    result = train.train(train.parse_args(["--data", str(data), "--profile", "verifier_smoke", "--out",
                                           str(tmp_path / "out"), "--run-name", "verifier-ema-tests",
                                           "--set", "epochs=2", "--set", "ema=0.9"]))
    assert result["metrics"]["best_epoch"] == 2
