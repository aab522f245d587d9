"""A reference-aware model (stamped pcb_input=reference) through the Snowflake Model Registry: the custom model reads
each board's template from TEMPLATE / TEMPLATE_PATH, RegistryInference finds the templates on the stage and sends them
(run_batch and service), and a board without one is that board's ERROR."""
from __future__ import annotations

import base64
import importlib.util
import json
from contextlib import nullcontext
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from sf_fakes import FakeSession
from test_sf_inference import batch_job_player, registered

from pcb_pipeline.backends.snowflake.custom_model import (NO_TEMPLATE, OUTPUT_COLUMNS, PCBDefectDetectorModel,
                                                          model_context, signatures)
from pcb_pipeline.backends.snowflake.inference import NO_TEMPLATE_FILE, InferenceConfig, RegistryInference
from pcb_pipeline.backends.snowflake.stage import SnowflakeStage
from pcb_pipeline.core import deeppcb
from pcb_pipeline.core.reference import MissingTemplateError
from pcb_pipeline.vision.detector import Detector


def _vision_test_fixture(name: str):
    """A fixture of pcb_pipeline_tests/vision/test_reference_model.py, reused rather than written again."""
    path = Path(__file__).resolve().parents[2] / "vision" / "test_reference_model.py"
    spec = importlib.util.spec_from_file_location("sf_reused_test_reference_model", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, name)


# smoke-trained on reference composites of the session's synthetic boards (module scope: trained once here)
reference_weights = _vision_test_fixture("reference_weights")

A, B, C = "boards/g1/A_test.jpg", "boards/g1/B_test.jpg", "boards/g2/C_test.jpg"


@pytest.fixture(scope="module")
def samples(synthetic_root):
    return deeppcb.read_split(synthetic_root / "PCBData" / "trainval.txt")


@pytest.fixture(scope="module")
def missing_template_text(reference_weights, samples) -> str:
    with pytest.raises(MissingTemplateError) as e:
        Detector(reference_weights).predict([samples[0].test_image])
    return str(e.value)


def _expected(weights: Path, sample) -> list[dict]:
    """What the detector itself finds on a board given its template (as predict()'s DETECTIONS would hold it)."""
    dets = Detector(weights, conf=0.001).predict([sample.test_image], templates=[sample.template_image])[0]
    return json.loads(json.dumps([d.to_dict() for d in dets]))


# ------------------------------------------------------------------------------------------------ custom model
def test_custom_model_reads_the_template_columns(reference_weights, samples, missing_template_text, tmp_path):
    model = PCBDefectDetectorModel(model_context(reference_weights, reference_weights.with_suffix(".onnx")))
    a = samples[0]
    test, template = a.test_image.read_bytes(), a.template_image.read_bytes()
    small = tmp_path / "small_temp.png"
    cv2.imwrite(str(small), np.full((64, 64), 255, np.uint8))
    rows = [  # IMAGE, IMAGE_PATH, BOARD_ID, TEMPLATE, TEMPLATE_PATH
        (test, "raw/a_test.jpg", "", template, None),  # template bytes
        (None, str(a.test_image), "", None, str(a.template_image)),  # both as local files
        (test, "raw/c_test.jpg", "", "data:image/jpeg;base64," + base64.b64encode(template).decode(), None),
        (test, "raw/d_test.jpg", "", None, None),  # no template
        (test, "raw/e_test.jpg", "", NO_TEMPLATE, None),  # RegistryInference's placeholder for "no template"
        (test, "raw/f_test.jpg", "", b"None", None),  # a NULL after snowflake-ml's astype(numpy.bytes_)
        (test, "raw/g_test.jpg", "", None, str(small)),  # a template of another size
        (test, "raw/h_test.jpg", "", None, "/nowhere/h_temp.jpg"),
    ]
    frame = pd.DataFrame(rows, columns=["IMAGE", "IMAGE_PATH", "BOARD_ID", "TEMPLATE", "TEMPLATE_PATH"])
    out = model.predict(frame, conf=0.001)
    assert list(out.columns) == OUTPUT_COLUMNS and len(out) == len(rows), "one row per image, errors included"
    expected = _expected(reference_weights, a)
    assert len(expected) > 0 and model.load_detector().needs_template
    for i in range(3):
        assert out.loc[i, "ERROR"] == "", out.loc[i, "ERROR"]
        assert json.loads(out.loc[i, "DETECTIONS"]) == expected and out.loc[i, "NUM_DETECTIONS"] == len(expected)
    for i, board in ((3, "d"), (4, "e"), (5, "f")):
        assert out.loc[i, "ERROR"] == f"raw/{board}_test.jpg: {missing_template_text}"
        assert out.loc[i, "NUM_DETECTIONS"] == 0 and out.loc[i, "DETECTIONS"] == "[]"
    assert out.loc[6, "ERROR"].startswith("raw/g_test.jpg: ") and "same size" in out.loc[6, "ERROR"]
    assert out.loc[7, "ERROR"] == "/nowhere/h_temp.jpg: no such file"
    from snowflake.ml.model import model_signature

    model_signature._validate_pandas_df(out, signatures()["predict"].outputs, strict=True)


