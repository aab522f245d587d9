"""Inference at scale through the Snowflake Model Registry, rows into DEFECT_LOGS and BOARD_INSPECTIONS.

Modes (PCB_SNOWFLAKE_INFERENCE):
  batch    `mv.run_batch(X, compute_pool=..., output_spec=OutputSpec(stage_location=@STAGE/inference/<batch>/,
           mode=OVERWRITE), input_spec=InputSpec(column_handling={"IMAGE": {"input_format": FULL_STAGE_PATH,
           "convert_to": RAW_BYTES}, "TEMPLATE": <the same, when templates were found>}, params={"conf": c}),
           resources_spec=ResourcesSpec(gpu_requests=...),
           function_name="predict", job_name=..., replicas=...)`: an SPCS job reads the images from the stage itself;
           its Parquet output (under <stage_location>/<job name>/) is read back.
  service  `mv.create_service(...)` once (GPU pool, image built through the external access integration), then
           `mv.run(X, function_name="predict", service_name=...)` with the image bytes in X.
  local    the asset's own path: champion weights downloaded, Detector in the Dagster process.
Both remote modes return predict()'s rows. `inspected_images` is the one conversion of those rows into
`InspectedImage`s (+ the rows' ERRORs); the `defect_logs` asset (pcb_pipeline.vision.inference, when
`SnowflakeRegistryResource.batch_inference()` returns a RegistryInference) feeds them to the same `build_rows` and
warehouse writes as its local path; `write_defect_logs` does the same outside Dagster (notebook, scripts). A re-run of
a batch replaces it.
Every board goes with its template (TEMPLATE / TEMPLATE_PATH), found on the stage by the Deep PCB naming
(`deeppcb.template_candidates`: `<id>_temp.jpg`, then `.png`, beside `<id>_test.*`): a reference-aware model needs it,
a test-image model ignores it. In batch mode TEMPLATE is a stage path turned into bytes like IMAGE (see input_rows for
boards without a template).
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

from pcb_pipeline.backends.base import ModelVersion, Warehouse, stage_templates
from pcb_pipeline.core.defect_logs import InspectedImage, board_id_from_path, build_rows

from .custom_model import INPUT_COLUMNS, NO_TEMPLATE, OUTPUT_COLUMNS
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


NO_TEMPLATE_FILE = "no_template.txt"  # under output_prefix: the NO_TEMPLATE placeholder (see input_rows)
_TEMPLATE = INPUT_COLUMNS.index("TEMPLATE")


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

    @property
    def backend(self) -> str:
        """What runs the model, as the asset's metadata names it: 'snowflake run_batch' or 'snowflake service'."""
        return {"batch": "snowflake run_batch"}.get(self.config.mode, f"snowflake {self.config.mode}")

    def job_name(self, batch_id: str) -> str:
        base = "".join(ch if ch.isalnum() else "_" for ch in batch_id).upper()[:40]
        name = f"PCB_INFER_{base}_{uuid.uuid4().hex[:8].upper()}"
        if self.config.database and self.config.schema:
            return f"{self.config.database}.{self.config.schema}.{name}"
        return name

    def stage_templates(self, image_paths: list[str]) -> dict[str, str]:
        """Board stage path -> its template's stage path (``backends.base.stage_templates``)."""
        return stage_templates(self.stage, image_paths)

    def input_rows(self, image_paths: list[str]) -> list[list[str | None]]:
        """One row per image in INPUT_COLUMNS order: [full stage path (turned into bytes by run_batch), stage path,
        board id, the template's full stage path (turned into bytes too), the template's stage path].

        Boards without a template. What the job does with a NULL in a FULL_STAGE_PATH column is documented nowhere
        (snowflake-ml-python 2.6.0 only passes column_handling on to the server, which reads the files), so no
        TEMPLATE sent with column_handling is ever NULL:
        - no board has a template (e.g. a test-image deployment, boards not named `<id>_test.*`): TEMPLATE and
          TEMPLATE_PATH are NULL and TEMPLATE gets no column_handling (run_batch_kwargs): the job is the one it
          was before templates existed;
        - some boards lack one: their TEMPLATE is the stage path of a placeholder file (NO_TEMPLATE, put on the
          stage here) and their TEMPLATE_PATH is NULL. The model takes the placeholder for "no template": a
          reference-aware model answers those rows with the MissingTemplateError text, every other row is inferred
          in the same job. Rejected: a NULL TEMPLATE for all rows (the container cannot read TEMPLATE_PATH, so a
          reference-aware model would fail every row), and a second job for the boards without (a GPU job start
          for nothing when the model is reference-aware).
        """
        templates = self.stage_templates(image_paths)
        placeholder = (self._put_no_template() if templates and any(p not in templates for p in image_paths)
                       else None)
        return [[self.stage.uri(p), p, board_id_from_path(p),
                 self.stage.uri(templates[p]) if p in templates else placeholder, templates.get(p)]
                for p in image_paths]

    def _put_no_template(self) -> str:
        path = f"{self.config.output_prefix}/{NO_TEMPLATE_FILE}"
        with tempfile.TemporaryDirectory(prefix="pcb-infer-") as tmp:
            local = Path(tmp) / NO_TEMPLATE_FILE
            local.write_bytes(NO_TEMPLATE)
            self.stage.put_file(local, path)
        return self.stage.uri(path)

    def run_batch_kwargs(self, batch_id: str, job_name: str, conf: float, templates: bool = False) -> dict:
        """run_batch's keywords; `templates`: the TEMPLATE column holds stage paths (none NULL, see input_rows)."""
        from snowflake.ml.model.batch_inference import (FileEncoding, InputFormat, InputSpec, OutputSpec,
                                                         ResourcesSpec, SaveMode)

        cfg = self.config
        as_bytes = {"input_format": InputFormat.FULL_STAGE_PATH, "convert_to": FileEncoding.RAW_BYTES}
        return dict(
            compute_pool=cfg.compute_pool,
            output_spec=OutputSpec(stage_location=self.output_location(batch_id), mode=SaveMode.OVERWRITE),
            input_spec=InputSpec(params={"conf": float(conf)}, column_handling={
                "IMAGE": as_bytes, **({"TEMPLATE": dict(as_bytes)} if templates else {})}),
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
            rows = self.input_rows(image_paths)
            X = session.create_dataframe(rows, schema=list(INPUT_COLUMNS))
            job = mv.run_batch(X, **self.run_batch_kwargs(batch_id, name, conf,
                                                          templates=any(r[_TEMPLATE] for r in rows)))
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
            templates = self.stage_templates(image_paths)

            def read(stage_path: str | None) -> bytes | None:
                if stage_path is None:
                    return None  # no template: a reference-aware model reports it for that row
                return self.stage.get_file(stage_path, Path(tmp) / PurePosixPath(stage_path).name).read_bytes()

            rows = [[read(p), p, board_id_from_path(p), read(templates.get(p)), templates.get(p)]
                    for p in image_paths]
            out = mv.run(pd.DataFrame(rows, columns=INPUT_COLUMNS), function_name="predict",
                         service_name=self.config.service_name, params={"conf": float(conf)})
        return normalise_output(out)


def inspected_images(output: pd.DataFrame, landed: dict[str, datetime] | None = None
                     ) -> tuple[list[InspectedImage], list[str]]:
    """predict() rows -> (an InspectedImage per row without ERROR, the ERROR rows as 'image path: why').

    `landed`: image path -> when it landed on the stage (its LIST last_modified), the inspection's timestamp as on
    the local path; an image without one gets the batch's timestamp (build_rows)."""
    from pcb_pipeline.vision.detector import Detection

    output, landed = normalise_output(output), landed or {}
    # the model's ERROR already starts with the image path (custom_model.predict); a service's own may not
    errors = [r.ERROR if str(r.ERROR).startswith(f"{r.IMAGE_PATH}:") else f"{r.IMAGE_PATH}: {r.ERROR}"
              for r in output.itertuples() if r.ERROR]
    images = [InspectedImage(r.IMAGE_PATH, int(r.IMAGE_WIDTH), int(r.IMAGE_HEIGHT),
                             [Detection(**d) for d in json.loads(r.DETECTIONS or "[]")],
                             timestamp=landed.get(r.IMAGE_PATH))
              for r in output.itertuples() if not r.ERROR]
    return images, errors


def write_defect_logs(output: pd.DataFrame, batch_id: str, version: ModelVersion, warehouse: Warehouse,
                      timestamp: datetime | None = None, landed: dict[str, datetime] | None = None
                      ) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """predict() rows -> DEFECT_LOGS + BOARD_INSPECTIONS (batch replaced); returns (logs, inspections, errors).
    Outside Dagster; the defect_logs asset writes the same rows through its own path (lock retries, metadata)."""
    images, errors = inspected_images(output, landed)
    lines = warehouse.query("SELECT board_id, factory_line_id FROM PCB_METADATA")
    factory_lines = dict(zip(lines["board_id"], lines["factory_line_id"]))
    logs, inspections = build_rows(batch_id, images, factory_lines, f"{version.name}/{version.version}",
                                   version.run_id, timestamp or datetime.now(timezone.utc))
    warehouse.replace_batch("batch_id", batch_id, {"DEFECT_LOGS": logs, "BOARD_INSPECTIONS": inspections})
    return logs, inspections, errors
