"""Inference through the registry (run_batch job or service): exact calls, output read back, DEFECT_LOGS written."""
from __future__ import annotations

from pathlib import PurePosixPath

import pandas as pd
import pytest
from sf_fakes import FakeJob, FakeRegistry, FakeSession

from pcb_pipeline.backends.base import TrainingResult
from pcb_pipeline.backends.snowflake.inference import InferenceConfig, RegistryInference, write_defect_logs
from pcb_pipeline.backends.snowflake.registry import SnowflakeModelRegistry
from pcb_pipeline.backends.snowflake.stage import SnowflakeStage
from pcb_pipeline.backends.snowflake.training import MLJobFailed
from pcb_pipeline.backends.snowflake.warehouse import SnowflakeWarehouse

GOLDEN = ("SELECT detected_class, COUNT(*) FROM DEFECT_LOGS WHERE factory_line_id = 'SHANGHAI' "
          "AND timestamp >= DATEADD(week, -1, CURRENT_DATE()) GROUP BY detected_class")


class _ctx:
    def __init__(self, value):
        self.value = value

    def __enter__(self):
        return self.value

    def __exit__(self, *exc):
        return False


def batch_job_player(stage, tmp_path):
    """What the batch inference service does: each column_handling column's full stage paths -> the files' bytes,
    predict, Parquet under <location>/<job>/. A NULL or a path that is not on the stage fails the job (what the
    server does with them is not documented, so inference.py must never send one)."""

    def play(mv, X, kwargs):
        frame = X.copy()
        for column, handling in kwargs["input_spec"].column_handling.items():
            assert (handling["input_format"].value, handling["convert_to"].value) == ("full_stage_path", "raw_bytes")
            paths = [uri.split("/", 1)[1] for uri in frame[column] if uri.startswith(stage.uri("") + "/")]
            assert len(paths) == len(frame), f"{column}: not all full stage paths: {list(frame[column])}"
            frame[column] = [stage.get_file(p, tmp_path / "in" / PurePosixPath(p).name).read_bytes() for p in paths]
        out = mv.custom_model.predict(frame, **kwargs["input_spec"].params)
        job = kwargs["job_name"].split(".")[-1]
        local = tmp_path / "out" / "part-0.parquet"
        local.parent.mkdir(exist_ok=True)
        out.to_parquet(local)
        stage.put_file(local, f"inference/{kwargs['output_spec'].stage_location.split('/inference/')[1]}{job}/"
                              f"part-0.parquet")
        return FakeJob(kwargs["job_name"], ["RUNNING", "DONE"], [["predicting"], ["predicting", "done"]])

    return play


def registered(stage, weights, session, run_id="r1"):
    """A FakeRegistry with `weights` logged as version RUN_<run_id> (set its on_run_batch to play run_batch)."""
    fake = FakeRegistry()
    reg = SnowflakeModelRegistry(stage, "PCB_DEFECT_DETECTOR", registry_factory=lambda s: fake,
                                 session_factory=lambda: _ctx(session))
    version = reg.register(TrainingResult(run_id, f"models/{run_id}/best.pt", None, {"map50": 0.9}), weights,
                           weights.with_suffix(".onnx"))
    return reg, fake, version


@pytest.fixture
def setup(connect, tiny_dataset, smoke_weights, tmp_path):
    stage = SnowflakeStage(connect, "MODEL_STAGE", "PCB.PIPELINE.MODEL_STAGE")
    stage.put_dir(tiny_dataset / "images" / "val", "datasets/yolo/images/val")
    images = [f.path for f in stage.list("datasets/yolo/images/val")]
    session = FakeSession()
    reg, fake, version = registered(stage, smoke_weights, session)
    fake.on_run_batch = batch_job_player(stage, tmp_path)
    return stage, reg, fake, session, version, images


