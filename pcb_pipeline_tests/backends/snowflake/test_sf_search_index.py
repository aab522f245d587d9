"""SnowflakeSearchIndexResource (search_index on PCB_BACKEND=snowflake) against fakesnow.

What runs where: CREATE TABLE SOP_CHUNKS, the chunk writes (write_pandas + MERGE + DELETE) and the Cortex Search
service's source query run on fakesnow, so the table contents are real. CREATE CORTEX SEARCH SERVICE and
AI_COMPLETE go through the connector exactly as they would to an account; fakesnow cannot run them, so the test
shim emulates them (marked "emulated" in the record, the exact statement text kept). The search itself goes
through snowflake.core's real CortexSearchServiceResource and request/response models; only the REST transport is
played (sf_fakes.FakeCortexSearchApi runs the created service's source query on fakesnow, keyword-ranked).
Nothing here has touched a live Snowflake account.
"""
from __future__ import annotations

import dagster as dg
import pytest
from dagster_snowflake import SnowflakeResource
from fakesnow_shim import ENV, connect_factory
from sf_fakes import FakeCortexSearchApi, cortex_search_root

from pcb_pipeline.defs.snowflake_resources import SnowflakeSearchIndexResource, snowflake_resources
from pcb_pipeline.knowledge.corpus import Chunk, chunks_to_frame
from pcb_pipeline.knowledge.search import citation_from_chunk
from pcb_pipeline.knowledge.snowflake_search import (AI_COMPLETE_SQL_PYFORMAT, RESULT_COLUMNS, SERVICE_NAME,
                                                     cortex_search_statements)

QUESTION = "What are the causes of 'mousebite' defects and is it acceptable under Class 2?"

CHUNKS = [
    Chunk("sop203-1", "PCB-SOP-203_mousebite_repair.pdf", "PCB-SOP-203", "Mousebite repair", 1, "2 Causes",
          "Etching", "mousebite", "Mousebite defects are caused by over-etching at the conductor edge. Check the "
                                  "etchant concentration."),
    Chunk("sop203-2", "PCB-SOP-203_mousebite_repair.pdf", "PCB-SOP-203", "Mousebite repair", 2, "4 Acceptability",
          "Etching", "mousebite", "Under Class 2 a mousebite that reduces conductor width by up to 20 percent is "
                                  "acceptable. Beyond that, scrap the board."),
    Chunk("sop205-1", "PCB-SOP-205_spur_removal.pdf", "PCB-SOP-205", "Spur removal", 1, "3 Repair", "Etching",
          "spur", "Remove a spur with a scalpel under magnification. Clean with isopropyl alcohol."),
    Chunk("sop210-1", "PCB-SOP-210_pinhole.pdf", "PCB-SOP-210", "Pin-hole", 3, "2 Causes", "Plating", "pin-hole",
          "Pin-holes come from gas in the plating bath. Degas the bath."),
]


def _sf(warehouse: str = "PCB_WH") -> SnowflakeResource:
    """The pretend account's connection with plain values (snowflake_resources() uses EnvVars; Dagster resolves
    those only inside a run)."""
    return SnowflakeResource(account=ENV["SNOWFLAKE_ACCOUNT"], user=ENV["SNOWFLAKE_USER"],
                             password=ENV["SNOWFLAKE_PASSWORD"], role=ENV["SNOWFLAKE_ROLE"], warehouse=warehouse,
                             database=ENV["SNOWFLAKE_DATABASE"], schema=ENV["SNOWFLAKE_SCHEMA"])


def played(api: FakeCortexSearchApi, **kwargs) -> SnowflakeSearchIndexResource:
    """The real resource; only the transport under snowflake.core's Root is played."""

    class PlayedSearchIndex(SnowflakeSearchIndexResource):
        def root_factory(self):
            return lambda conn: cortex_search_root(api)

    return PlayedSearchIndex(**kwargs)


@pytest.fixture
def api(fake_account):
    return FakeCortexSearchApi(fake_account, connect_factory())


def _table(connect) -> list[tuple]:
    with connect() as conn:
        cur = conn.cursor()
        cur.execute("SELECT chunk_id, document, doc_id, title, page, section, defect_category, defect_class, chunk "
                    "FROM SOP_CHUNKS ORDER BY chunk_id")
        return [tuple(r) for r in cur.fetchall()]


