"""Backend selection by one setting: PCB_BACKEND=local (default) | snowflake."""
from __future__ import annotations

import os

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


def warehouse() -> Warehouse:
    from .local import DuckDBWarehouse

    if backend_name() == "local":
        wh = DuckDBWarehouse(settings.configure().warehouse)
        wh.ensure_schema()
        return wh
    from .snowflake import connect

    return connect.warehouse()


def registry() -> ModelRegistry:
    from .mlflow_registry import MLflowRegistry

    if backend_name() == "snowflake":
        from .snowflake import connect

        return connect.registry()
    return MLflowRegistry(settings.configure().mlflow_uri)
