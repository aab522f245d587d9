"""Fixtures for the app tests: one cheap champion model in its own PCB_HOME, and switching to that home per test.

The champion is built by running the whole Dagster graph (smoke profile, tiny synthetic set) in a subprocess with
its own PCB_HOME (champion.py), so nothing leaks into the session's shared home, registry or warehouse. Set
PCB_APP_TEST_HOME to a home built earlier (`python pcb_pipeline_tests/app/champion.py DIR`) to skip the build.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import champion  # noqa: E402

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


@pytest.fixture(scope="session")
def app_home(tmp_path_factory) -> Path:
    reuse = os.environ.get("PCB_APP_TEST_HOME")
    if reuse and (Path(reuse) / "mlflow" / "mlflow.db").is_file():
        return Path(reuse)
    home = tmp_path_factory.mktemp("app_home")
    champion.build_in_subprocess(home)
    return home


@pytest.fixture
def use_app_home(app_home, monkeypatch):
    """Point this process at the app home for one test (environment and MLflow's global URI restored after)."""
    from pcb_pipeline import settings

    original_uri = os.environ.get("MLFLOW_TRACKING_URI") or settings.paths().mlflow_uri
    p = settings.Paths(app_home)
    monkeypatch.setenv("PCB_HOME", str(app_home))
    monkeypatch.setenv("PCB_BACKEND", "local")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", p.mlflow_uri)
    monkeypatch.setenv("DAGSTER_HOME", str(p.dagster_home))
    monkeypatch.setenv("YOLO_CONFIG_DIR", str(p.yolo_config))
    yield app_home
    import mlflow

    mlflow.set_tracking_uri(original_uri)
    mlflow.set_registry_uri(original_uri)


@pytest.fixture(scope="session")
def board_files(app_home) -> list[Path]:
    """The synthetic Deep PCB test images on the app home's stage (each with a label file)."""
    files = sorted((app_home / "stage" / "raw" / "deeppcb" / "PCBData").glob("group*/*/*_test.jpg"))
    assert files, "the champion build landed no boards on the stage"
    return files


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Expose each phase's report on the item (the browser tests screenshot a failed page)."""
    outcome = yield
    rep = outcome.get_result()
    setattr(item, f"rep_{rep.when}", rep)
