"""Dagster resources for PCB_BACKEND=snowflake: the same keys and `.get()` interfaces as `local_resources()`.

Credentials reach Dagster only as `dg.EnvVar(...)` inside one `dagster_snowflake.SnowflakeResource` shared by the five
resources (Dagster resolves them when a run starts; they never appear in run config). `snowflake_resources()`
validates the environment first (pcb_pipeline.backends.snowflake.config) and raises SnowflakeConfigError naming the
variable, so a missing or wrong setting stops the code location from loading instead of failing mid-run.
"""
from __future__ import annotations

import os
import re
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Callable

import dagster as dg
from dagster_snowflake import SnowflakeResource

from pcb_pipeline import settings
from pcb_pipeline.backends.base import ModelRegistry, Stage, TrainingDispatcher, Warehouse
from pcb_pipeline.backends.snowflake.config import SnowflakeSettings, from_env
from pcb_pipeline.backends.snowflake.registry import DEFAULT_MODEL_PIP
from pcb_pipeline.backends.snowflake.training import DEFAULT_PIP_REQUIREMENTS
from pcb_pipeline.knowledge.snowflake_search import (CHUNKS_TABLE, DEFAULT_LLM, DEFAULT_WAREHOUSE, SERVICE_NAME,
                                                     ConnectedManualSearch, cortex_search_statements,
                                                     parse_search_service_ddl, sync_chunks)

_CORTEX_SERVICE_DDL = re.compile(r"\bCORTEX\s+SEARCH\s+SERVICE\b", re.I)


def _qualified(sf: SnowflakeResource, name: str) -> str:
    return name if "." in name else f"{sf.database}.{sf.schema_}.{name}"


class SnowflakeStageResource(dg.ConfigurableResource):
    """The internal stage (PUT / GET / LIST / REMOVE)."""

    snowflake: SnowflakeResource
    stage_name: str = "MODEL_STAGE"

    def get(self) -> Stage:
        from pcb_pipeline.backends.snowflake.stage import SnowflakeStage

        return SnowflakeStage(self.snowflake.get_connection, self.stage_name, _qualified(self.snowflake,
                                                                                            self.stage_name))


class SnowflakeWarehouseResource(dg.ConfigurableResource):
    """Tables and SQL on Snowflake; creates the tables of sql/tables.sql if missing (IF NOT EXISTS)."""

    snowflake: SnowflakeResource
    ensure_schema: bool = True

    def get(self) -> Warehouse:
        from pcb_pipeline.backends.snowflake.warehouse import SnowflakeWarehouse

        wh = SnowflakeWarehouse(self.snowflake.get_connection)
        if self.ensure_schema:
            wh.ensure_schema()
        return wh


class SnowflakeTrainingResource(dg.ConfigurableResource):
    """Runs the training entrypoint as a Snowflake ML Job on a GPU compute pool."""

    snowflake: SnowflakeResource
    compute_pool: str = "PCB_GPU_POOL"
    job_stage: str = "ML_JOB_STAGE"
    pip_requirements: list[str] = list(DEFAULT_PIP_REQUIREMENTS)
    external_access_integrations: list[str] = ["PCB_TRAINING_EAI"]
    target_instances: int = 1
    env_vars: dict[str, str] = {}
    timeout_s: int = 4 * 3600
    poll_interval_s: float = 15.0
    mlflow_tracking_uri: str | None = None  # a tracking server reachable from the job; else the run is mirrored here
    work_dir: str = ""

    def session_factory(self) -> Callable[[], AbstractContextManager]:
        return self.snowflake.create_snowpark_session

    def jobs_api(self) -> Any:
        return None  # snowflake.ml.jobs

    def get(self, stage: Stage) -> TrainingDispatcher:
        from pcb_pipeline.backends.snowflake.stage import SnowflakeStage
        from pcb_pipeline.backends.snowflake.training import MLJobConfig, SnowflakeMLJobDispatcher

        p = settings.configure()
        cfg = MLJobConfig(compute_pool=self.compute_pool, stage_name=self.job_stage,
                          pip_requirements=list(self.pip_requirements),
                          external_access_integrations=list(self.external_access_integrations),
                          target_instances=self.target_instances, env_vars=dict(self.env_vars),
                          timeout_s=self.timeout_s, poll_interval_s=self.poll_interval_s,
                          mlflow_tracking_uri=self.mlflow_tracking_uri, query_warehouse=self.snowflake.warehouse)
        job_stage = SnowflakeStage(self.snowflake.get_connection, self.job_stage)
        return SnowflakeMLJobDispatcher(stage, job_stage, cfg, Path(self.work_dir or p.work),
                                        session_factory=self.session_factory(), jobs_api=self.jobs_api(),
                                        local_mlflow_uri=p.mlflow_uri)


