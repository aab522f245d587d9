"""Backend selection by one setting: PCB_BACKEND=local (default) | snowflake."""
from __future__ import annotations

import os
from pathlib import Path

from pcb_pipeline import settings

from .base import BackendConfigError, ModelRegistry, Stage, Warehouse  # noqa: F401 - BackendConfigError re-exported


def backend_name() -> str:
    name = os.environ.get("PCB_BACKEND", "local").strip().lower()
    if name not in ("local", "snowflake"):
        raise BackendConfigError(f"PCB_BACKEND must be 'local' or 'snowflake', got {name!r}")
    return name


def stage() -> Stage:
    from .local import LocalStage

    if backend_name() == "local":
        return LocalStage(settings.configure().stage)
    from .snowflake import connect

    return connect.stage()


def warehouse(read_only: bool = False) -> Warehouse:
    """The configured warehouse. ``read_only`` (questions, typed SQL, the app): on DuckDB a read-only connection,
    so many readers run side by side and a reader can never write; the pipeline's writers retry around them."""
    from .local import DuckDBWarehouse

    if backend_name() == "local":
        path = settings.configure().warehouse
        if read_only and Path(path).exists():
            return DuckDBWarehouse(path, read_only=True)
        wh = DuckDBWarehouse(path)
        wh.ensure_schema()  # creates the file and tables (idempotent)
        return DuckDBWarehouse(path, read_only=True) if read_only else wh
    from .snowflake import connect

    return connect.warehouse()


def registry() -> ModelRegistry:
    from .mlflow_registry import MLflowRegistry

    if backend_name() == "snowflake":
        from .snowflake import connect

        return connect.registry()
    return MLflowRegistry(settings.configure().mlflow_uri)


def manual_search():
    """The SOP manual search behind `ask_manuals` (a knowledge.search.ManualSearch).

    local: the saved in-process hybrid index (built from pcb_pipeline/resources/manuals on first use).
    snowflake: Cortex Search PCB_SOP_SEARCH_SERVICE over SOP_CHUNKS, cited answers from AI_COMPLETE, on the
    connection configured by the SNOWFLAKE_* variables (one connection per question).
    """
    if backend_name() == "local":
        from pcb_pipeline.knowledge.api import default_manual_search

        return default_manual_search()
    from .snowflake import connect

    return connect.manual_search()


DATA_ANALYSTS = ("cortex", "local")


def data_analyst():
    """The question -> SQL engine behind `ask_data` and the app's "Query Data", chosen by PCB_DATA_ANALYST:

    local (the default on PCB_BACKEND=local): the semantic-model engine (knowledge.text2sql.LocalDataAnalyst), whose
    Snowflake-dialect SQL passes the guard and runs on whatever `warehouse()` returns.
    cortex (the default on PCB_BACKEND=snowflake): Cortex Analyst over the semantic model on the stage
    (knowledge.analyst.CortexAnalystClient), its SQL through the same guard; on an HTTP error, a timeout, an answer
    without SQL or SQL the guard refuses, the local engine answers and says so.
    """
    from pcb_pipeline.knowledge.api import local_analyst

    default = "cortex" if backend_name() == "snowflake" else "local"
    choice = os.environ.get("PCB_DATA_ANALYST", "").strip().lower() or default
    if choice not in DATA_ANALYSTS:
        raise BackendConfigError(f"PCB_DATA_ANALYST must be one of {', '.join(DATA_ANALYSTS)}, got {choice!r}")
    if choice == "local":
        return local_analyst()
    if backend_name() != "snowflake":
        raise BackendConfigError("PCB_DATA_ANALYST=cortex needs PCB_BACKEND=snowflake (Cortex Analyst is a "
                                 "Snowflake service); use PCB_DATA_ANALYST=local")
    from .snowflake import connect

    return connect.data_analyst(fallback=local_analyst())