def test_run_batch_contract_and_defect_logs(setup, connect):
    stage, reg, fake, session, version, images = setup
    cfg = InferenceConfig(mode="batch", compute_pool="PCB_GPU_POOL", database="PCB", schema="PIPELINE",
                          poll_interval_s=0)
    lines = []
    inf = RegistryInference(reg, stage, cfg, session_factory=lambda: _ctx(session), log=lines.append,
                            sleep=lambda s: None)
    out = inf.predict(version, images, batch_id="b1", conf=0.001)
    assert len(out) == len(images) and (out["ERROR"] == "").all() and out["NUM_DETECTIONS"].sum() > 0
    data, schema = session.frames[0]
    assert schema == ["IMAGE", "IMAGE_PATH", "BOARD_ID", "TEMPLATE", "TEMPLATE_PATH"]
    assert data[0][0] == f"@PCB.PIPELINE.MODEL_STAGE/{images[0]}" and data[0][1] == images[0]
    assert data[0][2] == PurePosixPath(images[0]).stem
    assert all(row[3:] == [None, None] for row in data), "no board here is named <id>_test.*: no template to send"
    kind, call = fake.get_model("PCB_DEFECT_DETECTOR").version(version.version).calls[0]
    assert kind == "run_batch"
    assert call["compute_pool"] == "PCB_GPU_POOL" and call["function_name"] == "predict" and call["replicas"] == 1
    assert call["output_spec"].stage_location == "@PCB.PIPELINE.MODEL_STAGE/inference/b1/"
    assert call["output_spec"].mode.value == "overwrite"
    assert call["input_spec"].params == {"conf": 0.001} and call["resources_spec"].gpu_requests == "1"
    assert set(call["input_spec"].column_handling) == {"IMAGE"}
    assert call["job_name"].startswith("PCB.PIPELINE.PCB_INFER_B1_")
    assert "predicting" in lines and "done" in lines

    wh = SnowflakeWarehouse(connect)
    wh.ensure_schema()
    boards = [PurePosixPath(p).stem for p in images]
    wh.upsert("PCB_METADATA", ["board_id"], pd.DataFrame({"board_id": boards, "factory_line_id": ["SHANGHAI"] * len(boards)}))
    logs, inspections, errors = write_defect_logs(out, "b1", version, wh)
    write_defect_logs(out, "b1", version, wh)  # a re-run replaces the batch
    assert not errors and len(inspections) == len(images)
    assert wh.query("SELECT COUNT(*) AS n FROM DEFECT_LOGS")["n"][0] == len(logs) == out["NUM_DETECTIONS"].sum()
    assert wh.query("SELECT COUNT(*) AS n FROM BOARD_INSPECTIONS")["n"][0] == len(images)
    golden = wh.query(GOLDEN)
    assert dict(zip(golden.iloc[:, 0], golden.iloc[:, 1])) == logs.groupby("detected_class").size().to_dict()
    assert set(wh.query("SELECT DISTINCT model_version FROM DEFECT_LOGS")["model_version"]) == {
        f"PCB_DEFECT_DETECTOR/{version.version}"}


def test_failed_batch_job_raises(setup):
    stage, reg, fake, session, version, images = setup
    fake.on_run_batch = lambda mv, X, kwargs: FakeJob("J", ["FAILED"], [["boom"]])
    inf = RegistryInference(reg, stage, InferenceConfig(poll_interval_s=0), session_factory=lambda: _ctx(session),
                            log=lambda s: None, sleep=lambda s: None)
    with pytest.raises(MLJobFailed, match="ended FAILED"):
        inf.predict(version, images, batch_id="b2")


def test_service_mode_creates_the_service_once(setup):
    stage, reg, fake, session, version, images = setup
    cfg = InferenceConfig(mode="service", compute_pool="PCB_GPU_POOL", service_name="PCB_SVC",
                          build_external_access_integrations=("PCB_TRAINING_EAI",))
    inf = RegistryInference(reg, stage, cfg, session_factory=lambda: _ctx(session), log=lambda s: None)
    out = inf.predict(version, images[:2], batch_id="b3", conf=0.001)
    inf.predict(version, images[:1], batch_id="b4")
    calls = fake.get_model("PCB_DEFECT_DETECTOR").version(version.version).calls
    assert [k for k, _ in calls] == ["create_service", "run", "run"]
    create = calls[0][1]
    assert {k: create[k] for k in ("service_name", "service_compute_pool", "image_build_compute_pool", "gpu_requests",
                                   "ingress_enabled", "build_external_access_integrations")} == {
        "service_name": "PCB_SVC", "service_compute_pool": "PCB_GPU_POOL", "image_build_compute_pool": "PCB_GPU_POOL",
        "gpu_requests": "1", "ingress_enabled": False, "build_external_access_integrations": ["PCB_TRAINING_EAI"]}
    run = calls[1][1]
    assert run["function_name"] == "predict" and run["service_name"] == "PCB_SVC" and run["params"] == {"conf": 0.001}
    assert isinstance(run["X"]["IMAGE"][0], bytes) and len(out) == 2 and (out["ERROR"] == "").all()


def test_empty_batch_and_unknown_mode(setup):
    stage, reg, fake, session, version, images = setup
    assert RegistryInference(reg, stage, InferenceConfig()).predict(version, [], "b").empty
    with pytest.raises(ValueError, match="inference mode"):
        RegistryInference(reg, stage, InferenceConfig(mode="gpu")).predict(version, images, "b")

