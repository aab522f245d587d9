"""Stand-ins for snowflake.ml and snowflake.core's Cortex Search (no account here). Every snowflake.ml call is checked
against the installed library's real signature with inspect.signature(...).bind, so a keyword the library does not take
fails the test; Cortex Search goes through snowflake.core's real resource class and request/response models."""
from __future__ import annotations

import inspect
import shutil
from pathlib import Path

import pandas as pd


def bind(real, *args, **kwargs) -> dict:
    """The arguments as the real function would receive them (raises TypeError on a wrong keyword)."""
    bound = inspect.signature(real).bind(*args, **kwargs)
    return dict(bound.arguments)


# ------------------------------------------------------------------------------------------------ ML Jobs
class FakeJob:
    def __init__(self, job_id: str, statuses: list[str], logs: list[list[str]]):
        self.id = job_id
        self._statuses, self._logs = list(statuses), list(logs)
        self.cancelled = False
        self.log_calls = 0

    @property
    def status(self) -> str:
        return self._statuses.pop(0) if len(self._statuses) > 1 else self._statuses[0]

    def get_logs(self, limit: int = -1, instance_id=None, *, as_list: bool = False, verbose: bool = False):
        from snowflake.ml.jobs import MLJob

        bind(MLJob.get_logs, self, limit, instance_id, as_list=as_list, verbose=verbose)
        self.log_calls += 1
        lines = self._logs.pop(0) if len(self._logs) > 1 else self._logs[0]
        lines = lines[-limit:] if limit and limit > 0 else lines
        return lines if as_list else "\n".join(lines)

    def cancel(self):
        self.cancelled = True


class FakeJobs:
    """snowflake.ml.jobs with submit_directory; `on_submit(payload_dir, kwargs, name)` plays the job."""

    def __init__(self, job: FakeJob, on_submit=None):
        self.job, self.on_submit = job, on_submit
        self.calls: list[dict] = []
        self.payload_files: list[str] = []

    def submit_directory(self, dir_path, compute_pool, **kwargs):
        from snowflake.ml.jobs import submit_directory

        args = bind(submit_directory, dir_path, compute_pool, **kwargs)
        self.calls.append(args)
        root = Path(dir_path)
        self.payload_files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
        if self.on_submit:
            self.on_submit(root, args)
        return self.job


# ------------------------------------------------------------------------------------------------ registry
class FakeModelVersion:
    def __init__(self, model: "FakeModel", version_name: str, metrics: dict, custom_model):
        self.model, self.version_name, self._metrics, self.custom_model = model, version_name, dict(metrics), custom_model
        self.calls: list[tuple] = []

    def show_metrics(self):
        return dict(self._metrics)

    def set_metric(self, metric_name, value):
        from snowflake.ml.model import ModelVersion

        bind(ModelVersion.set_metric, self, metric_name, value)
        self._metrics[metric_name] = value

    def set_alias(self, alias_name):
        from snowflake.ml.model import ModelVersion

        bind(ModelVersion.set_alias, self, alias_name)
        if alias_name.upper() in self.model.aliases:
            raise RuntimeError(f"alias {alias_name} already on version {self.model.aliases[alias_name.upper()]}")
        self.model.aliases[alias_name.upper()] = self.version_name

    def unset_alias(self, version_or_alias):
        from snowflake.ml.model import ModelVersion

        bind(ModelVersion.unset_alias, self, version_or_alias)
        self.model.aliases.pop(version_or_alias.upper(), None)

    def run_batch(self, X=None, **kwargs):
        from snowflake.ml.model import ModelVersion

        self.calls.append(("run_batch", bind(ModelVersion.run_batch, self, X, **kwargs)))
        return self.model.registry.on_run_batch(self, X, kwargs)

    def list_services(self):
        return pd.DataFrame({"name": list(self.model.registry.services)})

    def create_service(self, **kwargs):
        from snowflake.ml.model import ModelVersion

        self.calls.append(("create_service", bind(ModelVersion.create_service, self, **kwargs)))
        self.model.registry.services.append(kwargs["service_name"])
        return kwargs["service_name"]

    def run(self, X, **kwargs):
        from snowflake.ml.model import ModelVersion

        self.calls.append(("run", bind(ModelVersion.run, self, X, **kwargs)))
        return self.custom_model.predict(X, **(kwargs.get("params") or {}))


class FakeModel:
    def __init__(self, registry: "FakeRegistry", name: str):
        self.registry, self.name = registry, name
        self.versions_: dict[str, FakeModelVersion] = {}
        self.aliases: dict[str, str] = {}
        self.default_version: str | None = None

    def version(self, version_or_alias: str) -> FakeModelVersion:
        key = version_or_alias.upper()
        name = self.aliases.get(key, key)
        if name not in self.versions_:
            raise ValueError(f"Unable to find version or alias with name {key} in model {self.name}")
        return self.versions_[name]

    @property
    def default(self):
        return self.version(self.default_version)

    @default.setter
    def default(self, version):
        self.default_version = version if isinstance(version, str) else version.version_name


class FakeRegistry:
    def __init__(self):
        self.models: dict[str, FakeModel] = {}
        self.log_model_calls: list[dict] = []
        self.services: list[str] = []
        self.on_run_batch = lambda mv, X, kwargs: None

    def get_model(self, model_name):
        if model_name.upper() not in self.models:
            raise ValueError(f"Unable to find model {model_name}")
        return self.models[model_name.upper()]

    def log_model(self, model, **kwargs):
        from snowflake.ml.registry import Registry

        args = bind(Registry.log_model, self, model, **kwargs)
        self.log_model_calls.append(args)
        name = kwargs["model_name"].upper()
        m = self.models.setdefault(name, FakeModel(self, name))
        version = kwargs["version_name"].upper()
        if version in m.versions_:
            raise RuntimeError(f"version {version} already exists")
        m.versions_[version] = FakeModelVersion(m, version, kwargs.get("metrics") or {}, model)
        return m.versions_[version]