# ------------------------------------------------------------------------------------------------ RegistryInference
@pytest.fixture
def stage(connect, samples, tmp_path):
    """A (jpg and png templates: jpg wins), B (png template only), C (no template), a stray template in g2."""
    stage = SnowflakeStage(connect, "MODEL_STAGE", "PCB.PIPELINE.MODEL_STAGE")
    a, b, c = samples[:3]
    png_b, blank_png = tmp_path / "b.png", tmp_path / "blank.png"
    cv2.imwrite(str(png_b), cv2.imread(str(b.template_image)))
    cv2.imwrite(str(blank_png), np.full((64, 64), 255, np.uint8))
    for local, path in ((a.test_image, A), (a.template_image, "boards/g1/A_temp.jpg"),
                        (blank_png, "boards/g1/A_temp.png"), (b.test_image, B), (png_b, "boards/g1/B_temp.png"),
                        (c.test_image, C), (a.template_image, "boards/g2/Z_temp.jpg")):
        stage.put_file(local, path)
    listed = []
    real_list = stage.list
    stage.list = lambda prefix="": listed.append(prefix) or real_list(prefix)
    stage.listed = listed
    return stage


def test_input_rows_send_each_boards_template(stage, tmp_path):
    inf = RegistryInference(None, stage, InferenceConfig())
    uri = stage.uri
    placeholder = f"inference/{NO_TEMPLATE_FILE}"
    rows = inf.input_rows([A, B])
    assert rows == [[uri(A), A, "A", uri("boards/g1/A_temp.jpg"), "boards/g1/A_temp.jpg"],
                    [uri(B), B, "B", uri("boards/g1/B_temp.png"), "boards/g1/B_temp.png"]]
    assert stage.listed == ["boards/g1"], "each folder is listed once"
    assert placeholder not in {f.path for f in stage.list("inference")}, "every board has a template: no placeholder"
    kwargs = inf.run_batch_kwargs("b", "J", 0.25, templates=any(r[3] for r in rows))
    handling = kwargs["input_spec"].column_handling
    assert set(handling) == {"IMAGE", "TEMPLATE"} and handling["TEMPLATE"] == handling["IMAGE"]
    assert (handling["TEMPLATE"]["input_format"].value, handling["TEMPLATE"]["convert_to"].value) == (
        "full_stage_path", "raw_bytes")

    stage.listed.clear()
    rows = inf.input_rows([A, C])
    assert sorted(stage.listed) == ["boards/g1", "boards/g2"]
    assert rows[0][3:] == [uri("boards/g1/A_temp.jpg"), "boards/g1/A_temp.jpg"]
    assert rows[1] == [uri(C), C, "C", uri(placeholder), None], "no NULL in a FULL_STAGE_PATH column"
    assert stage.get_file(placeholder, tmp_path / "placeholder").read_bytes() == NO_TEMPLATE

    stage.listed.clear()
    assert inf.input_rows([C]) == [[uri(C), C, "C", None, None]], "no template anywhere: NULLs, as before"
    assert set(inf.run_batch_kwargs("b", "J", 0.25)["input_spec"].column_handling) == {"IMAGE"}
    assert inf.input_rows(["boards/g2/plain.jpg"])[0][3:] == [None, None]
    assert stage.listed == ["boards/g2"], "a board not named <id>_test.* has no template to look for"


