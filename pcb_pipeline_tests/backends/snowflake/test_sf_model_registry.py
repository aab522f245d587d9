"""The custom model on a real board image with smoke-trained weights, its packaging, and the registry's gate."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from sf_fakes import FakeRegistry

from pcb_pipeline.backends.base import TrainingResult
from pcb_pipeline.backends.snowflake.custom_model import (DETECTION_COLUMNS, OUTPUT_COLUMNS, PCBDefectDetectorModel,
                                                          explode_detections, model_context, signatures)
from pcb_pipeline.backends.snowflake.registry import SnowflakeModelRegistry, version_for_run
from pcb_pipeline.backends.snowflake.stage import SnowflakeStage


@pytest.fixture(scope="module")
def model(smoke_weights):
    return PCBDefectDetectorModel(model_context(smoke_weights, smoke_weights.with_suffix(".onnx")))


def test_predict_on_a_real_board_image(model, board_jpg):
    frame = pd.DataFrame({"IMAGE": [board_jpg.read_bytes(), None, b"not an image"],
                          "IMAGE_PATH": ["raw/20085000_test.jpg", str(board_jpg), "raw/broken.jpg"],
                          "BOARD_ID": ["", "B-2", "B-3"]})
    out = model.predict(frame, conf=0.001)
    assert list(out.columns) == OUTPUT_COLUMNS and len(out) == 3  # one row per image, as FUNCTION methods must
    assert out["BOARD_ID"].tolist() == ["20085000", "B-2", "B-3"]
    assert out.loc[0, "ERROR"] == "" and (out.loc[0, "IMAGE_WIDTH"], out.loc[0, "IMAGE_HEIGHT"]) == (640, 640)
    dets = json.loads(out.loc[0, "DETECTIONS"])
    assert out.loc[0, "NUM_DETECTIONS"] == len(dets) > 0
    assert {"class_id", "class_name", "confidence", "x1", "y1", "x2", "y2"} == set(dets[0])
    assert out.loc[1, "DETECTIONS"] == out.loc[0, "DETECTIONS"], "bytes and path give the same answer"
    assert out.loc[2, "ERROR"].startswith("raw/broken.jpg") and out.loc[2, "NUM_DETECTIONS"] == 0
    strict = model.predict(frame.iloc[:1], conf=0.99)
    assert strict.loc[0, "NUM_DETECTIONS"] <= out.loc[0, "NUM_DETECTIONS"]
    rows = explode_detections(out)
    assert list(rows.columns) == DETECTION_COLUMNS and len(rows) == 2 * len(dets)
    assert model.load_detector().backend == "onnxruntime"


def test_output_matches_the_declared_signature(model, board_jpg):
    sig = signatures()["predict"]
    assert [f.name for f in sig.inputs] == ["IMAGE", "IMAGE_PATH", "BOARD_ID", "TEMPLATE", "TEMPLATE_PATH"]
    assert {f.name: (f.to_dict()["type"], f.to_dict()["nullable"]) for f in sig.inputs[3:]} == {
        "TEMPLATE": ("BYTES", True), "TEMPLATE_PATH": ("STRING", True)}
    assert [f.name for f in sig.outputs] == OUTPUT_COLUMNS
    assert [(p.name, p.default_value) for p in sig.params] == [("conf", 0.25)]
    out = model.predict(pd.DataFrame({"IMAGE": [board_jpg.read_bytes()], "IMAGE_PATH": ["x.jpg"],
                                      "BOARD_ID": ["b"]}))
    from snowflake.ml.model import model_signature

    model_signature._validate_pandas_df(out, sig.outputs, strict=True)  # what the registry checks at inference
    inputs = pd.DataFrame({"IMAGE": [board_jpg.read_bytes()] * 2, "IMAGE_PATH": ["x.jpg"] * 2, "BOARD_ID": ["b"] * 2,
                           "TEMPLATE": [board_jpg.read_bytes(), None], "TEMPLATE_PATH": ["x_temp.jpg", None]})
    model_signature._validate_pandas_df(inputs, sig.inputs, strict=True)


def test_a_test_image_model_ignores_the_template_columns(model, board_jpg):
    base = {"IMAGE": [board_jpg.read_bytes(), b"None"], "IMAGE_PATH": ["a.jpg", str(board_jpg)], "BOARD_ID": ["a", "b"]}
    plain = model.predict(pd.DataFrame(base), conf=0.001)
    assert (plain["ERROR"] == "").all(), "b'None' (a NULL cast to bytes by snowflake-ml) falls back to IMAGE_PATH"
    assert plain.loc[0, "DETECTIONS"] == plain.loc[1, "DETECTIONS"]
    out = model.predict(pd.DataFrame({**base, "TEMPLATE": [b"not an image", None],
                                      "TEMPLATE_PATH": ["/nowhere/a_temp.jpg", "/nowhere/b_temp.jpg"]}), conf=0.001)
    assert not model.load_detector().needs_template
    pd.testing.assert_frame_equal(out, plain)


def test_packaged_model_loads_and_predicts(smoke_weights, board_jpg, tmp_path):
    """snowflake-ml's own packager (what log_model uses before uploading) saves and reloads the model offline."""
    from snowflake.ml.model._packager import model_packager

    m = PCBDefectDetectorModel(model_context(smoke_weights, smoke_weights.with_suffix(".onnx")))
    from pcb_pipeline.backends.snowflake.registry import PACKAGE_DIR

    model_packager.ModelPackager(str(tmp_path)).save(
        name="PCB_DEFECT_DETECTOR", model=m, signatures=signatures(), pip_requirements=["ultralytics==8.4.190"],
        target_platforms=["SNOWPARK_CONTAINER_SERVICES"], code_paths=[str(PACKAGE_DIR)],
        options={"cuda_version": "12.4"})
    manifest = (tmp_path / "model.yaml").read_text()
    assert "cuda_version: '12.4'" in manifest and "weights: artifacts/best.pt" in manifest
    assert (tmp_path / "code" / "pcb_pipeline" / "vision" / "detector.py").is_file()
    loaded = model_packager.ModelPackager(str(tmp_path))
    loaded.load(as_custom_model=True)
    out = loaded.model.predict(pd.DataFrame({"IMAGE": [board_jpg.read_bytes()], "IMAGE_PATH": ["a.jpg"],
                                             "BOARD_ID": ["a"]}), conf=0.001)
    assert out.loc[0, "ERROR"] == "" and out.loc[0, "NUM_DETECTIONS"] > 0