class SnowflakeRegistryResource(dg.ConfigurableResource):
    """Snowflake Model Registry (custom model, CHAMPION alias + default version); `min_map50` is the gate."""

    snowflake: SnowflakeResource
    stage_name: str = "MODEL_STAGE"
    model_name: str = "PCB_DEFECT_DETECTOR"
    min_map50: float = 0.5
    cuda_version: str = "12.4"
    pip_requirements: list[str] = list(DEFAULT_MODEL_PIP)
    artifact_repository_map: dict[str, str] = {}
    inference: str = "local"  # local | batch | service
    compute_pool: str = "PCB_GPU_POOL"
    gpu_requests: str = "1"
    build_external_access_integrations: list[str] = ["PCB_TRAINING_EAI"]
    inference_timeout_s: float = 3600.0  # a batch job still running after this is cancelled (the asset fails)
    inference_poll_interval_s: float = 15.0  # how often a batch job's status and logs are read

    def session_factory(self) -> Callable[[], AbstractContextManager]:
        return self.snowflake.create_snowpark_session

    def registry_factory(self) -> Callable[[Any], Any] | None:
        return None  # snowflake.ml.registry.Registry

    def _stage(self):
        from pcb_pipeline.backends.snowflake.stage import SnowflakeStage

        return SnowflakeStage(self.snowflake.get_connection, self.stage_name,
                              _qualified(self.snowflake, self.stage_name))

    def get(self) -> ModelRegistry:
        from pcb_pipeline.backends.snowflake.registry import SnowflakeModelRegistry

        return SnowflakeModelRegistry(
            self._stage(), self.model_name, session_factory=self.session_factory(),
            database=self.snowflake.database, schema=self.snowflake.schema_, cuda_version=self.cuda_version,
            pip_requirements=list(self.pip_requirements),
            artifact_repository_map=dict(self.artifact_repository_map) or None,
            registry_factory=self.registry_factory(), mlflow_uri=settings.configure().mlflow_uri)

    def batch_inference(self, log: Callable[[str], None] = print):
        """Registry-side inference (run_batch job or service) for the defect_logs asset, or None when inference runs
        in the asset ('local'). `log` receives the batch job's log lines (the asset passes context.log.info)."""
        if self.inference == "local":
            return None
        from pcb_pipeline.backends.snowflake.inference import InferenceConfig, RegistryInference

        cfg = InferenceConfig(mode=self.inference, compute_pool=self.compute_pool, gpu_requests=self.gpu_requests,
                              build_external_access_integrations=tuple(self.build_external_access_integrations),
                              database=self.snowflake.database, schema=self.snowflake.schema_,
                              timeout_s=self.inference_timeout_s, poll_interval_s=self.inference_poll_interval_s)
        return RegistryInference(self.get(), self._stage(), cfg, session_factory=self.session_factory(), log=log)


