"""Helpers shared by the automation and bad-input tests (no tests in here).

A `World` is a complete, isolated PCB_HOME (stage, DuckDB warehouse, MLflow store with its artifacts, Dagster home)
in a temporary folder, so these tests never touch the session's PCB_HOME that the end-to-end tests assert on. Its
champion is a tiny *untrained* YOLOv12-n checkpoint (built once per session, no training): at confidence 1e-4 it
yields a few boxes per image, enough to exercise every row-writing path in seconds. `FakeTrainer` stands in for the
training dispatcher (metrics chosen by the test, or a failure), so retrain behaviour is tested without training.

Other test modules import it as `test_automation_support` (pytest's prepend import mode puts this folder on sys.path;
pcb_pipeline_tests/test_bad_inputs.py adds it).
"""
from __future__ import annotations

import io
import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import numpy as np

from pcb_pipeline import settings
from pcb_pipeline.backends.base import TrainingResult
from pcb_pipeline.backends.local import DuckDBWarehouse, LocalStage
from pcb_pipeline.backends.mlflow_registry import MLflowRegistry
from pcb_pipeline.defs.resources import RegistryResource, StageResource, TrainingResource, WarehouseResource

TINY_CONF = 0.0001  # the untrained checkpoint's scores sit around 2e-4
EXPERIMENT = "pcb_defect_detector"
REPO = Path(__file__).resolve().parents[2]


def tiny_weights() -> Path:
    """An untrained YOLOv12-n checkpoint marked as trained at 160 px (fast CPU inference); once per session."""
    target = settings.paths().home / "test_assets" / "tiny_yolo12n_160.pt"
    if target.is_file():
        return target
    import torch
    from ultralytics import YOLO

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}")
    YOLO("yolo12n.yaml").save(str(tmp))
    ckpt = torch.load(str(tmp), map_location="cpu", weights_only=False)
    ckpt["train_args"] = {"imgsz": 160}
    torch.save(ckpt, str(tmp))
    os.replace(tmp, target)
    return target


def jpeg_bytes(seed: int, size: int = 96, quality: int = 90) -> bytes:
    """A small, unique, valid JPEG (random noise): cheap stand-in for a board image."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


@dataclass
class World:
    home: Path

    @property
    def stage_root(self) -> Path:
        return self.home / "stage"

    @property
    def warehouse_path(self) -> Path:
        return self.home / "warehouse.duckdb"

    @property
    def tracking_uri(self) -> str:
        return f"sqlite:///{self.home / 'mlflow' / 'mlflow.db'}"

    @property
    def dagster_home(self) -> Path:
        return self.home / "dagster"

    def resources(self, min_map50: float = 0.5, trainer: TrainingResource | None = None,
                  model_name: str = "pcb_defect_detector") -> dict:
        return {"stage": StageResource(root=str(self.stage_root)),
                "warehouse": WarehouseResource(path=str(self.warehouse_path)),
                "trainer": trainer or TrainingResource(work_dir=str(self.home / "work"), tracking_uri=self.tracking_uri),
                "registry": RegistryResource(tracking_uri=self.tracking_uri, min_map50=min_map50,
                                             model_name=model_name)}

    def stage(self) -> LocalStage:
        return LocalStage(self.stage_root)

    def warehouse(self) -> DuckDBWarehouse:
        wh = DuckDBWarehouse(self.warehouse_path)
        wh.ensure_schema()
        return wh

    def registry(self) -> MLflowRegistry:
        return MLflowRegistry(self.tracking_uri)

    def upload(self, name: str, data: bytes, mtime: float | None = None) -> str:
        """Put bytes on the stage under uploads/ exactly as the app does (atomic put); optionally back-date it."""
        local = self.home / "tmp_upload" / Path(name).name
        local.parent.mkdir(parents=True, exist_ok=True)
        local.write_bytes(data)
        path = self.stage().put_file(local, f"uploads/{name}")
        if mtime is not None:
            os.utime(self.stage().path(path), (mtime, mtime))
        return path

    def env(self) -> dict[str, str]:
        """Environment for a subprocess that should see this world as its PCB_HOME."""
        env = {k: v for k, v in os.environ.items() if k not in ("DAGSTER_HOME", "YOLO_CONFIG_DIR",
                                                                  "MLFLOW_TRACKING_URI", "PCB_DEEPPCB_ROOT")}
        env.update(PCB_HOME=str(self.home), PCB_BACKEND="local", DAGSTER_HOME=str(self.dagster_home),
                   PYTHONPATH=str(REPO))
        return env

    def client(self):
        """An MLflow client on this world's tracking store *and* registry (the registry URI is process-global)."""
        import mlflow

        return mlflow.MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)

    def instance(self) -> dg.DagsterInstance:
        return dg.DagsterInstance.from_config(str(self.dagster_home))