def _expected_rows(chunks) -> list[tuple]:
    df = chunks_to_frame(chunks).sort_values("chunk_id")
    return [tuple(r) for r in df.itertuples(index=False)]


# ----------------------------------------------------------------------------------------------------- publish
def test_publish_writes_the_chunks_and_sends_the_exact_cortex_ddl(fake_account, connect, api):
    res = played(api, snowflake=_sf())
    description = res.publish(CHUNKS)

    assert description == (f"Cortex Search service PCB.PIPELINE.{SERVICE_NAME} over 4 chunks in PCB.PIPELINE.SOP_CHUNKS"
                           " (warehouse PCB_WH, target lag 1 hour)")
    assert _table(connect) == _expected_rows(CHUNKS)  # the rows really are in fakesnow's SOP_CHUNKS

    table_ddl, service_ddl = (" ".join(s.split()) for s in cortex_search_statements(warehouse="PCB_WH"))
    sent = fake_account.statements()
    assert fake_account.statements("emulated") == [service_ddl]  # the only statement fakesnow did not run
    assert sent.index(table_ddl) < [s.split()[0] for s in sent].index("MERGE") < sent.index(service_ddl), \
        "table, then rows, then the service (so its first refresh indexes the new rows)"
    assert ("PCB", "PIPELINE", SERVICE_NAME) in fake_account.cortex_services


def test_publish_replaces_the_rows_and_the_service(fake_account, connect, api):
    res = played(api, snowflake=_sf())
    res.publish(CHUNKS)
    changed = Chunk(**{**CHUNKS[0].to_dict(), "text": "Rewritten: over-etching at the conductor edge."})
    description = res.publish([changed, CHUNKS[2]])

    assert "over 2 chunks" in description
    assert _table(connect) == _expected_rows([changed, CHUNKS[2]]), "stale chunks deleted, changed text updated"
    assert len([s for s in fake_account.statements("emulated") if "CORTEX SEARCH SERVICE" in s]) == 2
    assert all(s.startswith("CREATE OR REPLACE CORTEX SEARCH SERVICE") for s in fake_account.statements("emulated"))


def test_publish_takes_the_warehouse_and_lag_from_config(fake_account, api):
    played(api, snowflake=_sf(warehouse="ANALYTICS_WH")).publish(CHUNKS)  # default: the connection's warehouse
    played(api, snowflake=_sf(), warehouse="SEARCH_WH", target_lag="30 minutes").publish(CHUNKS)

    expected = [" ".join(cortex_search_statements(warehouse="ANALYTICS_WH")[1].split()),
                " ".join(cortex_search_statements(warehouse="SEARCH_WH", target_lag="30 minutes")[1].split())]
    assert fake_account.statements("emulated") == expected
    parts = fake_account.cortex_services[("PCB", "PIPELINE", SERVICE_NAME)]
    assert parts["warehouse"] == "SEARCH_WH" and parts["target_lag"] == "30 minutes"


@pytest.mark.parametrize("kwargs, chunks, match", [
    ({}, [], "no chunks"),
    ({"warehouse": "WH; DROP TABLE SOP_CHUNKS"}, CHUNKS, "warehouse identifier"),
    ({"target_lag": "soon"}, CHUNKS, "TARGET_LAG"),
])
def test_publish_refuses_bad_input_before_sending_anything(fake_account, api, kwargs, chunks, match):
    with pytest.raises(ValueError, match=match):
        played(api, snowflake=_sf(), **kwargs).publish(chunks)
    assert fake_account.statements() == []


