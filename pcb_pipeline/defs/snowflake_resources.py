"""Dagster resources for PCB_BACKEND=snowflake: the same keys and `.get()` interfaces as `local_resources()`.

Credentials reach Dagster only as `dg.EnvVar(...)` inside one `dagster_snowflake.SnowflakeResource` shared by the five
resources (Dagster resolves them when a run starts; they never appear in run config). `snowflake_resources()`
validates the environment first (PipelineSettings, pcb_pipeline.backends.snowflake.config) and raises
SnowflakeConfigError naming the variable, so a missing or wrong setting stops the code location from loading instead
of failing mid-run. Every backend object is built by pcb_pipeline.backends.snowflake.connect (SnowflakeAccess), the
same builder the CLI and the app use: these classes only carry configuration.
"""
from __future__ import annotations

import re
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Callable

import dagster as dg
from dagster_snowflake import SnowflakeResource

from pcb_pipeline.backends.base import ModelRegistry, Stage, TrainingDispatcher, Warehouse
from pcb_pipeline.backends.factory import PipelineSettings
from pcb_pipeline.backends.snowflake import connect
from pcb_pipeline.backends.snowflake.config import SnowflakeSettings
from pcb_pipeline.backends.snowflake.registry import DEFAULT_MODEL_PIP
from pcb_pipeline.backends.snowflake.training import DEFAULT_PIP_REQUIREMENTS
from pcb_pipeline.defs.resources import (BackendResource, RegistryProvider, SearchIndexProvider, StageProvider,
                                         TrainingProvider, WarehouseProvider)
from pcb_pipeline.knowledge.snowflake_search import (CHUNKS_TABLE, DEFAULT_LLM, DEFAULT_WAREHOUSE, SERVICE_NAME,
                                                     cortex_search_statements, parse_search_service_ddl, sync_chunks)
from pcb_pipeline.settings import configure, prepare

_CORTEX_SERVICE_DDL = re.compile(r"\bCORTEX\s+SEARCH\s+SERVICE\b", re.I)


class SnowflakeBackedResource(BackendResource):
    """Shared base of the Snowflake resources: the one place their SnowflakeResource becomes the SnowflakeAccess
    that builds the backend objects. `session_factory` is a seam for tests (the Snowpark sessions)."""

    snowflake: SnowflakeResource

    def session_factory(self) -> Callable[[], AbstractContextManager]:
        return self.snowflake.create_snowpark_session

    def access(self) -> connect.SnowflakeAccess:
        return connect.resource_access(self.snowflake, self.session_factory())


class SnowflakeStageResource(SnowflakeBackedResource, StageProvider):
    """The internal stage (PUT / GET / LIST / REMOVE)."""

    stage_name: str = "MODEL_STAGE"

    def get(self) -> Stage:
        return self.access().stage(self.stage_name)


class SnowflakeWarehouseResource(SnowflakeBackedResource, WarehouseProvider):
    """Tables and SQL on Snowflake; creates the tables of sql/tables.sql if missing (IF NOT EXISTS)."""

    ensure_schema: bool = True

    def get(self) -> Warehouse:
        return self.access().warehouse(self.ensure_schema)


class SnowflakeTrainingResource(SnowflakeBackedResource, TrainingProvider):
    """Runs the training entrypoint as a Snowflake ML Job on a GPU compute pool."""

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

    def jobs_api(self) -> Any:
        return None  # snowflake.ml.jobs

    def get(self, stage: Stage) -> TrainingDispatcher:
        p = configure()
        return self.access().trainer(
            stage, Path(self.work_dir or p.work), local_mlflow_uri=p.mlflow_uri, jobs_api=self.jobs_api(),
            compute_pool=self.compute_pool, stage_name=self.job_stage, pip_requirements=list(self.pip_requirements),
            external_access_integrations=list(self.external_access_integrations),
            target_instances=self.target_instances, env_vars=dict(self.env_vars), timeout_s=self.timeout_s,
            poll_interval_s=self.poll_interval_s, mlflow_tracking_uri=self.mlflow_tracking_uri)


