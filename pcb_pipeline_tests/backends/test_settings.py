"""One settings object: read once from the environment, validated (a bad value names its variable), passed through."""
from __future__ import annotations

import dagster as dg
import pytest

from pcb_pipeline import settings
from pcb_pipeline.backends import factory
from pcb_pipeline.backends.base import BackendConfigError
from pcb_pipeline.backends.factory import PipelineSettings, QualitySettings
from pcb_pipeline.settings import SettingError, env_number


# ------------------------------------------------------------------------------------------------- env_number
def test_env_number_blank_means_default_and_bounds_hold():
    assert env_number({}, "X", 3) == 3 and env_number({"X": "  "}, "X", 3) == 3
    assert env_number({"X": " 2.5 "}, "X", 3.0) == 2.5
    assert env_number({"X": "7"}, "X", 1, cast=int, minimum=7) == 7
    assert env_number({"X": "1"}, "X", 0.5, minimum=0.0, maximum=1.0) == 1.0


@pytest.mark.parametrize("raw, kwargs, message", [
    ("soon", {}, r"X='soon' must be a number"),
    ("1.5", {"cast": int, "unit": "an integer"}, r"X='1.5' must be an integer"),
    ("0", {"minimum": 0.0, "exclusive": True}, r"X='0' must be > 0.0"),
    ("-1", {"minimum": 0.0}, r"X='-1' must be >= 0.0"),
    ("1.01", {"maximum": 1.0}, r"X='1.01' must be <= 1.0"),
    ("nan", {}, r"X='nan' must be a number"),
    ("nan", {"minimum": 0.0, "maximum": 1.0}, r"X='nan'"),
])
def test_env_number_refuses_naming_the_variable(raw, kwargs, message):
    with pytest.raises(SettingError, match=message):
        env_number({"X": raw}, "X", 1.0, **kwargs)
    assert issubclass(SettingError, ValueError)


# ----------------------------------------------------------------------------------------------- the settings
def test_defaults_on_an_empty_environment(tmp_path):
    s = PipelineSettings.from_env({"PCB_HOME": str(tmp_path)})
    assert (s.backend, s.data_analyst, s.snowflake) == ("local", "local", None)
    assert s.paths == settings.Paths(tmp_path.resolve()) and s.quality == QualitySettings()
    assert (s.quality.min_map50, s.quality.champion_max_age_hours, s.quality.retrain_max_age_hours,
            s.quality.logs_max_age_hours) == (0.5, 168.0, 26.0, 24.0)
    with pytest.raises(AttributeError):
        s.backend = "snowflake"  # frozen: what was read is what every builder gets


@pytest.mark.parametrize("env, error, message", [
    ({"PCB_BACKEND": "oracle"}, BackendConfigError, r"PCB_BACKEND='oracle' must be 'local' or 'snowflake'"),
    ({"PCB_DATA_ANALYST": "gpt"}, BackendConfigError, r"PCB_DATA_ANALYST='gpt' must be 'cortex' or 'local'"),
    ({"PCB_DATA_ANALYST": "cortex"}, BackendConfigError, r"PCB_DATA_ANALYST=cortex needs PCB_BACKEND=snowflake"),
    ({"PCB_MIN_MAP50": "high"}, SettingError, r"PCB_MIN_MAP50='high' must be a number in \[0, 1\]"),
    ({"PCB_MIN_MAP50": "1.5"}, SettingError, r"PCB_MIN_MAP50='1.5' must be <= 1.0"),
    ({"PCB_LOGS_MAX_AGE_HOURS": "a day"}, SettingError, r"PCB_LOGS_MAX_AGE_HOURS='a day' must be a number of hours"),
    ({"PCB_CHAMPION_MAX_AGE_HOURS": "0"}, SettingError, r"PCB_CHAMPION_MAX_AGE_HOURS='0' must be > 0"),
    ({"PCB_RETRAIN_MAX_AGE_HOURS": "-3"}, SettingError, r"PCB_RETRAIN_MAX_AGE_HOURS='-3' must be > 0"),
    ({"PCB_BACKEND": "snowflake"}, BackendConfigError, r"SNOWFLAKE_ACCOUNT, SNOWFLAKE_USER"),
])
def test_a_bad_setting_is_refused_naming_its_variable(tmp_path, env, error, message):
    with pytest.raises(error, match=message):
        PipelineSettings.from_env({"PCB_HOME": str(tmp_path), **env})


