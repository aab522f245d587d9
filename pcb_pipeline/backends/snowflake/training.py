"""Training as a Snowflake ML Job: the same entrypoint (pcb_pipeline/vision/train.py) on a GPU compute pool.

What is submitted (snowflake.ml.jobs.submit_directory):
  payload dir   pcb_pipeline/ (the package, caches left out)  +  dataset/ (the YOLO dataset of the request)
  entrypoint    pcb_pipeline/vision/train.py   (train.py puts its own repo root on sys.path when run as a file)
  args          --data /mnt/job_stage/app/dataset --profile P --out /mnt/job_stage/output --run-name R [--set k=v]
  name          PCB_TRAIN_<RUN>_<8 hex>  (unique: the payload goes to @<job stage>/<name>/app/, outputs to .../output/)
  plus pip_requirements, external_access_integrations, target_instances, env_vars (PCB_HOME on local disk,
  unbuffered output, MLflow URI when a shared tracking server is configured), optionally query_warehouse and
  runtime_environment.
The job stage is mounted at /mnt/job_stage inside the container and the payload's working directory is
/mnt/job_stage/app, so whatever train.py writes to --out lands on @<job stage>/<name>/output/. After the job ends
DONE (anything else fails the asset with the last log lines), best.pt, best.onnx, metrics.json and results.csv are
fetched with GET, the run is mirrored into the local MLflow store (unless the job logged to a shared one), and
collect_training_output puts the weights on the pipeline stage under models/<run_id>/, exactly as locally.
"""
from __future__ import annotations

import json
import re
import shutil
import tempfile
import time
import uuid
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from pcb_pipeline.backends.base import Stage, TrainingRequest, TrainingResult
from pcb_pipeline.backends.local import collect_training_output

PACKAGE_DIR = Path(__file__).resolve().parents[2]  # .../pcb_pipeline
ENTRYPOINT = "pcb_pipeline/vision/train.py"
# Container layout of snowflake.ml.jobs (snowflake.ml.jobs._utils.constants; a test pins them to the library):
STAGE_MOUNT = "/mnt/job_stage"  # STAGE_VOLUME_MOUNT_PATH: the job's stage folder @<stage>/<name>
APP_SUBDIR = "app"  # APP_STAGE_SUBPATH: the payload (working directory of the entrypoint)
OUTPUT_SUBDIR = "output"  # OUTPUT_STAGE_SUBPATH
DATASET_SUBDIR = "dataset"
TERMINAL = {"DONE", "FAILED", "CANCELLED", "INTERNAL_ERROR", "DELETED"}
# The Container Runtime image brings CUDA torch/torchvision; these add what train.py needs on top (no torch pin, so
# pip keeps the image's CUDA build).
DEFAULT_PIP_REQUIREMENTS = ["ultralytics==8.4.190", "onnx==1.23.2", "onnxslim==0.1.98", "onnxruntime==1.32.0",
                            "mlflow==3.17.2", "pyyaml>=6", "pillow>=10"]
OUTPUT_FILES = ("metrics.json", "best.pt", "best.onnx")
OPTIONAL_OUTPUTS = ("ultralytics/train/results.csv",)
_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", ".pcb_home", "*.egg-info", ".pytest_cache")


class MLJobFailed(RuntimeError):
    pass


@dataclass
class MLJobConfig:
    compute_pool: str
    stage_name: str  # where payloads are uploaded and outputs land, e.g. "ML_JOB_STAGE" or "DB.SCHEMA.ML_JOB_STAGE"
    pip_requirements: list[str] = field(default_factory=lambda: list(DEFAULT_PIP_REQUIREMENTS))
    external_access_integrations: list[str] = field(default_factory=list)
    target_instances: int = 1
    env_vars: dict[str, str] = field(default_factory=dict)
    timeout_s: float = 4 * 3600
    poll_interval_s: float = 15.0
    mlflow_tracking_uri: str | None = None  # a tracking server the job can reach (shared with this side)
    query_warehouse: str | None = None
    runtime_environment: str | None = None

    def __post_init__(self):
        # One node, all its GPUs: train.py picks device "0,1,2,3" (ultralytics DDP) on a GPU_NV_M node. Several
        # nodes would need a torch.distributed rendezvous across containers that ultralytics' trainer does not do;
        # rather than train silently on one node while paying for more, refuse.
        if self.target_instances != 1:
            raise ValueError(f"target_instances={self.target_instances}: multi-node training is not supported; "
                             "one node trains on all of its GPUs (set PCB_SNOWFLAKE_TARGET_INSTANCES=1 and pick a "
                             "pool with more GPUs per node, e.g. GPU_NV_M with 4)")


