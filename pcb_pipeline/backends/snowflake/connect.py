"""The one place Snowflake backend objects are built, for every caller: the backend factory (CLI, app), the Dagster
resources (pcb_pipeline.defs.snowflake_resources) and notebooks.

Every object is built by a `SnowflakeAccess`: how to open a connection and a Snowpark session, and the database,
schema and warehouse they run in. `access(settings)` makes one from validated settings (the SNOWFLAKE_* values, or a
Snowflake container's own OAuth session); `resource_access(resource)` from a `dagster_snowflake.SnowflakeResource`,
which the Dagster resources hold with `dg.EnvVar` credentials (Dagster resolves them when a run starts).
"""
from __future__ import annotations

import os
from contextlib import AbstractContextManager, closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from pcb_pipeline import settings

from .config import SnowflakeSettings, from_env

Opener = Callable[[], AbstractContextManager]
# SnowflakeResource field -> the variable it comes from (credentials are added by auth in `snowflake_resource`)
RESOURCE_FIELDS = {"account": "SNOWFLAKE_ACCOUNT", "user": "SNOWFLAKE_USER", "role": "SNOWFLAKE_ROLE",
                   "warehouse": "SNOWFLAKE_WAREHOUSE", "database": "SNOWFLAKE_DATABASE", "schema": "SNOWFLAKE_SCHEMA"}
SECRETS = ("SNOWFLAKE_PASSWORD", "SNOWFLAKE_PRIVATE_KEY_FILE_PWD")


def resource_fields(s: SnowflakeSettings, env: Mapping[str, str] | None = None) -> dict[str, str]:
    """SnowflakeResource field -> environment variable, for the settings' kind of credentials."""
    env = os.environ if env is None else env
    fields = dict(RESOURCE_FIELDS)
    if s.auth == "password":
        fields["password"] = "SNOWFLAKE_PASSWORD"
    elif s.auth == "private_key":
        fields["private_key_path"] = "SNOWFLAKE_PRIVATE_KEY_FILE"
        if (env.get("SNOWFLAKE_PRIVATE_KEY_FILE_PWD") or "").strip():
            fields["private_key_password"] = "SNOWFLAKE_PRIVATE_KEY_FILE_PWD"
    if s.authenticator:
        fields["authenticator"] = "SNOWFLAKE_AUTHENTICATOR"
    return fields


def snowflake_resource(s: SnowflakeSettings, env: Mapping[str, str] | None = None,
                       value: Callable[[str], Any] | None = None):
    """A dagster_snowflake SnowflakeResource on the settings' credentials. `value(variable)` is what each field holds:
    by default the variable's value (for use outside a Dagster run); the Dagster resources pass `dg.EnvVar`."""
    from dagster_snowflake import SnowflakeResource

    env = os.environ if env is None else env
    value = value or (lambda name: _env_value(env, name))
    return SnowflakeResource(**{field: value(name) for field, name in resource_fields(s, env).items()},
                             additional_snowflake_connection_args={"application": "pcb_pipeline"})


def _env_value(env: Mapping[str, str], name: str) -> str:
    if name in SECRETS:
        return env[name]
    value = env[name].strip()
    return str(Path(value).expanduser()) if name == "SNOWFLAKE_PRIVATE_KEY_FILE" else value