def _empty_mlflow_db() -> Path:
    """A migrated, empty MLflow sqlite store, made once per session (creating one costs seconds of migrations)."""
    target = settings.paths().home / "test_assets" / "empty_mlflow.db"
    if not target.is_file():
        import mlflow

        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}")
        mlflow.MlflowClient(f"sqlite:///{tmp}").search_experiments()
        os.replace(tmp, target)
    return target


def make_world(home: Path) -> World:
    import shutil

    w = World(Path(home))
    for d in (w.stage_root, w.home / "mlflow" / "artifacts", w.dagster_home, w.home / "work"):
        d.mkdir(parents=True, exist_ok=True)
    (w.dagster_home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    shutil.copyfile(_empty_mlflow_db(), w.home / "mlflow" / "mlflow.db")
    import mlflow

    client = mlflow.MlflowClient(w.tracking_uri)
    if client.get_experiment_by_name(EXPERIMENT) is None:
        client.create_experiment(EXPERIMENT, artifact_location=(w.home / "mlflow" / "artifacts").as_uri())
    w.warehouse()
    return w


def restore_session_mlflow() -> None:
    """MLflowRegistry sets the process-wide tracking URI: point it back at the session's store."""
    import mlflow

    mlflow.set_tracking_uri(settings.paths().mlflow_uri)
    mlflow.set_registry_uri(settings.paths().mlflow_uri)


def fake_training_result(world: World, map50: float, stage=None) -> TrainingResult:
    """What a training run returns, without training: an MLflow run with metrics and tiny weights on the stage."""
    import mlflow

    client = mlflow.MlflowClient(world.tracking_uri)
    exp = client.get_experiment_by_name(EXPERIMENT)
    run = client.create_run(exp.experiment_id, run_name=f"fake-{map50}")
    metrics = {"map50": map50, "map50_95": map50 / 2, "precision": map50, "recall": map50}
    for k, v in metrics.items():
        client.log_metric(run.info.run_id, k, v)
    client.set_terminated(run.info.run_id)
    st = stage or world.stage()
    weights = st.put_file(tiny_weights(), f"models/{run.info.run_id}/best.pt")
    return TrainingResult(run_id=run.info.run_id, weights_stage_path=weights, onnx_stage_path=None,
                          metrics=metrics, local_weights=tiny_weights())


def register_champion(world: World, map50: float = 0.9):
    """Register a tiny model and promote it (gate threshold 0): the world's champion."""
    reg = world.registry()
    result = fake_training_result(world, map50)
    version = reg.register(result, tiny_weights(), None)
    decision = reg.promote_if_better(version, 0.0)
    assert decision.promoted, decision.reason
    return version


_FAILURES: dict[str, int] = {}
_FAIL_LOCK = threading.Lock()


class FakeTrainer(TrainingResource):
    """A training dispatcher with chosen metrics, or one that fails `fail_times` times (then succeeds)."""

    tracking_uri: str
    home: str
    map50: float = 0.6
    fail_times: int = 0
    fail_message: str = "simulated training failure: GPU compute pool unavailable"
    token: str = "default"

    def get(self, stage):
        trainer = self

        class _Dispatcher:
            def train(self, request, log):
                with _FAIL_LOCK:
                    done = _FAILURES.get(trainer.token, 0)
                    if done < trainer.fail_times:
                        _FAILURES[trainer.token] = done + 1
                        raise RuntimeError(trainer.fail_message)
                log(f"fake training of {request.run_name} (profile {request.profile})")
                return fake_training_result(World(Path(trainer.home)), trainer.map50, stage)

        return _Dispatcher()


def failures_so_far(token: str) -> int:
    return _FAILURES.get(token, 0)


def snapshot(world: World) -> dict:
    """Everything stored in a world (table contents, stage files with their bytes' hashes, champion) for
    'nothing was lost or changed' assertions."""
    import hashlib

    wh = DuckDBWarehouse(world.warehouse_path)
    tables = {}
    for t in ("DEFECT_LOGS", "BOARD_INSPECTIONS", "PCB_METADATA"):
        df = wh.query(f"SELECT * FROM {t}")
        tables[t] = json.dumps(sorted(df.astype(str).values.tolist()))
    files = {}
    for p in sorted(world.stage_root.rglob("*")):
        if p.is_file():
            files[p.relative_to(world.stage_root).as_posix()] = hashlib.md5(p.read_bytes()).hexdigest()
    from mlflow.exceptions import MlflowException

    try:
        champ = world.client().get_model_version_by_alias("pcb_defect_detector", "champion").version
    except MlflowException:
        champ = None
    return {"tables": tables, "files": files, "champion": champ}

