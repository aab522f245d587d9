"""Backend objects built from the environment outside Dagster (CLI, app, notebook): same classes the resources use.

The connection comes from `dagster_snowflake.SnowflakeResource` configured with the values of the SNOWFLAKE_* variables
(inside Dagster the resources read the same variables through `dg.EnvVar`, see pcb_pipeline.defs.snowflake_resources).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

from pcb_pipeline import settings

from .config import SnowflakeSettings, from_env


def snowflake_resource(s: SnowflakeSettings, env: Mapping[str, str] | None = None):
    """A SnowflakeResource holding literal values (for use outside a Dagster run)."""
    from dagster_snowflake import SnowflakeResource

    env = os.environ if env is None else env
    kwargs = dict(account=s.account, user=s.user, role=s.role, warehouse=s.warehouse, database=s.database,
                  schema=s.schema, additional_snowflake_connection_args={"application": "pcb_pipeline"})
    if s.auth == "password":
        kwargs["password"] = env["SNOWFLAKE_PASSWORD"]
    elif s.auth == "private_key":
        kwargs["private_key_path"] = str(Path(env["SNOWFLAKE_PRIVATE_KEY_FILE"]).expanduser())
        if env.get("SNOWFLAKE_PRIVATE_KEY_FILE_PWD"):
            kwargs["private_key_password"] = env["SNOWFLAKE_PRIVATE_KEY_FILE_PWD"]
    if s.authenticator:
        kwargs["authenticator"] = s.authenticator
    return SnowflakeResource(**kwargs)


def stage(s: SnowflakeSettings | None = None):
    from .stage import SnowflakeStage

    s = s or from_env()
    return SnowflakeStage(snowflake_resource(s).get_connection, s.stage, s.qualified(s.stage))


def warehouse(s: SnowflakeSettings | None = None, ensure_schema: bool = True):
    from .warehouse import SnowflakeWarehouse

    s = s or from_env()
    wh = SnowflakeWarehouse(snowflake_resource(s).get_connection)
    if ensure_schema:
        wh.ensure_schema()
    return wh


def registry(s: SnowflakeSettings | None = None):
    from .registry import SnowflakeModelRegistry

    s = s or from_env()
    res = snowflake_resource(s)
    return SnowflakeModelRegistry(stage(s), s.model_name, session_factory=res.create_snowpark_session,
                                  database=s.database, schema=s.schema, cuda_version=s.cuda_version,
                                  mlflow_uri=settings.configure().mlflow_uri)


def trainer(stage_, s: SnowflakeSettings | None = None):
    from .stage import SnowflakeStage
    from .training import MLJobConfig, SnowflakeMLJobDispatcher

    s = s or from_env()
    res = snowflake_resource(s)
    p = settings.configure()
    cfg = MLJobConfig(compute_pool=s.compute_pool, stage_name=s.job_stage,
                      external_access_integrations=list(s.external_access_integrations),
                      target_instances=s.target_instances, timeout_s=s.job_timeout_s)
    return SnowflakeMLJobDispatcher(stage_, SnowflakeStage(res.get_connection, s.job_stage), cfg, p.work,
                                    session_factory=res.create_snowpark_session, local_mlflow_uri=p.mlflow_uri)