class FakeSession:
    """Just enough Snowpark Session for run_batch inputs."""

    def __init__(self):
        self.frames: list[tuple] = []

    def create_dataframe(self, data, schema=None):
        from snowflake.snowpark import Session

        bind(Session.create_dataframe, self, data, schema=schema)
        self.frames.append((data, schema))
        return pd.DataFrame(data, columns=schema)


# ------------------------------------------------------------------------------------------------ Cortex Search
def cortex_search_root(api):
    """A Root stand-in: `root.databases[db].schemas[schema].cortex_search_services[name]` is snowflake.core's real
    CortexSearchServiceResource, whose `.search(...)` builds the real QueryRequest and hands it to `api` (in place of
    the generated CortexSearchServiceApi, i.e. the REST transport)."""
    import types

    from snowflake.core.cortex.search_service import CortexSearchServiceResource

    class Services:
        def __init__(self, db, schema):
            self.schema = types.SimpleNamespace(name=schema, database=types.SimpleNamespace(name=db))
            self._api = api
            # telemetry is sent through the Root; a no-op client keeps it local
            self.root = types.SimpleNamespace(_telemetry_client=types.SimpleNamespace(safe_send=lambda *a, **k: None))

        def __getitem__(self, name):
            return CortexSearchServiceResource(name, self)

    class Keyed:
        def __init__(self, make):
            self._make = make

        def __getitem__(self, key):
            return self._make(key)

    return types.SimpleNamespace(databases=Keyed(lambda db: types.SimpleNamespace(schemas=Keyed(
        lambda schema: types.SimpleNamespace(cortex_search_services=Services(db, schema))))))


class FakeCortexSearchApi:
    """snowflake.core's CortexSearchServiceApi, answering for the services that fakesnow_shim saw created.

    A query runs the service's own source query (from its CREATE statement) on fakesnow, applies the request's
    `{"@eq": {attribute: value}}` filter (attributes only, as Cortex Search allows) and ranks rows by the number of
    query words found in the search column: a keyword stand-in for Cortex's hybrid ranking, not a model of it.
    """

    api_client = None  # snowflake.core's telemetry wrapper touches it

    def __init__(self, recorder, connect):
        self.recorder, self.connect = recorder, connect
        self.calls: list[tuple] = []

    def query_cortex_search_service(self, database, var_schema, service_name, query_request, async_req=False):
        import re

        from snowflake.core.cortex.search_service._generated.models import QueryRequest, QueryResponse

        assert isinstance(query_request, QueryRequest)
        self.calls.append((database, var_schema, service_name, query_request))
        key = (database.upper(), var_schema.upper(), service_name.upper())
        parts = self.recorder.cortex_services.get(key)
        if parts is None:
            raise LookupError(f"Cortex Search Service {'.'.join(key)} does not exist or not authorized.")
        unknown = [c for c in query_request.columns if c.lower() not in parts["selected"]]
        assert not unknown, f"columns not in the service: {unknown}"
        where, params = "", []
        for op, cond in (query_request.filter or {}).items():
            assert op == "@eq" and len(cond) == 1, f"filter not emulated: {query_request.filter}"
            (attr, value), = cond.items()
            assert attr.lower() in {a.lower() for a in parts["attributes"]}, f"{attr} is not an ATTRIBUTE"
            where, params = f" WHERE {attr} = %s", [value]
        with self.connect() as conn:
            cur = getattr(conn, "_conn", conn).cursor()  # past the recording shim: the service's reads are not ours
            cur.execute(f"SELECT * FROM ({parts['query']}){where}", params or None)
            names = [d[0].lower() for d in cur.description]
            rows = [dict(zip(names, r)) for r in cur.fetchall()]
        words = set(re.findall(r"[a-z0-9-]{3,}", query_request.query.lower()))
        on = parts["on"].lower()
        rows.sort(key=lambda r: (-len(words & set(re.findall(r"[a-z0-9-]{3,}", str(r[on]).lower()))), str(r[on])))
        results = [{c: r[c.lower()] for c in query_request.columns} for r in rows[:query_request.limit]]
        return QueryResponse.from_dict({"results": results, "request_id": f"fake-{len(self.calls)}"})


def play_cortex_search(monkeypatch, recorder, connect) -> FakeCortexSearchApi:
    """Make every `snowflake.core.Root(conn)` the production code builds a `cortex_search_root` over one
    FakeCortexSearchApi (answering for the services `recorder` saw created); returns that api, whose `calls` hold
    each search request. For code paths that build their own Root (the backend factory, the CLI, the app)."""
    import snowflake.core

    api = FakeCortexSearchApi(recorder, connect)
    monkeypatch.setattr(snowflake.core, "Root", lambda session: cortex_search_root(api))
    return api


def load_sample_frames(warehouse, frames) -> None:
    """Sample rows through the Warehouse interface the way defect_logs writes them: replace_rows per batch.
    (The Snowflake adapter's MERGE into DEFECT_LOGS' VARIANT column does not run on fakesnow 0.12.)"""
    warehouse.upsert("PCB_METADATA", ["board_id"], frames["PCB_METADATA"])
    for table in ("BOARD_INSPECTIONS", "DEFECT_LOGS"):
        for batch, rows in frames[table].groupby("batch_id"):
            warehouse.replace_rows(table, "batch_id", batch, rows)


def copy_tree(src: Path, dst: Path) -> None:
    shutil.copytree(src, dst, dirs_exist_ok=True)