def job_name(run_name: str) -> str:
    base = re.sub(r"[^A-Za-z0-9_]", "_", run_name).upper().strip("_")[:60] or "RUN"
    return f"PCB_TRAIN_{base}_{uuid.uuid4().hex[:8].upper()}"


def job_args(request: TrainingRequest) -> list[str]:
    args = ["--data", f"{STAGE_MOUNT}/{APP_SUBDIR}/{DATASET_SUBDIR}", "--profile", request.profile,
            "--out", f"{STAGE_MOUNT}/{OUTPUT_SUBDIR}", "--run-name", request.run_name]
    for k, v in request.overrides.items():
        args += ["--set", f"{k}={v}"]
    return args


def job_env(config: MLJobConfig) -> dict[str, str]:
    env = {"PCB_HOME": "/tmp/pcb_home", "PYTHONUNBUFFERED": "1"}
    if config.mlflow_tracking_uri:
        env["MLFLOW_TRACKING_URI"] = config.mlflow_tracking_uri
    return {**env, **config.env_vars}


def build_payload(request: TrainingRequest, dest: Path) -> Path:
    """dest/pcb_pipeline (the package) + dest/dataset (the request's YOLO dataset)."""
    dest = Path(dest)
    data_yaml = Path(request.dataset_dir) / "data.yaml"
    if not data_yaml.is_file():
        raise FileNotFoundError(f"no data.yaml in {request.dataset_dir}: not a YOLO dataset")
    shutil.copytree(PACKAGE_DIR, dest / "pcb_pipeline", ignore=_IGNORE)
    shutil.copytree(request.dataset_dir, dest / DATASET_SUBDIR, ignore=shutil.ignore_patterns("*.cache"))
    return dest


def output_stage_dir(name: str) -> str:
    """Stage path, relative to the job stage, where the job's --out folder lands."""
    return f"{name}/{OUTPUT_SUBDIR}"


def follow_job(job, log: Callable[[str], None], timeout_s: float, poll_interval_s: float,
               sleep: Callable[[float], None] = time.sleep) -> str:
    """Stream a job's new log lines into `log` until it is terminal; cancel it after timeout_s. Returns the status."""
    seen, started = 0, time.monotonic()

    def drain():
        nonlocal seen
        try:
            lines = job.get_logs(as_list=True)
        except Exception:  # logs are not there yet while the job is PENDING
            lines = []
        if len(lines) < seen:  # the container restarted and its log with it: show it all again
            seen = 0
        for line in lines[seen:]:
            log(line)
        seen = max(seen, len(lines))

    while True:
        status = str(job.status)
        drain()
        if status in TERMINAL:
            return status
        if time.monotonic() - started > timeout_s:
            job.cancel()
            raise MLJobFailed(f"job {job.id} still {status} after {timeout_s:.0f} s: cancelled")
        sleep(poll_interval_s)


