"""Backend selection by one setting: PCB_BACKEND=local (default) | snowflake."""
from __future__ import annotations

import os
from pathlib import Path

from pcb_pipeline import settings

from .base import ModelRegistry, Stage, Warehouse


class BackendConfigError(RuntimeError):
    pass


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
        if not read_only or not Path(path).exists():
            DuckDBWarehouse(path).ensure_schema()  # creates the file and tables once
        return DuckDBWarehouse(path, read_only=read_only)
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


def data_analyst():
    """The question -> SQL engine behind `ask_data`, on both backends the semantic-model engine
    (knowledge.text2sql.LocalDataAnalyst): its SQL is Snowflake dialect, passes the SQL guard and runs on whatever
    `warehouse()` returns, so on PCB_BACKEND=snowflake the data questions run on the Snowflake warehouse.
    Cortex Analyst (knowledge.analyst.CortexAnalystClient) is not chosen here: it needs the REST API with a live
    session token, which nothing in this project has exercised.
    """
    from pcb_pipeline.knowledge.api import local_analyst

    return local_analyst()
