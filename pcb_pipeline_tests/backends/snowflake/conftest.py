"""Fixtures for the Snowflake backend: environment, a fakesnow-backed account, and one smoke training.

The smoke training runs the ML Job payload exactly as the job would (same payload folder built by the dispatcher,
same entrypoint file, same arguments), with the job's stage mount /mnt/job_stage mapped to a local folder; it is
the only training in these tests (~40 s on 2 cores) and its weights serve every test that needs a model.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fakesnow_shim import ENV, connect_factory, patched_snowflake

SETUP_STAGES = ["CREATE STAGE IF NOT EXISTS MODEL_STAGE DIRECTORY = (ENABLE = TRUE) ENCRYPTION = (TYPE = 'SNOWFLAKE_SSE')",
                "CREATE STAGE IF NOT EXISTS ML_JOB_STAGE ENCRYPTION = (TYPE = 'SNOWFLAKE_SSE')"]


@pytest.fixture
def sf_env(monkeypatch):
    for k in [k for k in os.environ if k.startswith(("SNOWFLAKE_", "PCB_SNOWFLAKE_"))]:
        monkeypatch.delenv(k, raising=False)
    for k, v in ENV.items():
        monkeypatch.setenv(k, v)
    return dict(ENV)


@pytest.fixture
def fake_account(sf_env):
    """fakesnow + recording shim, with the pipeline's two stages created; yields the recorder."""
    with patched_snowflake() as recorder:
        with connect_factory()() as conn:
            cur = conn.cursor()
            for stmt in SETUP_STAGES:
                cur.execute(stmt)
        recorder.clear()
        yield recorder


@pytest.fixture
def connect(fake_account):
    return connect_factory()


# --------------------------------------------------------------------------------------------- smoke training
@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    from pcb_pipeline.core import deeppcb, yolo_format
    from pcb_pipeline.core.synthetic import write_synthetic_deeppcb

    root = tmp_path_factory.mktemp("sf_synthetic")
    split = write_synthetic_deeppcb(root, groups=3, images_per_group=6, seed=11)
    train, val = deeppcb.group_split(deeppcb.read_split(split), 0.3)
    out = root / "dataset"
    yolo_format.write_yolo_dataset({"train": train, "val": val}, out)
    return out


@pytest.fixture(scope="session")
def smoke_job(tmp_path_factory, tiny_dataset):
    """Build the ML Job payload with the dispatcher's own code and run its entrypoint as the job would."""
    from pcb_pipeline.backends.base import TrainingRequest
    from pcb_pipeline.backends.snowflake import training

    request = TrainingRequest(dataset_dir=tiny_dataset, profile="smoke", run_name="smoke-run",
                              overrides={"conf": 0.001})
    mount = tmp_path_factory.mktemp("job_stage")  # stands in for /mnt/job_stage = @ML_JOB_STAGE/<job name>
    payload = training.build_payload(request, mount / training.APP_SUBDIR)
    args = [a.replace(training.STAGE_MOUNT, str(mount)) for a in training.job_args(request)]
    env = {k: v for k, v in os.environ.items()
           if k not in ("PCB_HOME", "MLFLOW_TRACKING_URI", "DAGSTER_HOME", "YOLO_CONFIG_DIR", "PYTHONPATH")}
    job_env = training.job_env(training.MLJobConfig(compute_pool="P", stage_name="S"))
    env.update(job_env, PCB_HOME=str(tmp_path_factory.mktemp("job_home")))
    # the container's working directory is the payload folder; the entrypoint is a file path, not a module
    proc = subprocess.run([sys.executable, training.ENTRYPOINT, *args], cwd=payload, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return {"request": request, "mount": mount, "payload": payload, "output": mount / training.OUTPUT_SUBDIR,
            "stdout": proc.stdout, "args": args, "env": job_env}


@pytest.fixture(scope="session")
def smoke_weights(smoke_job, tmp_path_factory) -> Path:
    """best.pt + best.onnx from the smoke job, copied out so tests cannot disturb the job's own output."""
    d = tmp_path_factory.mktemp("weights")
    for name in ("best.pt", "best.onnx", "metrics.json"):
        shutil.copyfile(smoke_job["output"] / name, d / name)
    return d / "best.pt"


@pytest.fixture(scope="session")
def board_jpg(tiny_dataset) -> Path:
    return sorted((tiny_dataset / "images" / "val").glob("*.jpg"))[0]


def pytest_configure(config):
    config.addinivalue_line("filterwarnings", "ignore:Arrow output on a DB-API result:UserWarning")
