"""The Snowflake Model Registry behind the ModelRegistry interface, with the same promotion gate as MLflow's.

- register: `Registry.log_model(PCBDefectDetectorModel(...), model_name=..., version_name="RUN_<mlflow run id>",
  signatures=..., pip_requirements=..., target_platforms=["SNOWPARK_CONTAINER_SERVICES"], code_paths=[pcb_pipeline],
  options={"cuda_version": ...}, metrics=...)`. The version name comes from the training run, so registering the same
  run twice returns the existing version instead of failing.
- the version's metrics hold the evaluation metrics plus run_id and the stage paths of best.pt / best.onnx; weights are
  read back from the stage (cheaper than exporting the whole model).
- promote_if_better: `promotion_decision` (pcb_pipeline.backends.mlflow_registry) decides; a promoted version gets the
  alias CHAMPION (moved from the previous champion) and becomes the model's default version; the decision's reason is
  stored on the version as the metric `promotion`.
"""
from __future__ import annotations

import re
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any, Callable

from pcb_pipeline.backends.base import ModelVersion, PromotionDecision, Stage, TrainingResult
from pcb_pipeline.backends.mlflow_registry import promotion_decision

PACKAGE_DIR = Path(__file__).resolve().parents[2]
CHAMPION_ALIAS = "CHAMPION"
TARGET_PLATFORMS = ("SNOWPARK_CONTAINER_SERVICES",)
# What the inference container needs on top of the base image (torch comes in with ultralytics; cuda_version makes
# Snowflake build a CUDA image so a GPU service can be created from the version; onnx reads which kind of model an
# export is, vision.verifier.onnx_kind).
DEFAULT_MODEL_PIP = ["ultralytics==8.4.190", "onnx==1.23.2", "onnxruntime==1.32.0", "pillow>=10", "pandas>=2",
                     "pyyaml>=6"]
RESERVED_METRICS = {"run_id", "weights_stage_path", "onnx_stage_path", "promotion"}


def version_for_run(run_id: str) -> str:
    clean = re.sub(r"[^A-Za-z0-9_]", "_", run_id).upper()
    return f"RUN_{clean}"