def test_numbers_are_read_into_the_settings(tmp_path):
    s = PipelineSettings.from_env({"PCB_HOME": str(tmp_path), "PCB_MIN_MAP50": "0.7",
                                   "PCB_LOGS_MAX_AGE_HOURS": "0.5", "PCB_RETRAIN_MAX_AGE_HOURS": " 48 "})
    assert (s.quality.min_map50, s.quality.logs_max_age_hours, s.quality.retrain_max_age_hours) == (0.7, 0.5, 48.0)


def test_builders_use_the_settings_they_are_given_not_the_environment(tmp_path, monkeypatch):
    """Settings read from one environment, then the process environment made unusable: every builder and the
    resources still work from the settings passed to them (nothing re-reads the environment)."""
    from pcb_pipeline.backends.local import LocalStage, LocalTrainingDispatcher
    from pcb_pipeline.defs.resources import local_resources

    home = tmp_path / "home"
    s = PipelineSettings.from_env({"PCB_HOME": str(home), "PCB_MIN_MAP50": "0.65"})
    monkeypatch.setenv("PCB_BACKEND", "oracle")  # any read of the environment would now fail
    monkeypatch.setenv("PCB_MIN_MAP50", "nonsense")
    st = factory.stage(s)
    assert isinstance(st, LocalStage) and st.root == s.paths.stage == home.resolve() / "stage"
    assert factory.warehouse(s=s).path == str(s.paths.warehouse) and s.paths.warehouse.is_file()
    assert factory.warehouse(read_only=True, s=s).read_only
    assert factory.registry(s).tracking_uri == s.paths.mlflow_uri
    tr = factory.trainer(st, s)
    assert isinstance(tr, LocalTrainingDispatcher) and tr.stage is st and tr.work_dir == s.paths.work
    res = local_resources(settings=s)
    assert res["stage"].root == str(s.paths.stage) and res["warehouse"].path == str(s.paths.warehouse)
    assert res["registry"].tracking_uri == s.paths.mlflow_uri and res["registry"].min_map50 == 0.65
    assert res["search_index"].index_dir == str(s.paths.sop_index)
    assert local_resources(min_map50=0.0, settings=s)["registry"].min_map50 == 0.0
    with pytest.raises(BackendConfigError, match="PCB_BACKEND=.* must be"):
        factory.stage()  # without settings: read now, from the (broken) environment


def test_a_builder_without_settings_reads_the_environment_once(tmp_path, monkeypatch):
    reads = []
    real = PipelineSettings.from_env.__func__

    def counting(cls, env=None, **kwargs):
        reads.append(kwargs)
        return real(cls, env, **kwargs)

    monkeypatch.setenv("PCB_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(PipelineSettings, "from_env", classmethod(counting))
    tr = factory.trainer()  # builds the stage too, from the same settings
    assert len(reads) == 1 and tr.stage.root == (tmp_path / "home").resolve() / "stage"


def test_local_resources_are_the_interfaces_the_assets_annotate(tmp_path):
    from pcb_pipeline.defs import resources as r

    res = r.local_resources(settings=PipelineSettings.from_env({"PCB_HOME": str(tmp_path)}))
    interfaces = {"stage": r.StageProvider, "warehouse": r.WarehouseProvider, "trainer": r.TrainingProvider,
                  "registry": r.RegistryProvider, "search_index": r.SearchIndexProvider}
    assert all(isinstance(res[k], cls) and isinstance(res[k], dg.ConfigurableResource)
               for k, cls in interfaces.items())
    with pytest.raises(TypeError):
        r.StageProvider()  # an interface, not a resource of its own


def test_freshness_thresholds_are_read_when_a_check_runs(monkeypatch):
    monkeypatch.setenv("PCB_LOGS_MAX_AGE_HOURS", "2")
    assert QualitySettings.from_env().logs_max_age_hours == 2.0
    monkeypatch.setenv("PCB_LOGS_MAX_AGE_HOURS", "two")
    with pytest.raises(SettingError, match="PCB_LOGS_MAX_AGE_HOURS"):
        QualitySettings.from_env()