class SnowflakeRegistryResource(SnowflakeBackedResource, RegistryProvider):
    """Snowflake Model Registry (custom model, CHAMPION alias + default version); `min_map50` is the gate."""

    stage_name: str = "MODEL_STAGE"
    model_name: str = "PCB_DEFECT_DETECTOR"
    cuda_version: str = "12.4"
    pip_requirements: list[str] = list(DEFAULT_MODEL_PIP)
    artifact_repository_map: dict[str, str] = {}
    inference: str = "local"  # local | batch | service
    compute_pool: str = "PCB_GPU_POOL"
    gpu_requests: str = "1"
    build_external_access_integrations: list[str] = ["PCB_TRAINING_EAI"]
    inference_timeout_s: float = 3600.0  # a batch job still running after this is cancelled (the asset fails)
    inference_poll_interval_s: float = 15.0  # how often a batch job's status and logs are read

    def registry_factory(self) -> Callable[[Any], Any] | None:
        return None  # snowflake.ml.registry.Registry

    def get(self) -> ModelRegistry:
        return self.access().registry(
            self.stage_name, self.model_name, mlflow_uri=configure().mlflow_uri, cuda_version=self.cuda_version,
            pip_requirements=list(self.pip_requirements),
            artifact_repository_map=dict(self.artifact_repository_map) or None,
            registry_factory=self.registry_factory())

    def batch_inference(self, log: Callable[[str], None] = print):
        """Registry-side inference (run_batch job or service) for the defect_logs asset, or None when inference runs
        in the asset ('local'). `log` receives the batch job's log lines (the asset passes context.log.info)."""
        if self.inference == "local":
            return None
        a = self.access()
        return a.batch_inference(
            self.get(), a.stage(self.stage_name), log, mode=self.inference, compute_pool=self.compute_pool,
            gpu_requests=self.gpu_requests,
            build_external_access_integrations=tuple(self.build_external_access_integrations),
            timeout_s=self.inference_timeout_s, poll_interval_s=self.inference_poll_interval_s)


class SnowflakeSearchIndexResource(SnowflakeBackedResource, SearchIndexProvider):
    """The manual search on Snowflake: SOP_CHUNKS + Cortex Search PCB_SOP_SEARCH_SERVICE, answers from AI_COMPLETE.

    Same methods as the local SearchIndexResource. `publish` runs sql/cortex_search.sql: CREATE TABLE IF NOT EXISTS
    SOP_CHUNKS, replaces its rows with the chunks (MERGE, then DELETE of chunks that are gone), then CREATE OR
    REPLACE CORTEX SEARCH SERVICE over it. `ask` queries the service through snowflake.core and answers with
    AI_COMPLETE (pcb_pipeline.knowledge.snowflake_search.SnowflakeManualSearch), in ask_manuals' dict shape.
    """

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
        if not chunks:
            raise ValueError("no chunks to publish: the Cortex Search service would be empty")
        stmts = self.statements()
        services = [s for s in stmts if _CORTEX_SERVICE_DDL.search(s)]
        tables = [s for s in stmts if not _CORTEX_SERVICE_DDL.search(s)]
        a = self.access()
        wh = a.warehouse(ensure_schema=False)
        for stmt in tables:
            wh.execute(stmt)
        n = sync_chunks(wh, list(chunks))
        parts = [parse_search_service_ddl(s) for s in services]  # refuse a malformed DDL before sending any
        for stmt in services:
            wh.execute(stmt)
        return "; ".join(f"Cortex Search service {a.qualified(p['name'])} over {n} chunks in "
                         f"{a.qualified(CHUNKS_TABLE)} (warehouse {p['warehouse']}, target lag "
                         f"{p['target_lag']})" for p in parts)

    def manual_search(self):
        """The ConnectedManualSearch behind `ask`: one connection per question (none is opened before one is asked)."""
        return self.access().manual_search(service=SERVICE_NAME, llm=self.llm, limit=self.limit,
                                           root_factory=self.root_factory())


def snowflake_connection(s: SnowflakeSettings, env=None) -> SnowflakeResource:
    """One SnowflakeResource whose credentials are EnvVars (validated beforehand by `from_env`)."""
    return connect.snowflake_resource(s, env, value=dg.EnvVar)


def snowflake_resources(env=None, settings: PipelineSettings | None = None) -> dict:
    """The keys of local_resources(), on Snowflake; raises SnowflakeConfigError on bad settings.

    `settings` default: read from `env` (default os.environ) now, as for PCB_BACKEND=snowflake. "search_index"
    (manual search) is Cortex Search: SOP_CHUNKS + PCB_SOP_SEARCH_SERVICE refreshed by the connection's warehouse,
    answers from AI_COMPLETE (SnowflakeSearchIndexResource).
    """
    ps = settings or PipelineSettings.from_env(env, backend="snowflake")
    s = ps.require_snowflake()
    sf = snowflake_connection(s, env)
    return {
        "search_index": SnowflakeSearchIndexResource(snowflake=sf),
        "stage": SnowflakeStageResource(snowflake=sf, stage_name=s.stage),
        "warehouse": SnowflakeWarehouseResource(snowflake=sf),
        "trainer": SnowflakeTrainingResource(snowflake=sf, compute_pool=s.compute_pool, job_stage=s.job_stage,
                                             external_access_integrations=list(s.external_access_integrations),
                                             target_instances=s.target_instances, timeout_s=s.job_timeout_s,
                                             work_dir=str(prepare(ps.paths).work)),
        "registry": SnowflakeRegistryResource(snowflake=sf, stage_name=s.stage, model_name=s.model_name,
                                              min_map50=ps.quality.min_map50, cuda_version=s.cuda_version,
                                              inference=s.inference, compute_pool=s.compute_pool,
                                              build_external_access_integrations=list(s.external_access_integrations)),
    }
