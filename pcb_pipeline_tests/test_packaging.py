"""The package runs outside the checkout: what runs need ships as package data, and an installed wheel runs the demo."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from pcb_pipeline.resources import PACKAGED_SQL_FILES, manuals_dir, sql_dir

REPO = Path(__file__).resolve().parents[1]


def test_admin_sql_folder_is_the_packaged_sql_byte_for_byte():
    for name in PACKAGED_SQL_FILES:
        assert (REPO / "sql" / name).read_bytes() == (sql_dir() / name).read_bytes(), (
            f"sql/{name} and pcb_pipeline/resources/sql/{name} differ: edit one, copy it to the other")


def test_runtime_lookups_resolve_inside_the_package():
    from pcb_pipeline.knowledge.manuals import default_source_dir
    from pcb_pipeline.knowledge.semantic_model import default_semantic_model_path
    from pcb_pipeline.knowledge.snowflake_search import cortex_search_sql_path

    package = Path(__import__("pcb_pipeline").__file__).parent
    for path in (default_source_dir(), default_semantic_model_path(), cortex_search_sql_path()):
        assert path.exists() and package in path.parents
    assert len(list(manuals_dir().glob("PCB-*.md"))) >= 8


def _build_wheel(tmp: Path) -> Path:
    # Build from a copy so a stale build/ in the checkout can never leak deleted files into the wheel.
    src = tmp / "src"
    shutil.copytree(REPO / "pcb_pipeline", src / "pcb_pipeline", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
                    "-w", str(tmp / "dist"), str(src)], check=True)
    return next((tmp / "dist").glob("pcb_pipeline-*.whl"))


def _clean_venv(tmp: Path, wheel: Path) -> Path:
    """A new venv holding only the wheel; the dependencies come from this interpreter's site-packages as a plain
    path entry, so this checkout's editable install (a .pth hook there) is not active in it."""
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    site = subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], check=True,
                          capture_output=True, text=True).stdout.strip()
    Path(site, "_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "--no-index", "-q",
                    str(wheel)], check=True)
    return venv


@pytest.mark.slow
def test_installed_wheel_runs_the_smoke_demo_outside_the_checkout(tmp_path):
    wheel = _build_wheel(tmp_path)
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {f"pcb_pipeline/resources/sql/{n}" for n in PACKAGED_SQL_FILES} <= names
    assert "pcb_pipeline/resources/manuals/PCB-SOP-203_mousebite_repair.md" in names
    assert not any(n.startswith("pcb_pipeline_tests") for n in names)

    venv = _clean_venv(tmp_path, wheel)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PCB_", "DAGSTER_", "MLFLOW_", "PYTHON"))}
    env["HOME"] = str(tmp_path / "home")  # an installed package keeps its state in ~/.pcb_pipeline
    where = subprocess.run([venv / "bin" / "python", "-c", "import pcb_pipeline; print(pcb_pipeline.__file__)"],
                           cwd=elsewhere, env=env, check=True, capture_output=True, text=True).stdout
    assert str(venv) in where and str(REPO) not in where

    def demo(*extra: str) -> subprocess.CompletedProcess:
        return subprocess.run([venv / "bin" / "pcb-pipeline", "demo", "--profile", "smoke", *extra], cwd=elsewhere,
                              env=env, capture_output=True, text=True, timeout=600)

    # One smoke epoch cannot clear the default gate: the run says so in one sentence and stores the model.
    blocked = demo()
    assert blocked.returncode == 1, blocked.stdout[-3000:] + blocked.stderr[-3000:]
    sentence = blocked.stdout.strip().splitlines()[-1]
    assert sentence.startswith("The quality gate kept the new model out (mAP50 ")
    assert "threshold 0.50" in sentence and "v1 but is not the champion" in sentence
    assert "--min-map50" in sentence and "--set epochs=" in sentence

    passed = demo("--min-map50", "0")
    assert passed.returncode == 0, passed.stdout[-3000:] + passed.stderr[-3000:]
    assert "Champion model: pcb_defect_detector v2" in passed.stdout
    home = tmp_path / "home" / ".pcb_pipeline"
    assert (home / "warehouse.duckdb").is_file() or any(home.glob("**/*.duckdb"))
    assert any(home.glob("**/manuals/*.pdf")), "the SOP manuals were not rendered from the packaged sources"
