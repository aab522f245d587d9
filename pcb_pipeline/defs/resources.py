"""Typed Dagster resources. Each exposes `get()` returning a backend interface from pcb_pipeline.backends.base."""

from pathlib import Path

import dagster as dg

from pcb_pipeline import settings
from pcb_pipeline.backends.base import ModelRegistry, Stage, TrainingDispatcher, Warehouse
from pcb_pipeline.backends.local import DuckDBWarehouse, LocalStage, LocalTrainingDispatcher
from pcb_pipeline.backends.mlflow_registry import MLflowRegistry


class StageResource(dg.ConfigurableResource):
    """The local stage: a directory (PCB_HOME/stage)."""

    root: str

    def get(self) -> Stage:
        return LocalStage(Path(self.root))


class WarehouseResource(dg.ConfigurableResource):
    """The local warehouse: a DuckDB file that takes Snowflake-dialect SQL."""

    path: str

    def get(self) -> Warehouse:
        wh = DuckDBWarehouse(self.path)
        wh.ensure_schema()
        return wh


class TrainingResource(dg.ConfigurableResource):
    """Runs the training entrypoint as a local subprocess."""

    work_dir: str

    def get(self, stage: Stage) -> TrainingDispatcher:
        return LocalTrainingDispatcher(stage, Path(self.work_dir))


class RegistryResource(dg.ConfigurableResource):
    """MLflow tracking + model registry; `min_map50` is the promotion threshold."""

    tracking_uri: str
    model_name: str = "pcb_defect_detector"
    min_map50: float = 0.5

    def get(self) -> ModelRegistry:
        return MLflowRegistry(self.tracking_uri, self.model_name)

    def batch_inference(self, log=print) -> None:
        """None: the local backend runs the champion in the asset's own process (the Snowflake registry resource
        may return a registry-side RegistryInference instead)."""
        return None


class SearchIndexResource(dg.ConfigurableResource):
    """The local manual search: a hybrid BM25 + embedding index saved under PCB_HOME/knowledge/sop_index."""

    index_dir: str

    def publish(self, chunks) -> str:
        from pcb_pipeline.knowledge.api import build_sop_index

        build_sop_index(chunks, Path(self.index_dir))
        return f"local hybrid index at {self.index_dir}"

    def ask(self, question: str, category: str | None = None) -> dict:
        from pcb_pipeline.knowledge.api import ask_manuals, default_manual_search

        return ask_manuals(question, category, search=default_manual_search(Path(self.index_dir)))


def local_resources(min_map50: float | None = None) -> dict:
    p = settings.configure()
    registry = RegistryResource(tracking_uri=p.mlflow_uri)
    if min_map50 is not None:
        registry = RegistryResource(tracking_uri=p.mlflow_uri, min_map50=min_map50)
    return {
        "stage": StageResource(root=str(p.stage)),
        "warehouse": WarehouseResource(path=str(p.warehouse)),
        "trainer": TrainingResource(work_dir=str(p.work)),
        "registry": registry,
        "search_index": SearchIndexResource(index_dir=str(p.home / "knowledge" / "sop_index")),
    }
