"""sql/setup: every statement parses as Snowflake SQL (sqlglot); every statement fakesnow can run, runs."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import sqlglot
from sqlglot import exp

SETUP = Path(__file__).resolve().parents[3] / "sql" / "setup"
# account-level objects, grants and scripting: fakesnow (DuckDB) has no equivalent, so they are parse-checked only
NOT_IN_FAKESNOW = re.compile(r"^(CREATE (ROLE|WAREHOUSE|NETWORK RULE|COMPUTE POOL)\b|GRANT\b|EXECUTE IMMEDIATE\b|"
                             r"SHOW GRANTS\b|DESCRIBE (COMPUTE POOL|INTEGRATION)\b)", re.I)


def statements(text: str) -> list[str]:
    """Split on semicolons outside quotes, after dropping -- comments (raw text, as an admin's client sends it)."""
    out, buf, quote, i = [], [], False, 0
    while i < len(text):
        ch = text[i]
        if ch == "'":
            quote = not quote
        if not quote and text.startswith("--", i):
            i = text.find("\n", i) if "\n" in text[i:] else len(text)
            continue
        if ch == ";" and not quote:
            out.append("".join(buf).strip())
            buf = []
        else:
            buf.append(ch)
        i += 1
    out.append("".join(buf).strip())
    return [" ".join(s.split()) for s in out if s.strip()]


def scripts():
    return sorted(SETUP.glob("*.sql"))


def test_setup_scripts_exist_in_run_order():
    assert [p.name for p in scripts()] == ["01_account_setup.sql", "02_pipeline_session.sql",
                                           "03_streamlit_app.sql"]


@pytest.mark.parametrize("path", scripts(), ids=lambda p: p.name)
def test_every_statement_parses(path):
    for stmt in statements(path.read_text()):
        tree = sqlglot.parse_one(stmt, read="snowflake")  # raises ParseError on bad SQL
        assert tree is not None, stmt
        if isinstance(tree, exp.Command):  # sqlglot keeps statements it has no model for as commands
            assert NOT_IN_FAKESNOW.match(stmt), f"only account-level DDL may fall back to a command: {stmt}"


@pytest.mark.parametrize("name", ["01_account_setup.sql", "03_streamlit_app.sql"])
def test_admin_scripts_are_idempotent_and_parameterised(name):
    for stmt in statements((SETUP / name).read_text()):
        if stmt.upper().startswith("CREATE "):
            assert " IF NOT EXISTS " in stmt.upper() and "OR REPLACE" not in stmt.upper(), stmt
            assert "IDENTIFIER($pcb_" in stmt, f"names come from the SET block: {stmt}"
        if stmt.upper().startswith("GRANT "):
            assert "IDENTIFIER($pcb_role)" in stmt and " ALL " not in f" {stmt.upper()} ", stmt


def test_account_setup_objects():
    text = (SETUP / "01_account_setup.sql").read_text()
    assert "INSTANCE_FAMILY = GPU_NV_M" in text and "DIRECTORY = (ENABLE = TRUE)" in text
    assert "GRANT DATABASE ROLE SNOWFLAKE.CORTEX_USER TO ROLE IDENTIFIER($pcb_role)" in statements(text)
    assert "GRANT CREATE CORTEX SEARCH SERVICE ON SCHEMA IDENTIFIER($pcb_schema) TO ROLE IDENTIFIER($pcb_role)" \
        in statements(text)
    assert text.count("TYPE = 'SNOWFLAKE_SSE'") == 2
    for host in ("pypi.org", "files.pythonhosted.org", "github.com", "huggingface.co"):
        assert f"'{host}:443'" in text


def test_runnable_statements_run_in_fakesnow(sf_env):
    from fakesnow_shim import patched_snowflake

    import snowflake.connector

    ran, skipped = [], []
    with patched_snowflake():
        conn = snowflake.connector.connect(account="pcb-test", user="ADMIN", password="x")
        cur = conn.cursor()
        for path in scripts():
            for stmt in statements(path.read_text()):
                if NOT_IN_FAKESNOW.match(stmt):
                    skipped.append(stmt)
                    continue
                cur.execute(stmt)  # must succeed
                ran.append(stmt)
        cur.execute("SHOW STAGES IN SCHEMA PCB.PIPELINE")
        stages = sorted(r[1] for r in cur.fetchall())
        conn.close()
    assert stages == ["APP_STAGE", "ML_JOB_STAGE", "MODEL_STAGE"]
    assert any(s.startswith("CREATE DATABASE") for s in ran) and any(s.startswith("LIST @") for s in ran)
    assert len(ran) >= 20 and len(skipped) >= 15