class SnowflakeMLJobDispatcher:
    """TrainingDispatcher that runs the training entrypoint as an ML Job and fails unless it ends DONE."""

    def __init__(self, stage: Stage, job_stage: Stage, config: MLJobConfig, work_dir: Path,
                 session_factory: Callable[[], AbstractContextManager] | None = None, jobs_api: Any = None,
                 local_mlflow_uri: str | None = None, sleep: Callable[[float], None] = time.sleep):
        self.stage = stage
        self.job_stage = job_stage
        self.config = config
        self.work_dir = Path(work_dir)
        self.session_factory = session_factory or (lambda: nullcontext(None))
        self._jobs_api = jobs_api
        self.local_mlflow_uri = local_mlflow_uri
        self.sleep = sleep

    @property
    def jobs(self):
        if self._jobs_api is None:
            from snowflake.ml import jobs

            self._jobs_api = jobs
        return self._jobs_api

    def submit_kwargs(self, request: TrainingRequest, name: str, session) -> dict:
        cfg = self.config
        kwargs = dict(entrypoint=ENTRYPOINT, stage_name=cfg.stage_name, args=job_args(request),
                      target_instances=cfg.target_instances, pip_requirements=list(cfg.pip_requirements),
                      external_access_integrations=list(cfg.external_access_integrations), session=session,
                      env_vars=job_env(cfg), name=name)
        if cfg.query_warehouse:
            kwargs["query_warehouse"] = cfg.query_warehouse
        if cfg.runtime_environment:
            kwargs["runtime_environment"] = cfg.runtime_environment
        return kwargs

    def follow(self, job, log: Callable[[str], None]) -> str:
        return follow_job(job, log, self.config.timeout_s, self.config.poll_interval_s, self.sleep)

    def train(self, request: TrainingRequest, log: Callable[[str], None]) -> TrainingResult:
        name = job_name(request.run_name)
        with tempfile.TemporaryDirectory(prefix="pcb-mljob-") as tmp, self.session_factory() as session:
            payload = build_payload(request, Path(tmp) / "payload")
            job = self.jobs.submit_directory(str(payload), self.config.compute_pool,
                                             **self.submit_kwargs(request, name, session))
            log(f"submitted ML Job {job.id} to compute pool {self.config.compute_pool} "
                f"(payload @{self.config.stage_name}/{name}/{APP_SUBDIR}, {self.config.target_instances} node(s))")
            status = self.follow(job, log)
            if status != "DONE":
                try:
                    tail = "\n".join(job.get_logs(limit=40, as_list=True))
                except Exception:
                    tail = "(no logs)"
                raise MLJobFailed(f"ML Job {job.id} ended {status}, not DONE; last log lines:\n{tail}")
        out_dir = self.work_dir / "training" / request.run_name
        self.fetch_outputs(name, out_dir)
        self.mirror_to_mlflow(out_dir, job_id=str(job.id), request=request)
        log(f"ML Job {job.id} DONE; weights fetched from @{self.config.stage_name}/{output_stage_dir(name)}")
        return collect_training_output(out_dir, self.stage, request)

    def fetch_outputs(self, name: str, out_dir: Path) -> Path:
        shutil.rmtree(out_dir, ignore_errors=True)
        out_dir.mkdir(parents=True)
        remote = output_stage_dir(name)
        metrics = json.loads(self.job_stage.get_file(f"{remote}/metrics.json", out_dir / "metrics.json").read_text())
        self.job_stage.get_file(f"{remote}/best.pt", out_dir / "best.pt")
        if metrics.get("onnx"):
            self.job_stage.get_file(f"{remote}/best.onnx", out_dir / "best.onnx")
        for rel in OPTIONAL_OUTPUTS:
            try:
                self.job_stage.get_file(f"{remote}/{rel}", out_dir / Path(rel).name)
            except FileNotFoundError:
                pass
        return out_dir

    def mirror_to_mlflow(self, out_dir: Path, job_id: str, request: TrainingRequest) -> None:
        """Record the job's run in the local MLflow store; metrics.json then names the local run id.

        Skipped when the job logged to a shared tracking server (config.mlflow_tracking_uri), where its run already is.
        """
        if self.config.mlflow_tracking_uri or not self.local_mlflow_uri:
            return
        import mlflow
        import pandas as pd

        result = json.loads((out_dir / "metrics.json").read_text())
        client = mlflow.MlflowClient(tracking_uri=self.local_mlflow_uri)
        experiment = client.get_experiment_by_name("pcb_defect_detector")
        exp_id = experiment.experiment_id if experiment else client.create_experiment("pcb_defect_detector")
        run = client.create_run(exp_id, run_name=request.run_name, tags={
            "pcb.entrypoint": ENTRYPOINT, "pcb.backend": "snowflake", "snowflake.ml_job_id": job_id,
            "snowflake.compute_pool": self.config.compute_pool, "pcb.remote_run_id": result.get("run_id", "")})
        rid = run.info.run_id
        client.log_param(rid, "profile", request.profile)
        for k, v in request.overrides.items():
            client.log_param(rid, k, v)
        for k, v in result.get("metrics", {}).items():
            client.log_metric(rid, f"final_{k}", float(v))
        csv = out_dir / "results.csv"
        if csv.is_file():
            table = pd.read_csv(csv)
            table.columns = [c.strip() for c in table.columns]
            for _, row in table.iterrows():
                step = int(row.get("epoch", 0))
                for col, val in row.items():
                    if col != "epoch" and pd.notna(val):
                        client.log_metric(rid, col.replace("(", "_").replace(")", ""), float(val), step=step)
        client.log_artifact(rid, str(out_dir / "best.pt"), artifact_path="weights")
        client.set_terminated(rid)
        result["remote_run_id"], result["run_id"] = result.get("run_id"), rid
        (out_dir / "metrics.json").write_text(json.dumps(result, indent=2))