@dataclass(frozen=True)
class SnowflakeAccess:
    """Connections and sessions in one database and schema; builds every Snowflake backend object."""

    connect: Opener  # () -> a context manager yielding a snowflake.connector connection
    session: Opener  # () -> a context manager yielding a Snowpark Session (Model Registry, ML Jobs)
    database: str
    schema: str
    query_warehouse: str | None = None

    def qualified(self, name: str) -> str:
        """DB.SCHEMA.NAME for an unqualified object name."""
        return name if "." in name else f"{self.database}.{self.schema}.{name}"

    def stage(self, name: str):
        from .stage import SnowflakeStage

        return SnowflakeStage(self.connect, name, self.qualified(name))

    def warehouse(self, ensure_schema: bool = True):
        """Tables and SQL; `ensure_schema` creates the tables of sql/tables.sql if missing (IF NOT EXISTS)."""
        from .warehouse import SnowflakeWarehouse

        wh = SnowflakeWarehouse(self.connect)
        if ensure_schema:
            wh.ensure_schema()
        return wh

    def manual_search(self, **options):
        """Cortex Search in this database and schema, answers from AI_COMPLETE, a connection per question;
        `options`: root_factory, service, llm, limit (pcb_pipeline.knowledge.snowflake_search.ConnectedManualSearch)."""
        from pcb_pipeline.knowledge.snowflake_search import ConnectedManualSearch

        return ConnectedManualSearch(self.connect, self.database, self.schema, **options)

    def data_analyst(self, stage_name: str, fallback=None):
        """Cortex Analyst over @DB.SCHEMA.<stage>/semantic_model/semantic_model.yaml. Inside Streamlit in Snowflake
        through ``_snowflake.send_snow_api_request`` (the app's own session); elsewhere a connection is opened per
        question and its session token authorises the REST call (``ConnectedCortexAnalyst``)."""
        from pcb_pipeline.knowledge.analyst import ConnectedCortexAnalyst, CortexAnalystClient, SnowApiTransport
        from pcb_pipeline.knowledge.semantic_model import SEMANTIC_MODEL_STAGE_PATH

        model_file = f"@{self.qualified(stage_name)}/{SEMANTIC_MODEL_STAGE_PATH}"
        try:
            transport = SnowApiTransport()
        except ImportError:  # not inside Snowflake
            return ConnectedCortexAnalyst(self.connect, model_file, fallback=fallback)
        return CortexAnalystClient("", "", token_type=None, semantic_model_file=model_file, http=transport,
                                   fallback=fallback)

    def registry(self, stage_name: str, model_name: str, *, mlflow_uri: str | None = None, **options):
        """The Snowflake Model Registry; `options` (cuda_version, pip_requirements, artifact_repository_map,
        registry_factory) go to SnowflakeModelRegistry as they are; `mlflow_uri`: where runs are mirrored."""
        from .registry import SnowflakeModelRegistry

        return SnowflakeModelRegistry(self.stage(stage_name), model_name, session_factory=self.session,
                                      database=self.database, schema=self.schema, mlflow_uri=mlflow_uri, **options)

    def trainer(self, stage_, work_dir: Path, *, local_mlflow_uri: str, jobs_api: Any = None, **job):
        """The ML Job dispatcher; `job` (compute_pool, stage_name, ...) is its MLJobConfig, in this warehouse."""
        from .stage import SnowflakeStage
        from .training import MLJobConfig, SnowflakeMLJobDispatcher

        cfg = MLJobConfig(query_warehouse=self.query_warehouse, **job)
        return SnowflakeMLJobDispatcher(stage_, SnowflakeStage(self.connect, cfg.stage_name), cfg, Path(work_dir),
                                        session_factory=self.session, jobs_api=jobs_api,
                                        local_mlflow_uri=local_mlflow_uri)

    def batch_inference(self, registry, stage_, log: Callable[[str], None] = print, **config):
        """Registry-side inference (mv.run_batch job or a service); `config` is its InferenceConfig."""
        from .inference import InferenceConfig, RegistryInference

        cfg = InferenceConfig(database=self.database, schema=self.schema, **config)
        return RegistryInference(registry, stage_, cfg, session_factory=self.session, log=log)


def resource_access(resource, session: Opener | None = None) -> SnowflakeAccess:
    """The access of a (resolved) dagster_snowflake SnowflakeResource; `session` replaces its Snowpark sessions."""
    return SnowflakeAccess(resource.get_connection, session or resource.create_snowpark_session,
                           resource.database, resource.schema_, resource.warehouse or None)


