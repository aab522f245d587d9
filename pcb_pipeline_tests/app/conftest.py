"""Fixtures for the app tests: one cheap champion model in its own PCB_HOME, and switching to that home per test.

The champion is built by running the whole Dagster graph (smoke profile, tiny synthetic set) in a subprocess with
its own PCB_HOME (champion.py), so nothing leaks into the session's shared home, registry or warehouse. Set
PCB_APP_TEST_HOME to a home built earlier (`python pcb_pipeline_tests/app/champion.py DIR`) to skip the build.
`serve_streamlit` starts a Streamlit server process for the browser tests and stops it after the module.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
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


@pytest.fixture(scope="module")
def serve_streamlit(artifacts_dir):
    """start(command, url, env, cwd, log_name, timeout=90) -> url: run a Streamlit server process (in its own process
    group, output to test-artifacts/<log_name>) until /_stcore/health answers ok; every one started is stopped
    (SIGTERM to its group, SIGKILL after 15 s) when the module's tests are done."""
    started: list[tuple[subprocess.Popen, object]] = []

    def start(command: list[str], url: str, env: dict, cwd: Path, log_name: str, timeout: float = 90) -> str:
        log = open(artifacts_dir / log_name, "w")
        proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        started.append((proc, log))
        deadline = time.time() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"streamlit exited with {proc.returncode}; see {log.name}")
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                    if r.read().strip() == b"ok":
                        return url
            except OSError:
                pass
            if time.time() > deadline:
                raise TimeoutError(f"streamlit did not become healthy on {url}; see {log.name}")
            time.sleep(0.5)

    yield start
    for proc, log in started:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)  # the process group this fixture started
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Expose each phase's report on the item (the browser tests screenshot a failed page)."""
    outcome = yield
    rep = outcome.get_result()
    setattr(item, f"rep_{rep.when}", rep)