# --------------------------------------------------------------------------------------------------------- ask
def test_ask_returns_cited_answers_in_the_local_shape(fake_account, api):
    res = played(api, snowflake=_sf(), llm="claude-3-5-sonnet", limit=3)
    res.publish(CHUNKS)
    fake_account.clear()

    out = res.ask(QUESTION, category="mousebite")

    # the search: snowflake.core's request to the service in the connection's database and schema
    db, schema, name, req = api.calls[-1]
    assert (db, schema, name) == ("PCB", "PIPELINE", SERVICE_NAME)
    assert req.query == QUESTION and req.columns == RESULT_COLUMNS and req.limit == 3
    assert req.filter == {"@eq": {"defect_class": "mousebite"}}
    # the answer: one AI_COMPLETE through the connector with bound (model, prompt)
    [record] = fake_account.records
    assert record.how == "emulated" and record.statement == AI_COMPLETE_SQL_PYFORMAT
    model, prompt = record.params
    assert model == "claude-3-5-sonnet" and QUESTION in prompt and "[1] PCB-SOP-203_mousebite_repair.pdf" in prompt
    # the shape of the local ask_manuals, cited passages only
    assert set(out) == {"answer", "citations"}
    assert "[1]" in out["answer"] and "[2]" in out["answer"]
    assert [c["number"] for c in out["citations"]] == [1, 2]
    assert all(set(c) == set(citation_from_chunk(1, CHUNKS[0]).to_dict()) for c in out["citations"])
    assert {c["chunk_id"] for c in out["citations"]} == {"sop203-1", "sop203-2"}
    assert all(c["defect_class"] == "mousebite" and c["page"] >= 1 for c in out["citations"])


def test_ask_by_category_and_without(fake_account, api):
    res = played(api, snowflake=_sf())
    res.publish(CHUNKS)
    plating = res.ask("Why are there pin-holes?", category="Plating")
    assert api.calls[-1][3].filter == {"@eq": {"defect_category": "Plating"}}
    assert [c["chunk_id"] for c in plating["citations"]] == ["sop210-1"]
    anything = res.ask("How do I remove a spur?")
    assert api.calls[-1][3].filter is None
    assert anything["citations"][0]["chunk_id"] == "sop205-1"  # best keyword match cited first


def test_ask_before_publish_reaches_a_missing_service(fake_account, api):
    with pytest.raises(LookupError, match=f"{SERVICE_NAME} does not exist"):
        played(api, snowflake=_sf()).ask(QUESTION)


@pytest.mark.parametrize("question", ["", "   ", None])
def test_ask_rejects_an_empty_question_without_connecting(fake_account, api, question):
    with pytest.raises(ValueError, match="empty question"):
        played(api, snowflake=_sf()).ask(question)
    assert fake_account.records == [] and api.calls == []


# ----------------------------------------------------------------------------------------------------- wiring
def test_snowflake_resources_wire_cortex_search(sf_env):
    res = snowflake_resources()
    search = res["search_index"]
    assert type(search) is SnowflakeSearchIndexResource
    assert search.snowflake is res["stage"].snowflake  # the one shared connection resource (EnvVar credentials)
    assert search.warehouse is None and search.target_lag is None  # the connection's warehouse, the SQL file's lag


def test_knowledge_assets_materialise_on_snowflake(fake_account, tmp_path, monkeypatch, connect):
    """sop_documents -> sop_corpus -> sop_search_service and its mousebite check, with snowflake_resources()."""
    from pcb_pipeline import settings
    from pcb_pipeline.defs.knowledge_assets import (mousebite_question_cited, sop_corpus, sop_documents,
                                                    sop_search_service)

    monkeypatch.setenv("PCB_HOME", str(tmp_path / "home"))
    settings.configure()
    res = snowflake_resources()
    api = FakeCortexSearchApi(fake_account, connect)
    resources = {**res, "search_index": played(api, snowflake=res["stage"].snowflake)}
    result = dg.materialize([sop_documents, sop_corpus, sop_search_service, mousebite_question_cited],
                            resources=resources, instance=dg.DagsterInstance.ephemeral())
    assert result.success

    [mat] = [e.materialization for e in result.get_asset_materialization_events()
             if e.asset_key.path[-1] == "sop_search_service"]
    n = mat.metadata["chunks_indexed"].value
    assert n > 10 and _count(connect) == n
    assert mat.metadata["service"].value.startswith(f"Cortex Search service PCB.PIPELINE.{SERVICE_NAME} over {n} ")
    [check] = [e.event_specific_data for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"]
    assert check.check_name == mousebite_question_cited.check_key.name and check.passed
    assert check.metadata["mousebite_citations"].value >= 1
    assert [s.split()[:5] for s in fake_account.statements("emulated") if "CORTEX" in s] == [
        ["CREATE", "OR", "REPLACE", "CORTEX", "SEARCH"]]


def _count(connect) -> int:
    with connect() as conn:
        cur = conn.cursor()
        cur.execute("SELECT COUNT(*) FROM SOP_CHUNKS")
        return cur.fetchone()[0]
