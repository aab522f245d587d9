"""`pcb-pipeline ask` and the backend factory's knowledge engines on PCB_BACKEND=snowflake, against fakesnow.

What runs where: SOP_CHUNKS is written by the Dagster resource (SnowflakeSearchIndexResource.publish) on fakesnow; the
CLI builds its manual search and warehouse from the SNOWFLAKE_* variables through pcb_pipeline.backends.factory, as a
user's shell would. The search goes through snowflake.core's real CortexSearchServiceResource and request models;
only its REST transport is played (sf_fakes.FakeCortexSearchApi runs the created service's source query on fakesnow,
keyword-ranked). AI_COMPLETE is answered by the shim's extractive stand-in. Data questions run their SELECT on
fakesnow through the Snowflake warehouse adapter. Nothing here has touched a live Snowflake account.
"""
from __future__ import annotations

import json
from datetime import date

import pytest
from fakesnow_shim import ENV, extractive_complete
from sf_fakes import load_sample_frames, play_cortex_search
from test_sf_search_index import CHUNKS, QUESTION

from pcb_pipeline.backends import factory
from pcb_pipeline.backends.snowflake import connect as sf_connect
from pcb_pipeline.backends.snowflake.config import from_env
from pcb_pipeline.cli import main
from pcb_pipeline.defs.snowflake_resources import SnowflakeSearchIndexResource
from pcb_pipeline.knowledge.corpus import Chunk
from pcb_pipeline.knowledge.snowflake_search import (AI_COMPLETE_SQL_PYFORMAT, DEFAULT_LLM, RESULT_COLUMNS,
                                                     SERVICE_NAME, ConnectedManualSearch)
from pcb_pipeline.knowledge.questions import LocalDataAnalyst

GOLDEN_QUESTION = "show me the breakdown of defect types for the Shanghai line last week"
GOLDEN_QUERY = ("SELECT detected_class, COUNT(*) FROM DEFECT_LOGS WHERE factory_line_id = 'SHANGHAI' AND "
                "timestamp >= DATEADD(week, -1, CURRENT_DATE()) GROUP BY detected_class")
HOSTILE = "'; DROP TABLE DEFECT_LOGS; --"


def read_only(statement: str) -> bool:
    """A query, or one of sql/tables.sql's CREATE TABLE IF NOT EXISTS (the warehouse adapter's idempotent schema
    check): everything `ask` may send."""
    from pcb_pipeline.backends.sqlutil import read_sql_file

    schema = {" ".join(s.split()) for s in read_sql_file("tables.sql")}
    return statement in schema or statement.upper().startswith(("SELECT ", "WITH ", "DESCRIBE "))


def publish(chunks) -> None:
    """SOP_CHUNKS + CREATE OR REPLACE CORTEX SEARCH SERVICE through the Dagster resource, on the pretend account."""
    SnowflakeSearchIndexResource(snowflake=sf_connect.snowflake_resource(from_env())).publish(chunks)


@pytest.fixture
def api(fake_account, connect, monkeypatch):
    """The pretend account with the chunks published; every snowflake.core Root the code builds is played."""
    publish(CHUNKS)
    fake_account.clear()
    return play_cortex_search(monkeypatch, fake_account, connect)


