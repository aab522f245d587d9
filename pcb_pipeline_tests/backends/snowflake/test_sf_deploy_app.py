"""`pcb-pipeline deploy-app`: the app as Streamlit in Snowflake on the container runtime. Every statement runs on
fakesnow through the shim (CREATE STREAMLIT and ADD LIVE VERSION are emulated: checked against the documented clause
order, MAIN_FILE must be on the stage). Nothing here has touched a live account."""
from __future__ import annotations

import pytest

from pcb_pipeline.backends.snowflake.app_deploy import (CONTAINER_RUNTIME, MAIN_FILE, AppDeployment, create_streamlit,
                                                        parse_create_streamlit)
from pcb_pipeline.cli import main

APP = "PCB.PIPELINE.PCB_DEFECT_APP"


def test_dry_run_prints_every_statement_and_connects_to_nothing(fake_account, capsys):
    assert main(["deploy-app", "--dry-run"]) == 0
    out = capsys.readouterr().out
    statements = [s.strip() for s in out.split(";\n") if s.strip()]
    assert statements[0].startswith("CREATE STAGE IF NOT EXISTS PCB.PIPELINE.APP_STAGE")
    puts = [s for s in statements if s.startswith("PUT ")]
    assert any(s.endswith("@PCB.PIPELINE.APP_STAGE/app/pcb_pipeline/app/ AUTO_COMPRESS = FALSE OVERWRITE = TRUE")
               and "streamlit_app.py" in s for s in puts)
    assert any("requirements.txt" in s and "@PCB.PIPELINE.APP_STAGE/app/ " in s for s in puts)
    assert not any("__pycache__" in s or ".pyc'" in s for s in puts)
    create = next(s for s in statements if s.startswith("CREATE OR REPLACE STREAMLIT"))
    parts = parse_create_streamlit(create)
    assert parts["RUNTIME_NAME"] == f"'{CONTAINER_RUNTIME}'" and parts["COMPUTE_POOL"] == "PCB_APP_POOL"
    assert parts["FROM"] == "'@PCB.PIPELINE.APP_STAGE/app'" and parts["MAIN_FILE"] == f"'{MAIN_FILE}'"
    assert parts["QUERY_WAREHOUSE"] == "PCB_WH" and parts["EXTERNAL_ACCESS_INTEGRATIONS"] == "(PCB_PYPI_EAI)"
    assert statements[-1] == f"ALTER STREAMLIT {APP} ADD LIVE VERSION FROM LAST"
    assert fake_account.records == []


def test_deploy_uploads_the_app_creates_it_and_makes_it_live(fake_account, connect, capsys):
    assert main(["deploy-app"]) == 0
    assert f"deployed Streamlit app {APP}" in capsys.readouterr().out
    app = fake_account.streamlits[("PCB", "PIPELINE", "PCB_DEFECT_APP")]
    assert app["live"] is True and app["RUNTIME_NAME"] == f"'{CONTAINER_RUNTIME}'"
    with connect() as conn:
        cur = conn.cursor()
        cur.execute("LIST @PCB.PIPELINE.APP_STAGE")
        listed = {r[0].split("/", 1)[1] for r in cur.fetchall()}
    assert {"app/requirements.txt", f"app/{MAIN_FILE}", "app/pcb_pipeline/resources/sql/tables.sql"} <= listed
    assert any(p.startswith("app/pcb_pipeline/resources/manuals/") for p in listed)


def test_deploy_app_names_missing_settings(sf_env, monkeypatch, capsys):
    monkeypatch.delenv("SNOWFLAKE_WAREHOUSE")
    assert main(["deploy-app", "--dry-run"]) == 1
    assert "SNOWFLAKE_WAREHOUSE" in capsys.readouterr().err


@pytest.mark.parametrize("statement,message", [
    ("CREATE STREAMLIT A.B.C ROOT_LOCATION = '@S/app' MAIN_FILE = 'x.py'", "legacy"),
    ("CREATE STREAMLIT A.B.C FROM '@S/app' RUNTIME_NAME = 'SYSTEM$ST_CONTAINER_RUNTIME_PY3_11'", "COMPUTE_POOL"),
    ("CREATE STREAMLIT A.B.C MAIN_FILE = 'x.py' FROM '@S/app'", "order"),
    ("CREATE STREAMLIT A.B.C FROM '@S/app' COLOUR = 'blue'", "unknown"),
    ("CREATE TABLE T (a INT)", "not a CREATE STREAMLIT"),
])
def test_create_streamlit_refuses_what_snowflake_would(statement, message):
    with pytest.raises(ValueError, match=message):
        parse_create_streamlit(statement)
    parse_create_streamlit(create_streamlit(AppDeployment("PCB", "PIPELINE", "PCB_WH", title="O'Brien's boards")))


def test_the_apps_requirements_carry_the_projects_own_pins():
    import tomllib
    from pathlib import Path

    from pcb_pipeline.backends.snowflake.app_deploy import app_requirements

    pyproject = tomllib.loads((Path(__file__).resolve().parents[3] / "pyproject.toml").read_text())
    pins = set(pyproject["project"]["dependencies"])
    reqs = app_requirements()
    assert "streamlit==1.67.0" in reqs and "ultralytics==8.4.190" in reqs
    assert all(r in pins for r in reqs if "=" in r or ">" in r), [r for r in reqs if r not in pins]
    assert not any(r.startswith(("dagster", "torch", "pytest")) for r in reqs)  # the app needs no training stack
