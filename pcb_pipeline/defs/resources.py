"""Typed Dagster resources: thin wrappers over the backends.

A resource is its configuration and nothing more; `get()` hands that configuration to the builders the CLI and the
app use too (pcb_pipeline.backends.factory, and for Snowflake pcb_pipeline.backends.snowflake.connect), so a backend
object is built the same way inside and outside Dagster.

Each concern has an interface resource (StageProvider, WarehouseProvider, TrainingProvider, RegistryProvider,
SearchIndexProvider) that both backends' resources subclass: a parameter annotated with it is true on either backend.
The local resources are below; the Snowflake ones in pcb_pipeline.defs.snowflake_resources.
"""
from __future__ import annotations

from abc import abstractmethod
from pathlib import Path
from typing import Callable

import dagster as dg

from pcb_pipeline.backends import factory
from pcb_pipeline.backends.base import ModelRegistry, Stage, TrainingDispatcher, Warehouse
from pcb_pipeline.backends.local import LocalStage, LocalTrainingDispatcher
from pcb_pipeline.backends.mlflow_registry import MLflowRegistry
from pcb_pipeline.settings import prepare


class BackendResource(dg.ConfigurableResource):
    """Shared base of the pipeline's resources: configuration in, a backend object out of `get()`."""


class StageProvider(BackendResource):
    @abstractmethod
    def get(self) -> Stage: ...


class WarehouseProvider(BackendResource):
    @abstractmethod
    def get(self) -> Warehouse: ...


class TrainingProvider(BackendResource):
    @abstractmethod
    def get(self, stage: Stage) -> TrainingDispatcher: ...


class RegistryProvider(BackendResource):
    """`min_map50`: the promotion threshold the registered_model asset and the model_gate check apply."""

    min_map50: float = 0.5

    @abstractmethod
    def get(self) -> ModelRegistry: ...

    def batch_inference(self, log: Callable[[str], None] = print):
        """Registry-side inference for the defect_logs asset, or None: the asset runs the champion itself."""
        return None


class SearchIndexProvider(BackendResource):
    """The SOP manual search: `publish` (re)builds it from chunks, `ask` answers with citations."""

    @abstractmethod
    def publish(self, chunks) -> str: ...

    @abstractmethod
    def manual_search(self):
        """The knowledge.search.ManualSearch behind `ask`."""

    def ask(self, question: str, category: str | None = None) -> dict:
        from pcb_pipeline.knowledge.api import ask_manuals

        return ask_manuals(question, category, search=self.manual_search())  # checks the question first


# ------------------------------------------------------------------------------------------------ local backend
class StageResource(StageProvider):
    """The local stage: a directory (PCB_HOME/stage)."""

    root: str

    def get(self) -> Stage:
        return LocalStage(Path(self.root))


class WarehouseResource(WarehouseProvider):
    """The local warehouse: a DuckDB file that takes Snowflake-dialect SQL."""

    path: str

    def get(self) -> Warehouse:
        return factory.local_warehouse(self.path)


class TrainingResource(TrainingProvider):
    """Runs the training entrypoint as a local subprocess; it logs to `tracking_uri` (the registry's store), else to
    the MLflow store of PCB_HOME."""

    work_dir: str
    tracking_uri: str | None = None

    def get(self, stage: Stage) -> TrainingDispatcher:
        env = {"MLFLOW_TRACKING_URI": self.tracking_uri} if self.tracking_uri else None
        return LocalTrainingDispatcher(stage, Path(self.work_dir), env=env)


class RegistryResource(RegistryProvider):
    """MLflow tracking + model registry; the champion runs in the asset's own process (no batch_inference)."""

    tracking_uri: str
    model_name: str = "pcb_defect_detector"

    def get(self) -> ModelRegistry:
        return MLflowRegistry(self.tracking_uri, self.model_name)


class SearchIndexResource(SearchIndexProvider):
    """The local manual search: a hybrid BM25 + embedding index saved under PCB_HOME/knowledge/sop_index."""

    index_dir: str

    def publish(self, chunks) -> str:
        from pcb_pipeline.knowledge.api import build_sop_index

        build_sop_index(chunks, Path(self.index_dir))
        return f"local hybrid index at {self.index_dir}"

    def manual_search(self):
        from pcb_pipeline.knowledge.api import default_manual_search

        return default_manual_search(Path(self.index_dir))


def local_resources(min_map50: float | None = None, settings: factory.PipelineSettings | None = None) -> dict:
    """The resources of PCB_BACKEND=local under the settings' PCB_HOME (default: the environment's, read now);
    `min_map50` overrides PCB_MIN_MAP50."""
    s = settings or factory.PipelineSettings.from_env(backend="local")
    p = prepare(s.paths)
    return {
        "stage": StageResource(root=str(p.stage)),
        "warehouse": WarehouseResource(path=str(p.warehouse)),
        "trainer": TrainingResource(work_dir=str(p.work), tracking_uri=p.mlflow_uri),
        "registry": RegistryResource(tracking_uri=p.mlflow_uri,
                                     min_map50=s.quality.min_map50 if min_map50 is None else min_map50),
        "search_index": SearchIndexResource(index_dir=str(p.sop_index)),
    }


def resources_for(settings: factory.PipelineSettings | None = None) -> dict:
    """The resources of the settings' backend (default: the environment's settings, read now)."""
    s = settings or factory.PipelineSettings.from_env()
    if s.backend == "snowflake":
        from pcb_pipeline.defs.snowflake_resources import snowflake_resources

        return snowflake_resources(settings=s)
    return local_resources(settings=s)