def test_run_batch_with_a_reference_model(stage, reference_weights, samples, missing_template_text, tmp_path):
    session = FakeSession()
    reg, fake, version = registered(stage, reference_weights, session, run_id="ref")
    fake.on_run_batch = batch_job_player(stage, tmp_path)
    inf = RegistryInference(reg, stage, InferenceConfig(poll_interval_s=0),
                            session_factory=lambda: nullcontext(session), log=lambda s: None, sleep=lambda s: None)
    out = inf.predict(version, [A, B, C], batch_id="b1", conf=0.001)
    assert out["IMAGE_PATH"].tolist() == [A, B, C] and out["BOARD_ID"].tolist() == ["A", "B", "C"]
    assert out.loc[0, "ERROR"] == "" and out.loc[1, "ERROR"] == ""
    assert json.loads(out.loc[0, "DETECTIONS"]) == _expected(reference_weights, samples[0]), "the jpg template"
    assert json.loads(out.loc[1, "DETECTIONS"]) == _expected(reference_weights, samples[1]), "the png template"
    assert out.loc[2, "ERROR"] == f"{C}: {missing_template_text}" and out.loc[2, "NUM_DETECTIONS"] == 0
    _, call = fake.get_model("PCB_DEFECT_DETECTOR").version(version.version).calls[0]
    assert set(call["input_spec"].column_handling) == {"IMAGE", "TEMPLATE"}
    data, schema = session.frames[0]
    assert schema == ["IMAGE", "IMAGE_PATH", "BOARD_ID", "TEMPLATE", "TEMPLATE_PATH"] and len(data) == 3


def test_service_mode_sends_template_bytes(stage, reference_weights, samples, missing_template_text, tmp_path):
    session = FakeSession()
    reg, fake, version = registered(stage, reference_weights, session, run_id="ref")
    inf = RegistryInference(reg, stage, InferenceConfig(mode="service"), session_factory=lambda: nullcontext(session),
                            log=lambda s: None)
    out = inf.predict(version, [B, C], batch_id="b2", conf=0.001)
    kind, run = fake.get_model("PCB_DEFECT_DETECTOR").version(version.version).calls[-1]
    X = run["X"]
    assert kind == "run" and list(X.columns) == ["IMAGE", "IMAGE_PATH", "BOARD_ID", "TEMPLATE", "TEMPLATE_PATH"]
    png = stage.get_file("boards/g1/B_temp.png", tmp_path / "B_temp.png").read_bytes()
    assert X.loc[0, "TEMPLATE"] == png and X.loc[0, "TEMPLATE_PATH"] == "boards/g1/B_temp.png"
    assert X.loc[1, "TEMPLATE"] is None and X.loc[1, "TEMPLATE_PATH"] is None
    from snowflake.ml.model import model_signature

    model_signature._validate_pandas_df(X, signatures()["predict"].inputs, strict=True)  # NULLs are allowed
    assert out.loc[0, "ERROR"] == "" and json.loads(out.loc[0, "DETECTIONS"]) == _expected(reference_weights,
                                                                                           samples[1])
    assert out.loc[1, "ERROR"] == f"{C}: {missing_template_text}"


def test_a_model_that_cannot_load_fails_the_whole_job(tmp_path):
    """Not an ERROR on every row of a job that ends DONE (the asset would then see nothing inspected)."""
    broken = tmp_path / "best.pt"
    broken.write_bytes(b"not a checkpoint")
    model = PCBDefectDetectorModel(model_context(broken))
    with pytest.raises(Exception):  # noqa: B017 - whatever torch raises for a corrupt checkpoint
        model.predict(pd.DataFrame({"IMAGE": [None], "IMAGE_PATH": ["x_test.jpg"], "BOARD_ID": ["x"]}))