# ------------------------------------------------------------------------------------------------ registry
def _result(run_id: str, map50: float, stage_prefix="models") -> TrainingResult:
    return TrainingResult(run_id=run_id, weights_stage_path=f"{stage_prefix}/{run_id}/best.pt",
                          onnx_stage_path=f"{stage_prefix}/{run_id}/best.onnx",
                          metrics={"map50": map50, "map50_95": map50 / 2})


@pytest.fixture
def registry(connect):
    fake = FakeRegistry()
    stage = SnowflakeStage(connect, "MODEL_STAGE", "PCB.PIPELINE.MODEL_STAGE")
    reg = SnowflakeModelRegistry(stage, "PCB_DEFECT_DETECTOR", database="PCB", schema="PIPELINE",
                                 registry_factory=lambda session: fake)
    return reg, fake, stage


def test_log_model_contract(registry, smoke_weights):
    reg, fake, _ = registry
    v = reg.register(_result("a" * 32, 0.7), smoke_weights, smoke_weights.with_suffix(".onnx"))
    call = fake.log_model_calls[0]
    assert isinstance(call["model"], PCBDefectDetectorModel)
    assert call["model"].context.path("weights") == str(smoke_weights)
    assert call["model"].context.path("onnx") == str(smoke_weights.with_suffix(".onnx"))
    kwargs = {k: v for k, v in call.items() if k not in ("self", "model")}
    assert kwargs["model_name"] == "PCB_DEFECT_DETECTOR" and kwargs["version_name"] == "RUN_" + "A" * 32
    assert kwargs["options"] == {"cuda_version": "12.4"}
    assert kwargs["target_platforms"] == ["SNOWPARK_CONTAINER_SERVICES"]
    assert set(kwargs["signatures"]) == {"predict"}
    assert kwargs["code_paths"] == [str(Path(__file__).resolve().parents[3] / "pcb_pipeline")]
    assert "ultralytics==8.4.190" in kwargs["pip_requirements"]
    assert kwargs["metrics"]["run_id"] == "a" * 32 and kwargs["metrics"]["map50"] == 0.7
    assert (v.version, v.run_id, v.metrics, v.weights_uri) == ("RUN_" + "A" * 32, "a" * 32,
                                                               {"map50": 0.7, "map50_95": 0.35},
                                                               f"models/{'a' * 32}/best.pt")
    again = reg.register(_result("a" * 32, 0.7), smoke_weights, None)
    assert again == v and len(fake.log_model_calls) == 1, "registering a run twice returns its version"
    assert version_for_run("abc-123") == "RUN_ABC_123"


def test_promotion_gate_alias_and_default(registry, smoke_weights):
    reg, fake, _ = registry
    assert reg.champion() is None
    v1 = reg.register(_result("1" * 32, 0.30), smoke_weights, None)
    d = reg.promote_if_better(v1, min_map50=0.5)
    assert not d.promoted and "below the threshold" in d.reason and reg.champion() is None
    v2 = reg.register(_result("2" * 32, 0.60), smoke_weights, None)
    d = reg.promote_if_better(v2, min_map50=0.5)
    assert d.promoted and reg.champion().version == v2.version
    model = fake.get_model("PCB_DEFECT_DETECTOR")
    assert model.default_version == v2.version and model.aliases == {"CHAMPION": v2.version}
    v3 = reg.register(_result("3" * 32, 0.55), smoke_weights, None)
    d = reg.promote_if_better(v3, min_map50=0.5)
    assert not d.promoted and "regresses against champion" in d.reason and reg.champion().version == v2.version
    v4 = reg.register(_result("4" * 32, 0.65), smoke_weights, None)
    d = reg.promote_if_better(v4, min_map50=0.5)
    assert d.promoted and d.previous_champion.version == v2.version
    assert model.aliases == {"CHAMPION": v4.version} and model.default_version == v4.version
    assert model.version(v3.version).show_metrics()["promotion"].startswith("rejected: ")
    assert model.version(v4.version).show_metrics()["promotion"].startswith("promoted: ")
    assert reg.promote_if_better(v4, min_map50=0.5).promoted, "re-promoting the champion is a no-op"
    assert model.aliases == {"CHAMPION": v4.version}


def test_download_weights_from_the_stage(registry, smoke_weights, tmp_path):
    reg, fake, stage = registry
    stage.put_file(smoke_weights, "models/r9/best.pt")
    stage.put_file(smoke_weights.with_suffix(".onnx"), "models/r9/best.onnx")
    v = reg.register(TrainingResult("r9", "models/r9/best.pt", "models/r9/best.onnx", {"map50": 0.9}), smoke_weights,
                     None)
    pt = reg.download_weights(v, tmp_path)
    assert pt.read_bytes() == smoke_weights.read_bytes() and pt.with_suffix(".onnx").is_file()
    assert pt == tmp_path / f"PCB_DEFECT_DETECTOR_{v.version}" / "best.pt"
