"""Inference at scale through the Snowflake Model Registry, rows into DEFECT_LOGS and BOARD_INSPECTIONS.

Modes (PCB_SNOWFLAKE_INFERENCE):
  batch    `mv.run_batch(X, compute_pool=..., output_spec=OutputSpec(stage_location=@STAGE/inference/<batch>/,
           mode=OVERWRITE), input_spec=InputSpec(column_handling={"IMAGE": {"input_format": FULL_STAGE_PATH,
           "convert_to": RAW_BYTES}}, params={"conf": c}), resources_spec=ResourcesSpec(gpu_requests=...),
           function_name="predict", job_name=..., replicas=...)`: an SPCS job reads the images from the stage itself;
           its Parquet output (under <stage_location>/<job name>/) is read back.
  service  `mv.create_service(...)` once (GPU pool, image built through the external access integration), then
           `mv.run(X, function_name="predict", service_name=...)` with the image bytes in X.
  local    the asset's own path: champion weights downloaded, Detector in the Dagster process.
Both remote modes return predict()'s rows; `write_defect_logs` turns them into table rows with the same pure
`build_rows` the local asset uses and writes them with replace_rows (a re-run of a batch replaces it).
"""
from __future__ import annotations

import json
import tempfile
import uuid
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Callable

import pandas as pd

from pcb_pipeline.backends.base import ModelVersion, Warehouse
from pcb_pipeline.core.defect_logs import InspectedImage, board_id_from_path, build_rows

from .custom_model import OUTPUT_COLUMNS
from .registry import SnowflakeModelRegistry
from .stage import SnowflakeStage
from .training import MLJobFailed, follow_job


@dataclass
class InferenceConfig:
    mode: str = "batch"  # "batch" | "service"
    compute_pool: str = "PCB_GPU_POOL"
    output_prefix: str = "inference"
    gpu_requests: str | None = "1"
    replicas: int = 1
    service_name: str = "PCB_DEFECT_DETECTOR_SVC"
    build_external_access_integrations: tuple[str, ...] = ()
    image_repo: str | None = None
    database: str | None = None
    schema: str | None = None
    timeout_s: float = 3600
    poll_interval_s: float = 15


def _column(frame: pd.DataFrame, name: str) -> pd.Series:
    for c in frame.columns:
        if str(c).strip('"').upper() == name:
            return frame[c]
    raise KeyError(f"inference output has no column {name}: {list(frame.columns)}")


def normalise_output(frame: pd.DataFrame) -> pd.DataFrame:
    """predict()'s columns, upper case, whatever quoting or extra input columns the service or job added."""
    return pd.DataFrame({c: _column(frame, c).to_numpy() for c in OUTPUT_COLUMNS})


