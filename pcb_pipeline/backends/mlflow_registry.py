"""MLflow model registry: versions, a `champion` alias, and the promotion gate."""
from __future__ import annotations

import shutil
import warnings
from pathlib import Path

from .base import ModelVersion, PromotionDecision, TrainingResult

CHAMPION = "champion"
MODEL_FILE = Path(__file__).resolve().parents[1] / "vision" / "mlflow_model.py"


def promotion_decision(candidate: ModelVersion, champion: ModelVersion | None, min_map50: float) -> PromotionDecision:
    """The gate, pure: clear the threshold and do not regress against the champion."""
    score = candidate.metrics.get("map50", float("nan"))
    if not score >= min_map50:  # also false for NaN
        return PromotionDecision(False, f"mAP50 {score:.4f} is below the threshold {min_map50:.4f}", candidate,
                                 champion)
    if champion is not None and champion.version != candidate.version:
        best = champion.metrics.get("map50", float("-inf"))
        if score < best:
            return PromotionDecision(False, f"mAP50 {score:.4f} regresses against champion v{champion.version} "
                                            f"({best:.4f})", candidate, champion)
        return PromotionDecision(True, f"mAP50 {score:.4f} >= threshold {min_map50:.4f} and >= champion "
                                       f"v{champion.version} ({best:.4f})", candidate, champion)
    return PromotionDecision(True, f"mAP50 {score:.4f} >= threshold {min_map50:.4f}; no champion yet", candidate,
                             champion)


class MLflowRegistry:
    def __init__(self, tracking_uri: str, model_name: str = "pcb_defect_detector"):
        import mlflow

        self.model_name = model_name
        self.tracking_uri = tracking_uri
        mlflow.set_tracking_uri(tracking_uri)
        mlflow.set_registry_uri(tracking_uri)
        self.client = mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)

    def register(self, result: TrainingResult, weights: Path, onnx: Path | None) -> ModelVersion:
        import mlflow
        import pandas as pd
        from mlflow.models import infer_signature

        from pcb_pipeline.vision.mlflow_model import OUTPUT_COLUMNS

        artifacts = {"weights": str(weights)}
        if onnx is not None and Path(onnx).is_file():
            artifacts["onnx"] = str(onnx)
        example_in = pd.DataFrame({"image_path": ["board.jpg"], "board_id": ["board"]})
        example_out = pd.DataFrame([["board", 2, "mousebite", 0.9, 1.0, 2.0, 30.0, 40.0]], columns=OUTPUT_COLUMNS)
        with mlflow.start_run(run_id=result.run_id), warnings.catch_warnings():
            # No input_example on purpose: MLflow would run predict on it at logging time (needs a real image).
            warnings.simplefilter("ignore", UserWarning)
            info = mlflow.pyfunc.log_model(
                name="model", python_model=str(MODEL_FILE), artifacts=artifacts,
                signature=infer_signature(example_in, example_out),
                pip_requirements=["ultralytics==8.4.190", "onnx==1.23.2", "onnxruntime==1.32.0", "pillow", "pandas"],
            )
        mv = mlflow.register_model(info.model_uri, self.model_name)
        for k, v in result.metrics.items():
            self.client.set_model_version_tag(self.model_name, mv.version, f"metric.{k}", f"{v:.6f}")
        self.client.set_model_version_tag(self.model_name, mv.version, "weights_stage_path",
                                          result.weights_stage_path)
        return self._to_version(self.client.get_model_version(self.model_name, mv.version))

    def _to_version(self, mv) -> ModelVersion:
        metrics = {k[len("metric."):]: float(v) for k, v in (mv.tags or {}).items() if k.startswith("metric.")}
        return ModelVersion(self.model_name, str(mv.version), mv.run_id, metrics, mv.source)

    def champion(self) -> ModelVersion | None:
        from mlflow.exceptions import MlflowException

        try:
            return self._to_version(self.client.get_model_version_by_alias(self.model_name, CHAMPION))
        except MlflowException:
            return None

    def promote_if_better(self, candidate: ModelVersion, min_map50: float) -> PromotionDecision:
        decision = promotion_decision(candidate, self.champion(), min_map50)
        self.client.set_model_version_tag(self.model_name, candidate.version, "promotion",
                                          ("promoted: " if decision.promoted else "rejected: ") + decision.reason)
        if decision.promoted:
            self.client.set_registered_model_alias(self.model_name, CHAMPION, candidate.version)
        return decision

    def download_weights(self, version: ModelVersion, dest_dir: Path) -> Path:
        """Fetch best.pt (and best.onnx beside it when registered) into dest_dir; returns the .pt path."""
        import mlflow

        dest_dir = Path(dest_dir)
        target = dest_dir / f"v{version.version}"
        if not (target / "best.pt").is_file():
            tmp = Path(mlflow.artifacts.download_artifacts(f"models:/{self.model_name}/{version.version}",
                                                           dst_path=str(dest_dir / f".v{version.version}.tmp")))
            files = tmp / "artifacts"
            if not files.is_dir():  # recorded under a home that has moved: MLflow stores absolute artifact URIs
                files = self._relocated_model_files(version)
            target.mkdir(parents=True, exist_ok=True)
            for f in files.iterdir():
                shutil.copyfile(f, target / ("best" + f.suffix))
            shutil.rmtree(tmp, ignore_errors=True)
        return target / "best.pt"

    def _relocated_model_files(self, version: ModelVersion) -> Path:
        """A registered model's files where they are now: MLflow records each artifact location as an absolute
        URI, so after PCB_HOME is moved or copied the recorded path is stale. The part below the experiment's
        artifact root is re-rooted at the artifact folder beside this tracking database (settings' layout:
        <home>/mlflow/mlflow.db and <home>/mlflow/artifacts)."""
        import mlflow
        from urllib.parse import unquote

        mv = self.client.get_model_version(self.model_name, version.version)
        logged = mlflow.get_logged_model(str(mv.source).removeprefix("models:/"))
        root = self.client.get_experiment(logged.experiment_id).artifact_location.rstrip("/")
        recorded = logged.artifact_location
        if not recorded.startswith(root + "/"):
            raise FileNotFoundError(f"{self.model_name} v{version.version}: artifacts at {recorded} are missing")
        here = _artifact_root(self.tracking_uri) / unquote(recorded[len(root) + 1:]) / "artifacts"
        if not here.is_dir():
            raise FileNotFoundError(f"{self.model_name} v{version.version}: artifacts neither at {recorded} nor at "
                                    f"{here}")
        return here


def _artifact_root(tracking_uri: str) -> Path:
    """<home>/mlflow/artifacts for a sqlite:///<home>/mlflow/mlflow.db tracking URI."""
    if not tracking_uri.startswith("sqlite:///"):
        raise FileNotFoundError(f"cannot relocate artifacts for tracking URI {tracking_uri}")
    return Path(tracking_uri[len("sqlite:///"):]).parent / "artifacts"