class SnowflakeSearchIndexResource(dg.ConfigurableResource):
    """The manual search on Snowflake: SOP_CHUNKS + Cortex Search PCB_SOP_SEARCH_SERVICE, answers from AI_COMPLETE.

    Same methods as the local SearchIndexResource. `publish` runs sql/cortex_search.sql: CREATE TABLE IF NOT EXISTS
    SOP_CHUNKS, replaces its rows with the chunks (MERGE, then DELETE of chunks that are gone), then CREATE OR
    REPLACE CORTEX SEARCH SERVICE over it. `ask` queries the service through snowflake.core and answers with
    AI_COMPLETE (pcb_pipeline.knowledge.snowflake_search.SnowflakeManualSearch), in ask_manuals' dict shape.
    """

    snowflake: SnowflakeResource
    warehouse: str | None = None  # the service's refresh warehouse; default: the connection's (SNOWFLAKE_WAREHOUSE)
    target_lag: str | None = None  # e.g. '30 minutes'; default: sql/cortex_search.sql's ('1 hour')
    llm: str = DEFAULT_LLM  # AI_COMPLETE model
    limit: int = 5  # passages retrieved per question

    def root_factory(self) -> Callable[[Any], Any] | None:
        return None  # snowflake.core.Root over the connection

    def statements(self) -> list[str]:
        return cortex_search_statements(warehouse=self.warehouse or self.snowflake.warehouse or DEFAULT_WAREHOUSE,
                                        target_lag=self.target_lag)

    def publish(self, chunks) -> str:
        from pcb_pipeline.backends.snowflake.warehouse import SnowflakeWarehouse

        if not chunks:
            raise ValueError("no chunks to publish: the Cortex Search service would be empty")
        stmts = self.statements()
        services = [s for s in stmts if _CORTEX_SERVICE_DDL.search(s)]
        tables = [s for s in stmts if not _CORTEX_SERVICE_DDL.search(s)]
        wh = SnowflakeWarehouse(self.snowflake.get_connection)
        for stmt in tables:
            wh.execute(stmt)
        n = sync_chunks(wh, list(chunks))
        parts = [parse_search_service_ddl(s) for s in services]  # refuse a malformed DDL before sending any
        for stmt in services:
            wh.execute(stmt)
        return "; ".join(f"Cortex Search service {_qualified(self.snowflake, p['name'])} over {n} chunks in "
                         f"{_qualified(self.snowflake, CHUNKS_TABLE)} (warehouse {p['warehouse']}, target lag "
                         f"{p['target_lag']})" for p in parts)

    def manual_search(self) -> ConnectedManualSearch:
        """The ManualSearch behind `ask`: one connection per question (none is opened before one is asked)."""
        return ConnectedManualSearch(self.snowflake.get_connection, self.snowflake.database, self.snowflake.schema_,
                                     service=SERVICE_NAME, llm=self.llm, limit=self.limit,
                                     root_factory=self.root_factory())

    def ask(self, question: str, category: str | None = None) -> dict:
        from pcb_pipeline.knowledge.api import ask_manuals

        return ask_manuals(question, category, search=self.manual_search())  # checks the question first


def snowflake_connection(s: SnowflakeSettings, env=None) -> SnowflakeResource:
    """One SnowflakeResource whose credentials are EnvVars (validated beforehand by `from_env`)."""
    env = os.environ if env is None else env
    kwargs: dict[str, Any] = dict(
        account=dg.EnvVar("SNOWFLAKE_ACCOUNT"), user=dg.EnvVar("SNOWFLAKE_USER"), role=dg.EnvVar("SNOWFLAKE_ROLE"),
        warehouse=dg.EnvVar("SNOWFLAKE_WAREHOUSE"), database=dg.EnvVar("SNOWFLAKE_DATABASE"),
        schema=dg.EnvVar("SNOWFLAKE_SCHEMA"), additional_snowflake_connection_args={"application": "pcb_pipeline"})
    if s.auth == "password":
        kwargs["password"] = dg.EnvVar("SNOWFLAKE_PASSWORD")
    elif s.auth == "private_key":
        kwargs["private_key_path"] = dg.EnvVar("SNOWFLAKE_PRIVATE_KEY_FILE")
        if (env.get("SNOWFLAKE_PRIVATE_KEY_FILE_PWD") or "").strip():
            kwargs["private_key_password"] = dg.EnvVar("SNOWFLAKE_PRIVATE_KEY_FILE_PWD")
    if s.authenticator:
        kwargs["authenticator"] = dg.EnvVar("SNOWFLAKE_AUTHENTICATOR")
    return SnowflakeResource(**kwargs)


def snowflake_resources(env=None) -> dict:
    """The keys of local_resources(), on Snowflake; raises SnowflakeConfigError on bad settings.

    "search_index" (manual search) is Cortex Search: SOP_CHUNKS + PCB_SOP_SEARCH_SERVICE refreshed by the connection's
    warehouse, answers from AI_COMPLETE (SnowflakeSearchIndexResource).
    """
    s = from_env(env)
    sf = snowflake_connection(s, env)
    p = settings.configure()
    return {
        "search_index": SnowflakeSearchIndexResource(snowflake=sf),
        "stage": SnowflakeStageResource(snowflake=sf, stage_name=s.stage),
        "warehouse": SnowflakeWarehouseResource(snowflake=sf),
        "trainer": SnowflakeTrainingResource(snowflake=sf, compute_pool=s.compute_pool, job_stage=s.job_stage,
                                             external_access_integrations=list(s.external_access_integrations),
                                             target_instances=s.target_instances, timeout_s=s.job_timeout_s,
                                             work_dir=str(p.work)),
        "registry": SnowflakeRegistryResource(snowflake=sf, stage_name=s.stage, model_name=s.model_name,
                                              min_map50=s.min_map50, cuda_version=s.cuda_version,
                                              inference=s.inference, compute_pool=s.compute_pool,
                                              build_external_access_integrations=list(s.external_access_integrations)),
    }
