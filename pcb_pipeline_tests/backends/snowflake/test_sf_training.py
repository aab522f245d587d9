"""ML Job training: the payload runs (locally, as the job would), the submission is exact, the asset fails unless DONE."""
from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pytest
from sf_fakes import FakeJob, FakeJobs, FakeSession

from pcb_pipeline.backends.base import TrainingRequest
from pcb_pipeline.backends.snowflake import training
from pcb_pipeline.backends.snowflake.stage import SnowflakeStage
from pcb_pipeline.backends.snowflake.training import MLJobConfig, MLJobFailed, SnowflakeMLJobDispatcher


def test_container_layout_matches_the_installed_library():
    from snowflake.ml.jobs._utils import constants

    assert training.STAGE_MOUNT == constants.STAGE_VOLUME_MOUNT_PATH
    assert training.APP_SUBDIR == constants.APP_STAGE_SUBPATH
    assert training.OUTPUT_SUBDIR == constants.OUTPUT_STAGE_SUBPATH


def test_payload_entrypoint_runs_as_the_job_would(smoke_job):
    payload, out = smoke_job["payload"], smoke_job["output"]
    files = {p.relative_to(payload).as_posix() for p in payload.rglob("*") if p.is_file()}
    assert {"pcb_pipeline/__init__.py", "pcb_pipeline/vision/train.py", "pcb_pipeline/settings.py",
            "dataset/data.yaml"} <= files
    assert any(f.startswith("dataset/images/train/") for f in files) and any(
        f.startswith("dataset/labels/val/") for f in files)
    assert not any("__pycache__" in f or f.endswith(".pyc") for f in files if not f.startswith("dataset/"))
    assert smoke_job["args"][:2] == ["--data", f"{smoke_job['mount']}/app/dataset"]
    result = json.loads((out / "metrics.json").read_text())
    assert result["profile"] == "smoke" and result["onnx"] == "best.onnx" and len(result["run_id"]) == 32
    assert {"map50", "map50_95", "precision", "recall"} <= set(result["metrics"])
    assert (out / "best.pt").stat().st_size > 1e5 and (out / "best.onnx").is_file()
    assert (out / "ultralytics" / "train" / "results.csv").is_file()
    assert "PCB_TRAINING_RESULT" in smoke_job["stdout"]


def _dispatcher(connect, tmp_path, jobs, config=None):
    stage = SnowflakeStage(connect, "MODEL_STAGE", "PCB.PIPELINE.MODEL_STAGE")
    job_stage = SnowflakeStage(connect, "ML_JOB_STAGE")
    cfg = config or MLJobConfig(compute_pool="PCB_GPU_POOL", stage_name="ML_JOB_STAGE",
                                external_access_integrations=["PCB_TRAINING_EAI"], target_instances=1,
                                env_vars={"WANDB_MODE": "disabled"}, query_warehouse="PCB_WH", poll_interval_s=0)
    session = FakeSession()
    mlflow_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    d = SnowflakeMLJobDispatcher(stage, job_stage, cfg, tmp_path / "work", session_factory=lambda: _ctx(session),
                                 jobs_api=jobs, local_mlflow_uri=mlflow_uri, sleep=lambda s: None)
    return d, stage, job_stage, session, mlflow_uri


class _ctx:
    def __init__(self, value):
        self.value = value

    def __enter__(self):
        return self.value

    def __exit__(self, *exc):
        return False


def play_job_from(smoke_output: Path, job_stage: SnowflakeStage):
    """What the ML Job does on a real pool, played here: the smoke run's --out folder lands on the job stage."""
    def on_submit(payload_dir, args):
        job_stage.put_dir(smoke_output, f"{args['kwargs']['name']}/output")
    return on_submit