def access(s: SnowflakeSettings, env: Mapping[str, str] | None = None) -> SnowflakeAccess:
    """The access the settings describe. Inside a Snowflake container the container's OAuth token is read afresh at
    each connection (Snowflake rotates it); elsewhere the SNOWFLAKE_* credentials through a SnowflakeResource."""
    if s.auth != "container_token":
        return resource_access(snowflake_resource(s, env))
    connect = _container_connection(s)
    return SnowflakeAccess(connect, _session_on(connect), s.database, s.schema, s.warehouse or None)


def _container_connection(s: SnowflakeSettings) -> Opener:
    @contextmanager
    def connect():
        import snowflake.connector

        kwargs = dict(host=s.host, account=s.account, authenticator="oauth",
                      token=Path(s.token_file).read_text().strip(), database=s.database, schema=s.schema,
                      application="pcb_pipeline")
        kwargs.update({k: v for k, v in (("warehouse", s.warehouse), ("role", s.role)) if v})
        with closing(snowflake.connector.connect(**kwargs)) as conn:
            yield conn

    return connect


def _session_on(connect: Opener) -> Opener:
    @contextmanager
    def session():
        from snowflake.snowpark import Session

        with connect() as conn, closing(Session.builder.configs({"connection": conn}).create()) as sess:
            yield sess

    return session


def connection_factory(s: SnowflakeSettings) -> Opener:
    """() -> a context manager yielding a snowflake.connector connection on the settings' credentials."""
    return access(s).connect


def session_factory(s: SnowflakeSettings) -> Opener:
    """() -> a context manager yielding a Snowpark Session on the same credentials."""
    return access(s).session


# ------------------------------------------------------------------------ from settings (the backend factory)
def stage(s: SnowflakeSettings | None = None):
    s = s or from_env()
    return access(s).stage(s.stage)


def warehouse(s: SnowflakeSettings | None = None, ensure_schema: bool = True):
    return access(s or from_env()).warehouse(ensure_schema)


def manual_search(s: SnowflakeSettings | None = None):
    """Cortex Search PCB_SOP_SEARCH_SERVICE in SNOWFLAKE_DATABASE.SNOWFLAKE_SCHEMA, answers from AI_COMPLETE; a
    connection is opened per question (pcb_pipeline.knowledge.snowflake_search.ConnectedManualSearch)."""
    return access(s or from_env()).manual_search()


def data_analyst(s: SnowflakeSettings | None = None, fallback=None):
    s = s or from_env()
    return access(s).data_analyst(s.stage, fallback=fallback)


def registry(s: SnowflakeSettings | None = None, paths: settings.Paths | None = None):
    s = s or from_env()
    return access(s).registry(s.stage, s.model_name, cuda_version=s.cuda_version,
                              mlflow_uri=(paths or settings.configure()).mlflow_uri)


def job_settings(s: SnowflakeSettings) -> dict:
    """The MLJobConfig fields the settings fix (the rest keep their defaults)."""
    return dict(compute_pool=s.compute_pool, stage_name=s.job_stage, target_instances=s.target_instances,
                external_access_integrations=list(s.external_access_integrations), timeout_s=s.job_timeout_s)


def trainer(stage_, s: SnowflakeSettings | None = None, paths: settings.Paths | None = None):
    s = s or from_env()
    p = paths or settings.configure()
    return access(s).trainer(stage_, p.work, local_mlflow_uri=p.mlflow_uri, **job_settings(s))


# ------------------------------------------------------------------------------------ inside Snowflake (notebook)
def _unquote(name: str | None) -> str | None:
    return name.strip('"') if name else name


def notebook_backends(session, stage_name: str = "MODEL_STAGE", model_name: str = "PCB_DEFECT_DETECTOR") -> dict:
    """Stage, warehouse and registry on a Snowpark session's own connection (a Snowflake Notebook has one already:
    no credentials involved). Database and schema are the session's current ones."""
    from contextlib import nullcontext

    a = SnowflakeAccess(lambda: nullcontext(session.connection), lambda: nullcontext(session),  # the session owns it
                        _unquote(session.get_current_database()), _unquote(session.get_current_schema()))
    return {"stage": a.stage(stage_name), "warehouse": a.warehouse(ensure_schema=False),
            "registry": a.registry(stage_name, model_name)}


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
