"""One builder for Snowflake objects: from the same environment, the backend factory (CLI, app) and the Dagster
resources (EnvVar credentials, resolved by Dagster) produce identically configured objects. Nothing connects."""
from __future__ import annotations

import dagster as dg
import pytest

from pcb_pipeline.backends import factory
from pcb_pipeline.backends.factory import PipelineSettings
from pcb_pipeline.backends.snowflake import connect
from pcb_pipeline.backends.snowflake.config import SnowflakeConfigError
from pcb_pipeline.defs import resources as r
from pcb_pipeline.defs.snowflake_resources import snowflake_resources



def _config(obj) -> dict:
    """An object's configuration: its attributes, less the connection openers (bound to different resources) and
    the backend objects it holds (compared on their own)."""
    return {k: v for k, v in vars(obj).items() if not callable(v) and not hasattr(v, "connect")}


@pytest.fixture
def resolved(sf_env):
    """snowflake_resources() as a Dagster run sees them: EnvVars resolved."""
    with dg.build_resources(snowflake_resources()) as res:
        yield res


def test_factory_and_resources_build_the_same_objects(resolved):
    s = PipelineSettings.from_env()
    st, res_st = factory.stage(s), resolved.stage.get()
    assert type(st) is type(res_st) and _config(st) == _config(res_st)
    assert _config(st) == {"stage": "MODEL_STAGE", "qualified_stage": "PCB.PIPELINE.MODEL_STAGE"}

    reg, res_reg = factory.registry(s), resolved.registry.get()
    assert type(reg) is type(res_reg) and _config(reg) == _config(res_reg)
    assert _config(reg.stage) == _config(st) and reg.mlflow_uri == s.paths.mlflow_uri
    assert {"model_name", "database", "schema", "cuda_version", "pip_requirements"} <= _config(reg).keys()

    tr, res_tr = factory.trainer(st, s), resolved.trainer.get(res_st)
    assert type(tr) is type(res_tr) and _config(tr) == _config(res_tr) and tr.config.query_warehouse == "PCB_WH"
    assert _config(tr.job_stage) == _config(res_tr.job_stage) == {"stage": "ML_JOB_STAGE",
                                                                   "qualified_stage": "ML_JOB_STAGE"}

    search, res_search = factory.manual_search(s), resolved.search_index.manual_search()
    assert (search.database, search.schema) == (res_search.database, res_search.schema) == ("PCB", "PIPELINE")
    assert resolved.registry.min_map50 == s.quality.min_map50 == s.snowflake.min_map50


def test_the_connection_resource_is_the_same_but_for_envvars(sf_env):
    s = PipelineSettings.from_env().snowflake
    literal = connect.snowflake_resource(s)
    stage = snowflake_resources()["stage"]
    with_env_vars = stage.snowflake
    env_vars = {v.env_var_name for v in with_env_vars.__dict__.values() if isinstance(v, dg.EnvVar)}
    assert env_vars == set(connect.resource_fields(s).values()) >= {"SNOWFLAKE_ACCOUNT", "SNOWFLAKE_PASSWORD"}
    fields = type(literal).model_fields
    with dg.build_resources({"stage": stage}) as res:  # Dagster reads the same values when a run starts
        assert {f: getattr(res.stage.snowflake, f) for f in fields} == {f: getattr(literal, f) for f in fields}


def test_resources_are_the_interfaces_the_assets_annotate(sf_env):
    res = snowflake_resources()
    for key, cls in {"stage": r.StageProvider, "warehouse": r.WarehouseProvider, "trainer": r.TrainingProvider,
                     "registry": r.RegistryProvider, "search_index": r.SearchIndexProvider}.items():
        assert isinstance(res[key], cls), key
    assert set(res) == set(r.resources_for(PipelineSettings.from_env()))


def test_settings_are_read_once_and_passed_to_the_resources(sf_env, monkeypatch):
    s = PipelineSettings.from_env()
    monkeypatch.setenv("PCB_SNOWFLAKE_STAGE", "bad stage")  # read again, this would be refused
    res = snowflake_resources(settings=s)
    assert res["stage"].stage_name == "MODEL_STAGE" and res["registry"].model_name == "PCB_DEFECT_DETECTOR"
    with pytest.raises(SnowflakeConfigError, match="PCB_SNOWFLAKE_STAGE"):
        snowflake_resources()


@pytest.mark.parametrize("variable, raw, message", [
    ("PCB_SNOWFLAKE_TARGET_INSTANCES", "2.5", r"PCB_SNOWFLAKE_TARGET_INSTANCES='2.5' must be an integer"),
    ("PCB_SNOWFLAKE_JOB_TIMEOUT_S", "59", r"PCB_SNOWFLAKE_JOB_TIMEOUT_S='59' must be >= 60"),
    ("PCB_MIN_MAP50", "nan", r"PCB_MIN_MAP50='nan' must be a number in \[0, 1\]"),
    ("PCB_MIN_MAP50", "-0.1", r"PCB_MIN_MAP50='-0.1' must be >= 0.0"),
])
def test_a_bad_number_is_a_snowflake_config_error_naming_it(sf_env, variable, raw, message):
    with pytest.raises(SnowflakeConfigError, match=message):
        PipelineSettings.from_env({**sf_env, variable: raw})


def test_settings_without_snowflake_are_refused_by_the_snowflake_builders(tmp_path):
    s = PipelineSettings.from_env({"PCB_HOME": str(tmp_path)})
    with pytest.raises(factory.BackendConfigError, match="no Snowflake configuration"):
        snowflake_resources(settings=s)
