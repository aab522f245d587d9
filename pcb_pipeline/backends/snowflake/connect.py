"""Backend objects built from the environment outside Dagster (CLI, app, notebook): same classes the resources use.

The connection comes from `dagster_snowflake.SnowflakeResource` configured with the values of the SNOWFLAKE_* variables
(inside Dagster the resources read the same variables through `dg.EnvVar`, see pcb_pipeline.defs.snowflake_resources).
"""
from __future__ import annotations

import os
from pathlib import Path
from contextlib import contextmanager
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


def connection_factory(s: SnowflakeSettings):
    """() -> a context manager yielding a snowflake.connector connection, for every backend object built here.
    Inside a Snowflake container the container's OAuth token is read afresh at each connection (Snowflake rotates
    it); elsewhere the SNOWFLAKE_* credentials through dagster_snowflake's SnowflakeResource."""
    if s.auth != "container_token":
        return snowflake_resource(s).get_connection

    @contextmanager
    def connect():
        import snowflake.connector

        kwargs = dict(host=s.host, account=s.account, authenticator="oauth",
                      token=Path(s.token_file).read_text().strip(), database=s.database, schema=s.schema,
                      application="pcb_pipeline")
        kwargs.update({k: v for k, v in (("warehouse", s.warehouse), ("role", s.role)) if v})
        conn = snowflake.connector.connect(**kwargs)
        try:
            yield conn
        finally:
            conn.close()

    return connect


def session_factory(s: SnowflakeSettings):
    """() -> a context manager yielding a Snowpark Session (the Model Registry, ML Jobs) on the same credentials."""
    if s.auth != "container_token":
        return snowflake_resource(s).create_snowpark_session
    connect = connection_factory(s)

    @contextmanager
    def session():
        from snowflake.snowpark import Session

        with connect() as conn:
            sess = Session.builder.configs({"connection": conn}).create()
            try:
                yield sess
            finally:
                sess.close()

    return session


def stage(s: SnowflakeSettings | None = None):
    from .stage import SnowflakeStage

    s = s or from_env()
    return SnowflakeStage(connection_factory(s), s.stage, s.qualified(s.stage))


def warehouse(s: SnowflakeSettings | None = None, ensure_schema: bool = True):
    from .warehouse import SnowflakeWarehouse

    s = s or from_env()
    wh = SnowflakeWarehouse(connection_factory(s))
    if ensure_schema:
        wh.ensure_schema()
    return wh


def manual_search(s: SnowflakeSettings | None = None):
    """Cortex Search PCB_SOP_SEARCH_SERVICE in SNOWFLAKE_DATABASE.SNOWFLAKE_SCHEMA, answers from AI_COMPLETE; a
    connection is opened per question (pcb_pipeline.knowledge.snowflake_search.ConnectedManualSearch)."""
    from pcb_pipeline.knowledge.snowflake_search import ConnectedManualSearch

    s = s or from_env()
    return ConnectedManualSearch(connection_factory(s), s.database, s.schema)


def data_analyst(s: SnowflakeSettings | None = None, fallback=None):
    """Cortex Analyst over @DB.SCHEMA.MODEL_STAGE/semantic_model/semantic_model.yaml. Inside Streamlit in Snowflake
    it goes through ``_snowflake.send_snow_api_request`` (the app's own session); elsewhere a connection is opened
    per question and its session token authorises the REST call (``ConnectedCortexAnalyst``)."""
    from pcb_pipeline.knowledge.analyst import CortexAnalystClient, ConnectedCortexAnalyst, SnowApiTransport
    from pcb_pipeline.knowledge.semantic_model import SEMANTIC_MODEL_STAGE_PATH

    s = s or from_env()
    model_file = f"@{s.qualified(s.stage)}/{SEMANTIC_MODEL_STAGE_PATH}"
    try:
        transport = SnowApiTransport()
    except ImportError:  # not inside Snowflake
        return ConnectedCortexAnalyst(connection_factory(s), model_file, fallback=fallback)
    return CortexAnalystClient("", "", token_type=None, semantic_model_file=model_file, http=transport,
                               fallback=fallback)


def registry(s: SnowflakeSettings | None = None):
    from .registry import SnowflakeModelRegistry

    s = s or from_env()
    return SnowflakeModelRegistry(stage(s), s.model_name, session_factory=session_factory(s),
                                  database=s.database, schema=s.schema, cuda_version=s.cuda_version,
                                  mlflow_uri=settings.configure().mlflow_uri)


def trainer(stage_, s: SnowflakeSettings | None = None):
    from .stage import SnowflakeStage
    from .training import MLJobConfig, SnowflakeMLJobDispatcher

    s = s or from_env()
    p = settings.configure()
    cfg = MLJobConfig(compute_pool=s.compute_pool, stage_name=s.job_stage,
                      external_access_integrations=list(s.external_access_integrations),
                      target_instances=s.target_instances, timeout_s=s.job_timeout_s)
    return SnowflakeMLJobDispatcher(stage_, SnowflakeStage(connection_factory(s), s.job_stage), cfg, p.work,
                                    session_factory=session_factory(s), local_mlflow_uri=p.mlflow_uri)


# ------------------------------------------------------------------------------------ inside Snowflake (notebook)
def _unquote(name: str | None) -> str | None:
    return name.strip('"') if name else name


def notebook_backends(session, stage_name: str = "MODEL_STAGE", model_name: str = "PCB_DEFECT_DETECTOR") -> dict:
    """Stage, warehouse and registry on a Snowpark session's own connection (a Snowflake Notebook has one already:
    no credentials involved). Database and schema are the session's current ones."""
    from contextlib import nullcontext

    from .registry import SnowflakeModelRegistry
    from .stage import SnowflakeStage
    from .warehouse import SnowflakeWarehouse

    database, schema = _unquote(session.get_current_database()), _unquote(session.get_current_schema())
    connect = lambda: nullcontext(session.connection)  # noqa: E731  (the session owns and closes it)
    st = SnowflakeStage(connect, stage_name, f"{database}.{schema}.{stage_name}")
    return {"stage": st, "warehouse": SnowflakeWarehouse(connect),
            "registry": SnowflakeModelRegistry(st, model_name, session_factory=lambda: nullcontext(session),
                                               database=database, schema=schema)}


PACKAGE_ZIP = "code/pcb_pipeline.zip"


def publish_package(stage_=None, stage_path: str = PACKAGE_ZIP) -> str:
    """Zip the pcb_pipeline package (caches left out) onto the stage, for notebooks that are not Git-backed."""
    import tempfile
    import zipfile

    package = Path(__file__).resolve().parents[2]
    stage_ = stage_ or stage()
    with tempfile.TemporaryDirectory(prefix="pcb-zip-") as tmp:
        target = Path(tmp) / Path(stage_path).name
        with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as zf:
            for f in sorted(package.rglob("*")):
                if f.is_file() and "__pycache__" not in f.parts and f.suffix != ".pyc":
                    zf.write(f, f.relative_to(package.parent).as_posix())
        return stage_.put_file(target, stage_path)