def ask(capsys, *argv) -> tuple[int, str, str]:
    rc = main(["ask", *argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


def sop_chunks(connect) -> dict[str, str]:
    with connect() as conn:
        cur = conn.cursor()
        cur.execute("SELECT chunk_id, chunk FROM SOP_CHUNKS")
        return dict(cur.fetchall())


def count(connect, table: str) -> int:
    with connect() as conn:
        cur = conn.cursor()
        cur.execute(f"SELECT COUNT(*) FROM {table}")
        return cur.fetchone()[0]


# ----------------------------------------------------------------------------------------------------- factory
def test_factory_builds_cortex_search_from_the_environment_without_connecting(fake_account):
    search = factory.manual_search()
    assert type(search) is ConnectedManualSearch
    assert (search.database, search.schema, search.options) == ("PCB", "PIPELINE", {})  # service, llm: defaults
    assert fake_account.records == []  # nothing connects before a question is asked


def test_factory_chooses_the_data_analyst_from_the_settings(fake_account, monkeypatch):
    from pcb_pipeline.knowledge.analyst import ConnectedCortexAnalyst

    analyst = factory.data_analyst()  # default on Snowflake: Cortex Analyst, the local engine behind it
    assert type(analyst) is ConnectedCortexAnalyst and type(analyst.fallback) is LocalDataAnalyst
    assert analyst.semantic_model_file == "@PCB.PIPELINE.MODEL_STAGE/semantic_model/semantic_model.yaml"
    monkeypatch.setenv("PCB_DATA_ANALYST", "local")
    assert type(factory.data_analyst()) is LocalDataAnalyst  # the semantic-model engine, on Snowflake's warehouse
    monkeypatch.setenv("PCB_DATA_ANALYST", "gpt")
    with pytest.raises(factory.BackendConfigError, match="PCB_DATA_ANALYST='gpt' must be 'cortex' or 'local'"):
        factory.data_analyst()
    monkeypatch.setenv("PCB_BACKEND", "local")
    monkeypatch.setenv("PCB_DATA_ANALYST", "cortex")
    with pytest.raises(factory.BackendConfigError, match="needs PCB_BACKEND=snowflake"):
        factory.data_analyst()
    assert fake_account.records == []


# ------------------------------------------------------------------------------------------------ ask --manuals
def test_ask_manuals_answers_from_cortex_search_with_cited_sop_chunks(api, fake_account, connect, capsys):
    rc, out, _ = ask(capsys, "--manuals", QUESTION, "--category", "mousebite", "--json")
    assert rc == 0
    res = json.loads(out)

    # the exact Cortex Search request, to the service in SNOWFLAKE_DATABASE.SNOWFLAKE_SCHEMA
    [(db, schema, name, req)] = api.calls
    assert (db, schema, name) == ("PCB", "PIPELINE", SERVICE_NAME)
    assert (req.query, req.columns, req.limit) == (QUESTION, RESULT_COLUMNS, 5)
    assert req.filter == {"@eq": {"defect_class": "mousebite"}}
    # one AI_COMPLETE with bound (model, prompt); the published passages are in the prompt
    [record] = fake_account.records
    assert (record.how, record.statement) == ("emulated", AI_COMPLETE_SQL_PYFORMAT)
    model, prompt = record.params
    assert model == DEFAULT_LLM and QUESTION in prompt
    # the answer cites the SOP_CHUNKS rows the Dagster resource published, with their text as stored
    assert res["answer"] == extractive_complete(model, prompt) and "[1]" in res["answer"]
    stored = sop_chunks(connect)
    assert [c["number"] for c in res["citations"]] == [1, 2]
    assert {c["chunk_id"] for c in res["citations"]} == {"sop203-1", "sop203-2"}
    assert all(c["text"] == stored[c["chunk_id"]] for c in res["citations"])
    assert all(c["document"] == "PCB-SOP-203_mousebite_repair.pdf" and c["defect_category"] == "Etching"
               for c in res["citations"])


def test_ask_manuals_finds_what_was_last_published(api, connect, capsys):
    rewritten = Chunk(**{**CHUNKS[2].to_dict(), "text": "Republished: lift a spur with a fibreglass pen."})
    publish([CHUNKS[0], rewritten])  # the resource replaces the rows and the service

    rc, out, _ = ask(capsys, "--manuals", "How do I remove a spur?")
    assert rc == 0
    assert api.calls[-1][3].filter is None and api.calls[-1][3].query == "How do I remove a spur?"
    lines = out.splitlines()
    assert lines[0].startswith("Republished: lift a spur with a fibreglass pen. [1]")
    assert lines[1] == "  [1] PCB-SOP-205_spur_removal.pdf p.1 (Etching)"
    assert set(sop_chunks(connect)) == {"sop203-1", "sop205-1"}
    assert all("sop203-2" not in line and "SOP-210" not in line for line in lines)  # deleted rows are not found


def test_ask_manuals_hostile_text_is_only_ever_a_search_string_and_a_bound_parameter(api, fake_account, connect,
                                                                                      capsys):
    question = f"How do I repair a pin-hole? {HOSTILE.replace('DEFECT_LOGS', 'SOP_CHUNKS')}"
    before = sop_chunks(connect)
    fake_account.clear()
    rc, out, _ = ask(capsys, "--manuals", question, "--json")
    assert rc == 0 and json.loads(out)["citations"]
    assert api.calls[-1][3].query == question  # sent as the search text, not as SQL
    [record] = fake_account.records  # the only statement: AI_COMPLETE with the question as a bound parameter
    assert record.statement == AI_COMPLETE_SQL_PYFORMAT and question in record.params[1]
    assert sop_chunks(connect) == before


@pytest.mark.parametrize("argv, message", [
    (["--manuals", "   "], "empty question"),
    (["--manuals", QUESTION, "--category", "warp"], "unknown category"),
])
def test_ask_manuals_refuses_before_connecting(api, fake_account, capsys, argv, message):
    rc, _, err = ask(capsys, *argv)
    assert rc == 2 and message in err
    assert fake_account.records == [] and api.calls == []


def test_missing_snowflake_settings_are_named_and_no_secret_is_printed(sf_env, monkeypatch, capsys):
    monkeypatch.delenv("SNOWFLAKE_USER")
    for argv in (["--manuals", QUESTION], ["--data", GOLDEN_QUESTION]):
        rc, out, err = ask(capsys, *argv)
        assert rc == 2 and "SNOWFLAKE_USER" in err
        assert ENV["SNOWFLAKE_PASSWORD"] not in out + err


# --------------------------------------------------------------------------------------------------- ask --data
@pytest.fixture
def loaded(fake_account, connect):
    from pcb_pipeline.knowledge import sample_data

    frames = sample_data.generate(n_boards=60, days=10, seed=5, today=date.today())
    load_sample_frames(factory.warehouse(), frames)
    fake_account.clear()
    return frames


def test_ask_data_runs_its_select_on_the_snowflake_warehouse(loaded, fake_account, connect, capsys, monkeypatch):
    monkeypatch.setenv("PCB_DATA_ANALYST", "local")
    rc, out, _ = ask(capsys, "--data", GOLDEN_QUESTION, "--json")
    assert rc == 0
    res = json.loads(out)
    sent = fake_account.statements("fakesnow")
    assert " ".join(res["sql"].split()) in sent  # the answer's SQL ran on (fake) Snowflake
    assert all(read_only(s) for s in fake_account.statements())
    with connect() as conn:
        cur = conn.cursor()
        cur.execute(GOLDEN_QUERY)
        expected = sorted(map(tuple, cur.fetchall()))
    assert expected and sorted(map(tuple, res["rows"])) == expected
    assert len(res["columns"]) == 2 and res["columns"][0] == "defect_type"  # the semantic model's names


@pytest.mark.parametrize("question", [
    HOSTILE,
    f"how many defects on the Shanghai line {HOSTILE}",
    "SELECT * FROM DEFECT_LOGS; DROP TABLE DEFECT_LOGS",
    "DELETE FROM DEFECT_LOGS",
])
def test_ask_data_refuses_hostile_text_and_changes_nothing(loaded, fake_account, connect, capsys, question,
                                                           monkeypatch):
    monkeypatch.setenv("PCB_DATA_ANALYST", "local")
    before = {t: count(connect, t) for t in ("DEFECT_LOGS", "BOARD_INSPECTIONS", "PCB_METADATA")}
    fake_account.clear()
    rc, out, _ = ask(capsys, "--data", question, "--json")
    res = json.loads(out)
    assert rc == 1 and res["sql"] is None and res["rows"] == []
    assert res["interpretation"].startswith("Cannot answer")
    sent = fake_account.statements()
    assert all(read_only(s) for s in sent), sent
    assert not any("DROP" in s.upper() or "DELETE" in s.upper() for s in sent)
    assert {t: count(connect, t) for t in before} == before


# --------------------------------------------------------------------------------- ask --data: Cortex Analyst
CORTEX_SQL = ("SELECT detected_class AS defect_type, COUNT(*) AS defect_count FROM PCB.PIPELINE.DEFECT_LOGS WHERE "
              "factory_line_id = 'SHANGHAI' AND timestamp >= DATEADD(week, -1, CURRENT_DATE()) GROUP BY 1")


class PlayedAnalyst:
    """Cortex Analyst's REST API, played: each POST gets the next (status, body)."""

    def __init__(self, *answers):
        self.answers, self.calls = list(answers), []

    def post(self, url, json=None, headers=None, timeout=None):
        import json as _json
        import types

        self.calls.append({"url": url, "json": json, "headers": headers})
        status, body = self.answers.pop(0)
        return types.SimpleNamespace(status_code=status, text=_json.dumps(body), headers={}, json=lambda: body)


@pytest.fixture
def played(monkeypatch):
    """Route the REST calls the CLI's Cortex Analyst makes to a PlayedAnalyst; the connection's session token is
    taken as Snowflake's samples take it (fakesnow connections carry none, so it is given here)."""
    import requests

    from pcb_pipeline.knowledge.analyst import CortexAnalystClient

    def play(*answers):
        http = PlayedAnalyst(*answers)
        monkeypatch.setattr(requests, "Session", lambda: http)
        monkeypatch.setattr(CortexAnalystClient, "from_connection", classmethod(
            lambda cls, conn, **kw: cls("https://acct.snowflakecomputing.com", "sess-token",
                                        token_type="SNOWFLAKE_SESSION", **kw)))
        return http

    return play


def _analyst_answer(sql):
    return {"request_id": "r-1", "warnings": [], "message": {"role": "analyst", "content": [
        {"type": "text", "text": "Defects by type on the Shanghai line over the last week"},
        {"type": "sql", "statement": sql}]}}


def test_ask_data_goes_through_cortex_analyst_on_snowflake(loaded, fake_account, connect, capsys, played):
    http = played((200, _analyst_answer(CORTEX_SQL)))
    rc, out, _ = ask(capsys, "--data", GOLDEN_QUESTION, "--json")
    res = json.loads(out)
    assert rc == 0 and res["source"] == "cortex_analyst" and res["sql"] == CORTEX_SQL
    call = http.calls[0]
    assert call["url"] == "https://acct.snowflakecomputing.com/api/v2/cortex/analyst/message"
    assert call["json"]["semantic_model_file"] == "@PCB.PIPELINE.MODEL_STAGE/semantic_model/semantic_model.yaml"
    assert call["headers"]["Authorization"] == 'Snowflake Token="sess-token"'
    assert " ".join(CORTEX_SQL.split()) in fake_account.statements("fakesnow")  # Analyst's SQL ran on Snowflake
    with connect() as conn:
        cur = conn.cursor()
        cur.execute(GOLDEN_QUERY)
        assert sorted(map(tuple, res["rows"])) == sorted(map(tuple, cur.fetchall()))


@pytest.mark.parametrize("answer,why", [
    ((500, {"message": "internal error"}), "HTTP 500"),
    ((200, _analyst_answer("SELECT * FROM DEFECT_LOGS; DROP TABLE DEFECT_LOGS")), "refused by the guard"),
])
def test_ask_data_falls_back_visibly_when_cortex_analyst_cannot_answer(loaded, fake_account, connect, capsys,
                                                                       played, answer, why):
    before = count(connect, "DEFECT_LOGS")
    played(answer)
    rc, out, _ = ask(capsys, "--data", GOLDEN_QUESTION, "--json")
    res = json.loads(out)
    assert rc == 0 and res["source"].startswith("local_fallback:")
    assert res["interpretation"].startswith("Cortex Analyst could not answer (") and why in res["interpretation"]
    assert all(read_only(s) for s in fake_account.statements()) and count(connect, "DEFECT_LOGS") == before
