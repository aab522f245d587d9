"""Stand-ins for snowflake.ml (no account here). Every call is checked against the installed library's real
signature with inspect.signature(...).bind, so a keyword the library does not take fails the test."""
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


def copy_tree(src: Path, dst: Path) -> None:
    shutil.copytree(src, dst, dirs_exist_ok=True)