class SnowflakeModelRegistry:
    def __init__(self, stage: Stage, model_name: str = "PCB_DEFECT_DETECTOR",
                 session_factory: Callable[[], AbstractContextManager] | None = None,
                 database: str | None = None, schema: str | None = None, cuda_version: str = "12.4",
                 pip_requirements: list[str] | None = None, target_platforms: tuple[str, ...] = TARGET_PLATFORMS,
                 artifact_repository_map: dict[str, str] | None = None,
                 registry_factory: Callable[[Any], Any] | None = None, champion_alias: str = CHAMPION_ALIAS,
                 mlflow_uri: str | None = None):
        self.stage = stage
        self.model_name = model_name
        self.session_factory = session_factory or (lambda: nullcontext(None))
        self.database, self.schema = database, schema
        self.cuda_version = cuda_version
        self.pip_requirements = list(pip_requirements or DEFAULT_MODEL_PIP)
        self.target_platforms = list(target_platforms)
        self.artifact_repository_map = artifact_repository_map
        self._registry_factory = registry_factory
        self.champion_alias = champion_alias
        self.mlflow_uri = mlflow_uri

    # -------------------------------------------------------------------------------------------- plumbing
    def open(self, session):
        """snowflake.ml.registry.Registry on the configured database/schema (or a test's stand-in)."""
        if self._registry_factory is not None:
            return self._registry_factory(session)
        from snowflake.ml.registry import Registry

        return Registry(session=session, database_name=self.database, schema_name=self.schema)

    def _model(self, reg):
        try:
            return reg.get_model(self.model_name)
        except ValueError:  # "Unable to find model ..."
            return None

    @staticmethod
    def _version_or_none(model, name: str):
        try:
            return model.version(name)
        except ValueError:  # "Unable to find version or alias ..."
            return None

    def _to_version(self, mv) -> ModelVersion:
        raw = mv.show_metrics() or {}
        metrics = {k: float(v) for k, v in raw.items()
                   if k not in RESERVED_METRICS and isinstance(v, (int, float)) and not isinstance(v, bool)}
        return ModelVersion(self.model_name, str(mv.version_name), str(raw.get("run_id", "")), metrics,
                            str(raw.get("weights_stage_path", "")))

    def log_model_kwargs(self, result: TrainingResult, version_name: str) -> dict:
        metrics = {**{k: float(v) for k, v in result.metrics.items()}, "run_id": result.run_id,
                   "weights_stage_path": result.weights_stage_path, "onnx_stage_path": result.onnx_stage_path or ""}
        from .custom_model import signatures

        kwargs = dict(model_name=self.model_name, version_name=version_name,
                      comment=f"YOLOv12 PCB defect detector from training run {result.run_id}", metrics=metrics,
                      pip_requirements=list(self.pip_requirements), target_platforms=list(self.target_platforms),
                      signatures=signatures(), code_paths=[str(PACKAGE_DIR)],
                      options={"cuda_version": self.cuda_version})
        if self.artifact_repository_map:
            kwargs["artifact_repository_map"] = dict(self.artifact_repository_map)
        return kwargs

    # -------------------------------------------------------------------------------------------- interface
    def register(self, result: TrainingResult, weights: Path, onnx: Path | None) -> ModelVersion:
        from .custom_model import PCBDefectDetectorModel, model_context

        version_name = version_for_run(result.run_id)
        with self.session_factory() as session:
            reg = self.open(session)
            model = self._model(reg)
            existing = self._version_or_none(model, version_name) if model is not None else None
            if existing is not None:
                return self._to_version(existing)
            mv = reg.log_model(PCBDefectDetectorModel(model_context(Path(weights), onnx)),
                               **self.log_model_kwargs(result, version_name))
            version = self._to_version(mv)
        self._tag_mlflow(result.run_id, version)
        return version

    def champion(self) -> ModelVersion | None:
        with self.session_factory() as session:
            model = self._model(self.open(session))
            mv = self._version_or_none(model, self.champion_alias) if model is not None else None
            return self._to_version(mv) if mv is not None else None

    def promote_if_better(self, candidate: ModelVersion, min_map50: float) -> PromotionDecision:
        with self.session_factory() as session:
            model = self._model(self.open(session))
            if model is None:
                raise ValueError(f"model {self.model_name} is not in the registry: register it first")
            current = self._version_or_none(model, self.champion_alias)
            champion = self._to_version(current) if current is not None else None
            decision = promotion_decision(candidate, champion, min_map50)
            mv = model.version(candidate.version)
            mv.set_metric("promotion", ("promoted: " if decision.promoted else "rejected: ") + decision.reason)
            if decision.promoted and (champion is None or champion.version != candidate.version):
                if current is not None:
                    current.unset_alias(self.champion_alias)
                mv.set_alias(self.champion_alias)
            if decision.promoted:
                model.default = mv
        return decision

    def download_weights(self, version: ModelVersion, dest_dir: Path) -> Path:
        """best.pt (and best.onnx beside it when the version has one) from the stage paths stored on the version."""
        target = Path(dest_dir) / f"{version.name}_{version.version}"
        pt = target / "best.pt"
        if not pt.is_file():
            if not version.weights_uri:
                raise FileNotFoundError(f"{version.name} {version.version} records no weights_stage_path")
            self.stage.get_file(version.weights_uri, pt)
            onnx = str(Path(version.weights_uri).with_suffix(".onnx"))
            if any(f.path == onnx for f in self.stage.list(onnx)):
                self.stage.get_file(onnx, target / "best.onnx")
        return pt

    def model_version(self, session, version: ModelVersion):
        """The snowflake.ml ModelVersion object (for run_batch / create_service)."""
        model = self._model(self.open(session))
        if model is None:
            raise ValueError(f"model {self.model_name} is not in the registry")
        return model.version(version.version)

    def _tag_mlflow(self, run_id: str, version: ModelVersion) -> None:
        if not self.mlflow_uri:
            return
        import mlflow
        from mlflow.exceptions import MlflowException

        try:
            client = mlflow.MlflowClient(tracking_uri=self.mlflow_uri)
            client.set_tag(run_id, "snowflake.model", f"{version.name}/{version.version}")
        except MlflowException:
            pass  # the run lives in a tracking store this side cannot see