class RegistryInference:
    def __init__(self, registry: SnowflakeModelRegistry, stage: SnowflakeStage, config: InferenceConfig,
                 session_factory: Callable[[], AbstractContextManager] | None = None,
                 log: Callable[[str], None] = print, sleep=None):
        self.registry = registry
        self.stage = stage
        self.config = config
        self.session_factory = session_factory or (lambda: nullcontext(None))
        self.log = log
        self.sleep = sleep

    def job_name(self, batch_id: str) -> str:
        base = "".join(ch if ch.isalnum() else "_" for ch in batch_id).upper()[:40]
        name = f"PCB_INFER_{base}_{uuid.uuid4().hex[:8].upper()}"
        if self.config.database and self.config.schema:
            return f"{self.config.database}.{self.config.schema}.{name}"
        return name

    def input_rows(self, image_paths: list[str]) -> list[list[str]]:
        """[full stage path (turned into bytes by run_batch), stage path, board id] per image."""
        return [[self.stage.uri(p), p, board_id_from_path(p)] for p in image_paths]

    def run_batch_kwargs(self, batch_id: str, job_name: str, conf: float) -> dict:
        from snowflake.ml.model.batch_inference import (FileEncoding, InputFormat, InputSpec, OutputSpec,
                                                         ResourcesSpec, SaveMode)

        cfg = self.config
        return dict(
            compute_pool=cfg.compute_pool,
            output_spec=OutputSpec(stage_location=self.output_location(batch_id), mode=SaveMode.OVERWRITE),
            input_spec=InputSpec(params={"conf": float(conf)}, column_handling={
                "IMAGE": {"input_format": InputFormat.FULL_STAGE_PATH, "convert_to": FileEncoding.RAW_BYTES}}),
            resources_spec=ResourcesSpec(gpu_requests=cfg.gpu_requests) if cfg.gpu_requests else None,
            function_name="predict", job_name=job_name, replicas=cfg.replicas)

    def output_location(self, batch_id: str) -> str:
        return self.stage.uri(f"{self.config.output_prefix}/{batch_id}") + "/"

    def predict(self, version: ModelVersion, image_paths: list[str], batch_id: str, conf: float = 0.25
                ) -> pd.DataFrame:
        if not image_paths:
            return pd.DataFrame(columns=OUTPUT_COLUMNS)
        if self.config.mode == "batch":
            return self._run_batch(version, image_paths, batch_id, conf)
        if self.config.mode == "service":
            return self._run_service(version, image_paths, conf)
        raise ValueError(f"inference mode {self.config.mode!r}: choose 'batch' or 'service'")

    def _run_batch(self, version, image_paths, batch_id, conf) -> pd.DataFrame:
        name = self.job_name(batch_id)
        with self.session_factory() as session:
            mv = self.registry.model_version(session, version)
            X = session.create_dataframe(self.input_rows(image_paths), schema=["IMAGE", "IMAGE_PATH", "BOARD_ID"])
            job = mv.run_batch(X, **self.run_batch_kwargs(batch_id, name, conf))
            self.log(f"batch inference job {job.id}: {len(image_paths)} images with {version.name} {version.version}")
            status = follow_job(job, self.log, self.config.timeout_s, self.config.poll_interval_s,
                                **({"sleep": self.sleep} if self.sleep else {}))
            if status != "DONE":
                raise MLJobFailed(f"batch inference job {job.id} ended {status}, not DONE")
        prefix = f"{self.config.output_prefix}/{batch_id}/{name.split('.')[-1]}"
        parts = [f for f in self.stage.list(prefix) if f.path.endswith(".parquet")]
        if not parts:
            raise MLJobFailed(f"batch inference job {job.id} wrote no Parquet under {prefix}")
        with tempfile.TemporaryDirectory(prefix="pcb-infer-") as tmp:
            frames = [pd.read_parquet(self.stage.get_file(f.path, Path(tmp) / f"{i}_{PurePosixPath(f.path).name}"))
                      for i, f in enumerate(parts)]
        return normalise_output(pd.concat(frames, ignore_index=True))

    def service_kwargs(self) -> dict:
        cfg = self.config
        kwargs = dict(service_name=cfg.service_name, service_compute_pool=cfg.compute_pool,
                      image_build_compute_pool=cfg.compute_pool, ingress_enabled=False, max_instances=cfg.replicas,
                      gpu_requests=cfg.gpu_requests,
                      build_external_access_integrations=list(cfg.build_external_access_integrations) or None)
        if cfg.image_repo:
            kwargs["image_repo"] = cfg.image_repo
        return kwargs

    def _run_service(self, version, image_paths, conf) -> pd.DataFrame:
        with self.session_factory() as session, tempfile.TemporaryDirectory(prefix="pcb-infer-") as tmp:
            mv = self.registry.model_version(session, version)
            services = mv.list_services()
            names = {str(n).split(".")[-1].strip('"').upper() for n in
                     (services["name"] if "name" in getattr(services, "columns", []) else [])}
            if self.config.service_name.upper() not in names:
                self.log(f"creating inference service {self.config.service_name} on {self.config.compute_pool}")
                mv.create_service(**self.service_kwargs())
            rows = []
            for p in image_paths:
                local = self.stage.get_file(p, Path(tmp) / PurePosixPath(p).name)
                rows.append({"IMAGE": local.read_bytes(), "IMAGE_PATH": p, "BOARD_ID": board_id_from_path(p)})
            out = mv.run(pd.DataFrame(rows), function_name="predict", service_name=self.config.service_name,
                         params={"conf": float(conf)})
        return normalise_output(out)


def write_defect_logs(output: pd.DataFrame, batch_id: str, version: ModelVersion, warehouse: Warehouse,
                      timestamp: datetime | None = None) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """predict() rows -> DEFECT_LOGS + BOARD_INSPECTIONS (batch replaced); returns (logs, inspections, errors)."""
    from pcb_pipeline.vision.detector import Detection

    output = normalise_output(output)
    errors = [f"{r.IMAGE_PATH}: {r.ERROR}" for r in output.itertuples() if r.ERROR]
    images = [InspectedImage(r.IMAGE_PATH, int(r.IMAGE_WIDTH), int(r.IMAGE_HEIGHT),
                             [Detection(**d) for d in json.loads(r.DETECTIONS or "[]")])
              for r in output.itertuples() if not r.ERROR]
    lines = warehouse.query("SELECT board_id, factory_line_id FROM PCB_METADATA")
    factory_lines = dict(zip(lines["board_id"], lines["factory_line_id"]))
    logs, inspections = build_rows(batch_id, images, factory_lines, f"{version.name}/{version.version}",
                                   version.run_id, timestamp or datetime.now(timezone.utc))
    warehouse.replace_rows("DEFECT_LOGS", "batch_id", batch_id, logs)
    warehouse.replace_rows("BOARD_INSPECTIONS", "batch_id", batch_id, inspections)
    return logs, inspections, errors