def test_submission_contract_logs_and_outputs(connect, fake_account, tmp_path, smoke_job, tiny_dataset):
    job = FakeJob("PCB.PIPELINE.PCB_TRAIN_X", ["PENDING", "RUNNING", "RUNNING", "DONE"],
                  [[], ["epoch 1/1"], ["epoch 1/1", "val"], ["epoch 1/1", "val", "PCB_TRAINING_RESULT {}"]])
    jobs = FakeJobs(job)
    d, stage, job_stage, session, mlflow_uri = _dispatcher(connect, tmp_path, jobs)
    jobs.on_submit = play_job_from(smoke_job["output"], job_stage)
    request = TrainingRequest(dataset_dir=tiny_dataset, profile="full", run_name="full-20260101T000000",
                              overrides={"epochs": 3, "batch": 16})
    lines: list[str] = []
    result = d.train(request, lines.append)

    call = jobs.calls[0]
    name = call["kwargs"]["name"]
    assert name.startswith("PCB_TRAIN_FULL_20260101T000000_") and len(name) == len("PCB_TRAIN_FULL_20260101T000000_") + 8
    assert {k: v for k, v in call.items() if k not in ("dir_path", "kwargs")} == {
        "compute_pool": "PCB_GPU_POOL",
        "entrypoint": "pcb_pipeline/vision/train.py",
        "stage_name": "ML_JOB_STAGE",
        "args": ["--data", "/mnt/job_stage/app/dataset", "--profile", "full", "--out", "/mnt/job_stage/output",
                 "--run-name", "full-20260101T000000", "--set", "epochs=3", "--set", "batch=16"],
        "target_instances": 1,
        "pip_requirements": training.DEFAULT_PIP_REQUIREMENTS,
        "external_access_integrations": ["PCB_TRAINING_EAI"],
        "session": session,
    }
    assert call["kwargs"] == {"env_vars": {"PCB_HOME": "/tmp/pcb_home", "PYTHONUNBUFFERED": "1", "WANDB_MODE": "disabled"},
                              "name": name, "query_warehouse": "PCB_WH"}
    assert not any(r.startswith("torch") for r in call["pip_requirements"]), "keep the runtime image's CUDA torch"
    assert "pcb_pipeline/vision/train.py" in jobs.payload_files and "dataset/data.yaml" in jobs.payload_files
    assert not Path(call["dir_path"]).exists(), "the payload folder is temporary"
    # logs streamed once each, in order, between the submission and the completion lines
    assert lines[1:4] == ["epoch 1/1", "val", "PCB_TRAINING_RESULT {}"]
    assert lines[0].startswith("submitted ML Job PCB.PIPELINE.PCB_TRAIN_X") and lines[-1].startswith("ML Job")
    # weights from the job's stage output, now on the pipeline stage under the (local MLflow) run id
    assert result.weights_stage_path == f"models/{result.run_id}/best.pt"
    assert result.onnx_stage_path == f"models/{result.run_id}/best.onnx"
    assert {f.path for f in stage.list(f"models/{result.run_id}")} == {
        f"models/{result.run_id}/{n}" for n in ("best.pt", "best.onnx", "metrics.json")}
    remote = json.loads((smoke_job["output"] / "metrics.json").read_text())
    assert result.metrics == remote["metrics"]
    run = mlflow.MlflowClient(mlflow_uri).get_run(result.run_id)
    assert run.data.tags["snowflake.ml_job_id"] == job.id and run.data.tags["pcb.remote_run_id"] == remote["run_id"]
    assert run.data.metrics["final_map50"] == pytest.approx(remote["metrics"]["map50"])
    assert mlflow.MlflowClient(mlflow_uri).get_metric_history(result.run_id, "train/box_loss")
    gets = [s for s in fake_account.statements("emulated") if s.startswith(f"GET @ML_JOB_STAGE/{name}/output/")]
    assert len(gets) == 4  # metrics.json, best.pt, best.onnx, results.csv


def test_job_that_does_not_end_done_fails_the_asset(connect, tmp_path, tiny_dataset):
    job = FakeJob("J1", ["RUNNING", "FAILED"], [["step 1"], ["step 1", "CUDA out of memory"]])
    d, stage, *_ = _dispatcher(connect, tmp_path, FakeJobs(job))
    request = TrainingRequest(dataset_dir=tiny_dataset, profile="full", run_name="r")
    lines: list[str] = []
    with pytest.raises(MLJobFailed, match="(?s)ended FAILED, not DONE.*CUDA out of memory"):
        d.train(request, lines.append)
    assert "CUDA out of memory" in lines and stage.list("models") == []


def test_job_past_its_timeout_is_cancelled(connect, tmp_path, tiny_dataset):
    job = FakeJob("J2", ["RUNNING"], [["still going"]])
    cfg = MLJobConfig(compute_pool="P", stage_name="ML_JOB_STAGE", timeout_s=0, poll_interval_s=0)
    d, *_ = _dispatcher(connect, tmp_path, FakeJobs(job), cfg)
    with pytest.raises(MLJobFailed, match="cancelled"):
        d.train(TrainingRequest(dataset_dir=tiny_dataset, profile="full", run_name="r"), lambda s: None)
    assert job.cancelled


def test_payload_needs_a_yolo_dataset(tmp_path):
    with pytest.raises(FileNotFoundError, match="data.yaml"):
        training.build_payload(TrainingRequest(dataset_dir=tmp_path, profile="full", run_name="r"), tmp_path / "p")


def test_several_nodes_are_refused_not_silently_one():
    with pytest.raises(ValueError, match="multi-node training is not supported"):
        MLJobConfig(compute_pool="PCB_GPU_POOL", stage_name="ML_JOB_STAGE", target_instances=2)
    assert MLJobConfig(compute_pool="PCB_GPU_POOL", stage_name="ML_JOB_STAGE").target_instances == 1
