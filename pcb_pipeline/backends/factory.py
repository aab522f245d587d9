"""The composition root: every backend object is built here from ONE settings object, `PipelineSettings`.

`PipelineSettings.from_env()` reads and validates the environment once (PCB_BACKEND=local (default) | snowflake, and
what that backend needs); the builders below take it explicitly. Called without one, a builder reads it then, so a
changed environment is seen by the next call. The Dagster resources (pcb_pipeline.defs.resources) build through the
same builders: `local_warehouse` here, `snowflake.connect.SnowflakeAccess` for Snowflake.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from pcb_pipeline import settings
from pcb_pipeline.settings import env_choice

from .base import BackendConfigError, ModelRegistry, Stage, TrainingDispatcher, Warehouse
from .snowflake.config import SnowflakeSettings
from .snowflake.config import from_env as snowflake_from_env

__all__ = ["BackendConfigError", "PipelineSettings", "QualitySettings", "backend_name", "stage", "warehouse",
           "registry", "trainer", "manual_search", "data_analyst", "local_warehouse"]

BACKENDS = ("local", "snowflake")
DATA_ANALYSTS = ("cortex", "local")


@dataclass(frozen=True)
class QualitySettings:
    """The thresholds of the registry gate and the freshness checks (pcb_pipeline.defs.quality_checks)."""

    min_map50: float = 0.5  # PCB_MIN_MAP50: a candidate is promoted only at or above this mAP50
    champion_max_age_hours: float = 168.0  # PCB_CHAMPION_MAX_AGE_HOURS
    retrain_max_age_hours: float = 26.0  # PCB_RETRAIN_MAX_AGE_HOURS
    logs_max_age_hours: float = 24.0  # PCB_LOGS_MAX_AGE_HOURS

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> QualitySettings:
        """Raises settings.SettingError naming the variable of a bad number."""
        env = os.environ if env is None else env
        hours = {f: settings.env_number(env, f"PCB_{f.upper()}", getattr(cls, f), minimum=0.0, exclusive=True,
                                        unit="a number of hours")
                 for f in ("champion_max_age_hours", "retrain_max_age_hours", "logs_max_age_hours")}
        return cls(min_map50=settings.min_map50(env), **hours)


@dataclass(frozen=True)
class PipelineSettings:
    """Everything the pipeline reads from its environment, validated; built once and passed to the builders."""

    backend: str = "local"  # PCB_BACKEND: local | snowflake
    data_analyst: str = "local"  # PCB_DATA_ANALYST: local | cortex (default: cortex on Snowflake)
    paths: settings.Paths = field(default_factory=settings.paths)  # PCB_HOME and the local state under it
    snowflake: SnowflakeSettings | None = None  # SNOWFLAKE_* / PCB_SNOWFLAKE_*, on PCB_BACKEND=snowflake only
    quality: QualitySettings = field(default_factory=QualitySettings)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, *, backend: str | None = None) -> PipelineSettings:
        """Read and validate the environment (default: os.environ); `backend` overrides PCB_BACKEND. Raises
        BackendConfigError (SnowflakeConfigError for Snowflake settings) or settings.SettingError, naming the
        variable. Touches no file beyond what validation reads (a private key's header, a container's token)."""
        env = os.environ if env is None else env
        backend = backend or backend_name(env)
        return cls(backend=backend, data_analyst=_data_analyst(env, backend), paths=settings.paths(env),
                   snowflake=snowflake_from_env(env) if backend == "snowflake" else None,
                   quality=QualitySettings.from_env(env))

    def require_snowflake(self) -> SnowflakeSettings:
        if self.snowflake is None:
            raise BackendConfigError(f"PCB_BACKEND={self.backend}: these settings hold no Snowflake configuration")
        return self.snowflake


def backend_name(env: Mapping[str, str] | None = None) -> str:
    env = os.environ if env is None else env
    return env_choice(env, "PCB_BACKEND", tuple(BACKENDS), "local", error=BackendConfigError)


def _data_analyst(env: Mapping[str, str], backend: str) -> str:
    default = "cortex" if backend == "snowflake" else "local"
    choice = env_choice(env, "PCB_DATA_ANALYST", tuple(DATA_ANALYSTS), default, error=BackendConfigError)
    if choice == "cortex" and backend != "snowflake":
        raise BackendConfigError("PCB_DATA_ANALYST=cortex needs PCB_BACKEND=snowflake (Cortex Analyst is a "
                                 "Snowflake service); use PCB_DATA_ANALYST=local")
    return choice


def _read(s: PipelineSettings | None) -> PipelineSettings:
    return s if s is not None else PipelineSettings.from_env()


# ----------------------------------------------------------------------------------------------------- builders
def local_warehouse(path: Path | str, read_only: bool = False):
    """The DuckDB warehouse. ``read_only`` (questions, typed SQL, the app): a read-only connection, so many readers
    run side by side and a reader can never write; the pipeline's writers retry around them. The file and its
    tables are created first when missing (idempotent)."""
    from .local import DuckDBWarehouse

    if read_only and Path(path).exists():
        return DuckDBWarehouse(path, read_only=True)
    wh = DuckDBWarehouse(path)
    wh.ensure_schema()
    return DuckDBWarehouse(path, read_only=True) if read_only else wh


def stage(s: PipelineSettings | None = None) -> Stage:
    s = _read(s)
    if s.backend == "snowflake":
        from .snowflake import connect

        return connect.stage(s.require_snowflake())
    from .local import LocalStage

    return LocalStage(settings.prepare(s.paths).stage)


def warehouse(read_only: bool = False, s: PipelineSettings | None = None) -> Warehouse:
    """The configured warehouse (``read_only``: see `local_warehouse`; Snowflake's role decides what it may do)."""
    s = _read(s)
    if s.backend == "snowflake":
        from .snowflake import connect

        return connect.warehouse(s.require_snowflake())
    return local_warehouse(settings.prepare(s.paths).warehouse, read_only=read_only)


def registry(s: PipelineSettings | None = None) -> ModelRegistry:
    s = _read(s)
    p = settings.prepare(s.paths)
    if s.backend == "snowflake":
        from .snowflake import connect

        return connect.registry(s.require_snowflake(), paths=p)
    from .mlflow_registry import MLflowRegistry

    return MLflowRegistry(p.mlflow_uri)


def trainer(stage_: Stage | None = None, s: PipelineSettings | None = None) -> TrainingDispatcher:
    """The training dispatcher, putting its weights on `stage_` (default: the configured stage)."""
    s = _read(s)
    p = settings.prepare(s.paths)
    stage_ = stage_ if stage_ is not None else stage(s)
    if s.backend == "snowflake":
        from .snowflake import connect

        return connect.trainer(stage_, s.require_snowflake(), paths=p)
    from .local import LocalTrainingDispatcher

    return LocalTrainingDispatcher(stage_, p.work)


def manual_search(s: PipelineSettings | None = None):
    """The SOP manual search behind `ask_manuals` (a knowledge.search.ManualSearch).

    local: the saved in-process hybrid index (built from pcb_pipeline/resources/manuals on first use).
    snowflake: Cortex Search PCB_SOP_SEARCH_SERVICE over SOP_CHUNKS, cited answers from AI_COMPLETE, on the
    connection configured by the SNOWFLAKE_* variables (one connection per question).
    """
    s = _read(s)
    if s.backend == "snowflake":
        from .snowflake import connect

        return connect.manual_search(s.require_snowflake())
    from pcb_pipeline.knowledge.api import default_manual_search

    return default_manual_search(s.paths.sop_index)


def data_analyst(s: PipelineSettings | None = None):
    """The question -> SQL engine behind `ask_data` and the app's "Query Data", chosen by PCB_DATA_ANALYST:

    local (the default on PCB_BACKEND=local): the semantic-model engine (knowledge.text2sql.LocalDataAnalyst), whose
    Snowflake-dialect SQL passes the guard and runs on whatever `warehouse()` returns.
    cortex (the default on PCB_BACKEND=snowflake): Cortex Analyst over the semantic model on the stage
    (knowledge.analyst.CortexAnalystClient), its SQL through the same guard; on an HTTP error, a timeout, an answer
    without SQL or SQL the guard refuses, the local engine answers and says so.
    """
    from pcb_pipeline.knowledge.api import local_analyst

    s = _read(s)
    if s.data_analyst == "local":
        return local_analyst()
    from .snowflake import connect

    return connect.data_analyst(s.require_snowflake(), fallback=local_analyst())
