"""The Snowflake side: every statement that fakesnow can parse runs against fakesnow; the rest is contract-tested.

What runs under fakesnow (DuckDB underneath, the real snowflake.connector API): SOP_CHUNKS DDL, chunk loading, the
Cortex Search service's source query, tables.sql, the golden query, the semantic model's verified queries and the
SQL that the local question -> SQL engine emits for the whole evaluation set.
What is contract-tested (fakesnow cannot parse it, and nothing here reaches Snowflake): CREATE CORTEX SEARCH SERVICE
(documented clause order, attributes selected by the source query), the snowflake.core Cortex Search call (real
snowflake.core resource and request models, stubbed transport), AI_COMPLETE (statement parsed by sqlglot, bound
parameters) and the Cortex Analyst REST API (request and response validated with snowflake.core's own models).
"""
from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest
import sqlglot

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "backends" / "snowflake"))
from sf_fakes import cortex_search_root  # noqa: E402 - the Snowflake backend tests' stand-ins

from knowledge_golden import GOLDEN_QUERY, GOLDEN_QUESTION, SAMPLE_RAG_PROMPT
from pcb_pipeline.knowledge.analyst import CortexAnalystClient, CortexAnalystError, parse_reply
from pcb_pipeline.knowledge.evaluation import evaluate_data, frame_multiset, load_eval, rows_multiset
from pcb_pipeline.knowledge.semantic_model import logical_to_physical
from pcb_pipeline.knowledge.snowflake_search import (AI_COMPLETE_SQL, AI_COMPLETE_SQL_PYFORMAT, RESULT_COLUMNS,
                                                     SERVICE_NAME, SnowflakeManualSearch, build_rag_prompt,
                                                     cortex_filter, cortex_search_statements,
                                                     parse_search_service_ddl, sync_chunks)


class FakesnowWarehouse:
    """The Warehouse protocol over a (fakesnow-patched) snowflake.connector connection: SQL goes in unchanged."""

    def __init__(self, conn):
        self.conn = conn

    def execute(self, sql: str) -> None:
        self.conn.cursor().execute(sql)

    def query(self, sql: str, timeout_s: float | None = None, max_rows: int | None = None):
        cur = self.conn.cursor()
        cur.execute(sql, timeout=int(timeout_s)) if timeout_s else cur.execute(sql)
        df = cur.fetch_pandas_all() if max_rows is None else cur.fetch_pandas_all().head(max_rows)
        df.columns = [c.lower() for c in df.columns]
        return df

    def upsert(self, table, key_columns, rows) -> int:
        import snowflake.connector.pandas_tools as pt

        keys = " AND ".join(f"{table}.{k} = s.{k}" for k in key_columns)
        self.execute(f"CREATE TEMPORARY TABLE IF NOT EXISTS {table}_STAGE LIKE {table}")
        self.execute(f"DELETE FROM {table}_STAGE")
        pt.write_pandas(self.conn, rows.reset_index(drop=True), f"{table}_STAGE")
        self.execute(f"DELETE FROM {table} USING {table}_STAGE s WHERE {keys}")
        self.execute(f"INSERT INTO {table} SELECT * FROM {table}_STAGE")
        return len(rows)


@pytest.fixture(scope="module")
def snow(sample_frames):
    import warnings

    fakesnow = pytest.importorskip("fakesnow")
    import snowflake.connector

    from pcb_pipeline.backends.sqlutil import read_sql_file

    warnings.filterwarnings("ignore", message=".*Arrow output.*")
    with fakesnow.patch():
        conn = snowflake.connector.connect(database="PCB", schema="PIPELINE")
        wh = FakesnowWarehouse(conn)
        for stmt in read_sql_file("tables.sql"):
            wh.execute(stmt)
        import snowflake.connector.pandas_tools as pt

        for table, df in sample_frames.items():
            assert pt.write_pandas(conn, df, table)[0]
        yield wh
        conn.close()


# ----------------------------------------------------------------------------------------------- under fakesnow
def test_golden_query_and_golden_question_under_fakesnow(snow, warehouse):
    golden = frame_multiset(snow.query(GOLDEN_QUERY))
    assert golden == frame_multiset(warehouse.query(GOLDEN_QUERY)), "fakesnow and the local DuckDB agree"
    from pcb_pipeline.knowledge.api import ask_data

    out = ask_data(GOLDEN_QUESTION, snow)
    assert rows_multiset(out["rows"]) == golden


def test_verified_queries_run_under_fakesnow(snow, model):
    for v in model.verified_queries:
        assert len(snow.query(logical_to_physical(v.sql, model))) > 0, v.name
        # fully qualified, as on Snowflake
        assert len(snow.query(logical_to_physical(v.sql, model, qualified=True))) > 0, v.name


def test_every_generated_query_of_the_eval_set_runs_under_fakesnow(snow):
    """The engine's Snowflake SQL (not transpiled by us) gives the reference answers on fakesnow too."""
    from pcb_pipeline.knowledge.api import ask_data

    rep = evaluate_data(ask_data, snow, load_eval("data_questions.yaml"))
    assert rep.accuracy == 1.0, rep.failures


def test_sop_chunks_ddl_loading_and_service_source_query_under_fakesnow(snow, corpus):
    table_ddl, service_ddl = cortex_search_statements()
    snow.execute(table_ddl)
    snow.execute(table_ddl)  # idempotent
    assert sync_chunks(snow, corpus) == len(corpus)
    assert sync_chunks(snow, corpus[:-3]) == len(corpus) - 3  # re-sync removes stale chunks
    assert snow.query("SELECT COUNT(*) AS n FROM SOP_CHUNKS")["n"][0] == len(corpus) - 3
    parts = parse_search_service_ddl(service_ddl)
    rows = snow.query(parts["query"])
    assert set(rows.columns) >= {c.lower() for c in RESULT_COLUMNS}
    # what a Cortex Search filter {"@eq": {"defect_category": "Etching"}} selects, expressed as SQL
    etching = snow.query(f"SELECT * FROM ({parts['query']}) WHERE defect_category = 'Etching'")
    assert len(etching) == sum(c.defect_category == "Etching" for c in corpus[:-3])


# ------------------------------------------------------------------------------------------- contract tests
def test_cortex_search_service_ddl_contract():
    stmts = cortex_search_statements(warehouse="QA_WH", target_lag="30 minutes")
    assert len(stmts) == 2
    parts = parse_search_service_ddl(stmts[1])
    assert parts["name"] == SERVICE_NAME and parts["on"] == "chunk"
    assert parts["attributes"][0] == "defect_category"
    assert parts["warehouse"] == "QA_WH" and parts["target_lag"] == "30 minutes"
    with pytest.raises(ValueError, match="not selected"):
        parse_search_service_ddl(stmts[1].replace("SELECT chunk, chunk_id, document", "SELECT chunk, chunk_id"))
    with pytest.raises(ValueError, match="clause order"):
        parse_search_service_ddl("CREATE CORTEX SEARCH SERVICE S ATTRIBUTES a ON b WAREHOUSE = W TARGET_LAG = '1 "
                                 "hour' AS SELECT a, b FROM T")
    with pytest.raises(ValueError):
        cortex_search_statements(warehouse="W; DROP TABLE X")


class _StubSearchApi:
    """Stands in for snowflake.core's generated CortexSearchServiceApi; answers from the local index."""

    api_client = None  # snowflake.core's telemetry wrapper touches it

    def __init__(self, local):
        self.local = local
        self.calls = []

    def query_cortex_search_service(self, database, var_schema, service_name, query_request, async_req=False):
        from snowflake.core.cortex.search_service._generated.models import QueryRequest, QueryResponse

        assert isinstance(query_request, QueryRequest)
        self.calls.append((database, var_schema, service_name, query_request))
        flt = query_request.filter or {}
        category = None
        if flt:
            assert set(flt) == {"@eq"}
            category = next(iter(flt["@eq"].values()))
        hits = self.local.search(query_request.query, category=category, k=query_request.limit)
        rows = [{col: (h.chunk.text if col == "chunk" else getattr(h.chunk, col)) for col in query_request.columns}
                for h in hits]
        return QueryResponse.from_dict({"results": rows, "request_id": "req-1"})


class _FakeSnowpark:
    """Records session.sql(query, params) and returns a canned AI_COMPLETE answer that cites [1] and [2]."""

    def __init__(self):
        self.calls = []

    def sql(self, query, params=None):
        self.calls.append((query, params))
        reply = "Mousebites come from edge over-etching [1]. Under Class 2 a width reduction up to 20 percent is " \
                "acceptable [2]."
        return types.SimpleNamespace(collect=lambda: [(reply,)])


def test_snowflake_manual_search_contract(manual_search):
    api = _StubSearchApi(manual_search)
    session = _FakeSnowpark()
    sf = SnowflakeManualSearch(session, "PCB", "PIPELINE", root=cortex_search_root(api), limit=4)
    ans = sf.answer(SAMPLE_RAG_PROMPT, category="mousebite")
    # the search went through snowflake.core's resource with our columns, filter and limit
    db, schema, name, req = api.calls[0]
    assert (db, schema, name) == ("PCB", "PIPELINE", SERVICE_NAME)
    assert req.columns == RESULT_COLUMNS and req.limit == 4 and req.filter == {"@eq": {"defect_class": "mousebite"}}
    # the answer came from AI_COMPLETE with bound parameters, and only cited passages are returned
    query, params = session.calls[0]
    assert query == AI_COMPLETE_SQL and params[0] == "mistral-large2" and "[1]" in params[1]
    assert SAMPLE_RAG_PROMPT in params[1]
    assert [c.number for c in ans.citations] == [1, 2]
    assert all(c.defect_class == "mousebite" and c.document.endswith(".pdf") and c.page >= 1 for c in ans.citations)
    assert set(ans.to_dict()) == {"answer", "citations"}


def test_ai_complete_statements_are_valid_snowflake_sql():
    for sql in (AI_COMPLETE_SQL.replace("?", "'x'"), AI_COMPLETE_SQL_PYFORMAT.replace("%s", "'x'")):
        tree = sqlglot.parse_one(sql, read="snowflake")
        assert tree.find(sqlglot.exp.Anonymous).name.upper() == "AI_COMPLETE"
        assert len(tree.find(sqlglot.exp.Anonymous).expressions) == 2


def test_cortex_filter_and_prompt():
    assert cortex_filter("Etching") == {"@eq": {"defect_category": "Etching"}}
    assert cortex_filter("pinhole") == {"@eq": {"defect_class": "pin-hole"}}
    assert cortex_filter(None) is None
    from pcb_pipeline.knowledge.search import Hit

    from pcb_pipeline.knowledge.corpus import Chunk

    c = Chunk("id", "D.pdf", "D", "T", 3, "4 Acceptability", "Inspection", "spur", "Spur text.")
    prompt = build_rag_prompt("Q?", [Hit(c, 1.0)])
    assert "[1] D.pdf, page 3" in prompt and "only the numbered passages" in prompt


# Cortex Analyst -------------------------------------------------------------------------------------------
CORTEX_SQL = ("WITH __defect_logs AS (SELECT detected_class AS defect_type, factory_line_id, timestamp AS "
              "detected_at FROM PCB.PIPELINE.DEFECT_LOGS) SELECT defect_type, COUNT(*) AS defect_count FROM "
              "__defect_logs WHERE factory_line_id = 'SHANGHAI' AND detected_at >= DATEADD(week, -1, "
              "CURRENT_DATE()) GROUP BY defect_type -- Generated by Cortex Analyst")


class _FakeHttp:
    def __init__(self, body, status=200):
        self.body, self.status, self.calls = body, status, []

    def post(self, url, json=None, headers=None, timeout=None):
        self.calls.append({"url": url, "json": json, "headers": headers, "timeout": timeout})
        return types.SimpleNamespace(status_code=self.status, json=lambda: self.body, text=str(self.body))


def _analyst_body(sql=CORTEX_SQL):
    content = [{"type": "text", "text": "This is our interpretation of your question: defects by type, Shanghai, "
                                        "last 7 days"}]
    if sql:
        content.append({"type": "sql", "statement": sql, "confidence": {"verified_query_used": None}})
    else:
        content.append({"type": "suggestions", "suggestions": ["What is the scrap rate by line?"]})
    return {"message": {"role": "analyst", "content": content}, "request_id": "abc-123", "warnings": []}


def test_cortex_analyst_request_and_response_contract(snow, model):
    from snowflake.core.cortex.analyst_service._generated.models import SendMessageRequest, SendMessageResponse

    http = _FakeHttp(_analyst_body())
    client = CortexAnalystClient("myorg-acct.snowflakecomputing.com", "tok", token_type="KEYPAIR_JWT",
                                 semantic_model_file="@PCB.PIPELINE.MODEL_STAGE/semantic_model.yaml", model=model,
                                 http=http)
    out = client.ask(GOLDEN_QUESTION, snow)
    call = http.calls[0]
    assert call["url"] == "https://myorg-acct.snowflakecomputing.com/api/v2/cortex/analyst/message"
    assert call["headers"]["Authorization"] == "Bearer tok"
    assert call["headers"]["X-Snowflake-Authorization-Token-Type"] == "KEYPAIR_JWT"
    req = SendMessageRequest.from_dict(call["json"])  # snowflake.core's own model of the request
    assert req.semantic_model_file.endswith("semantic_model.yaml") and req.stream is False
    assert call["json"]["messages"][0]["content"][0] == {"type": "text", "text": GOLDEN_QUESTION}
    SendMessageResponse.from_dict(_analyst_body())  # the canned answer is a valid response
    # the Cortex SQL was guarded (comment removed) and ran on the warehouse with the golden result
    assert out.answered and out.source == "cortex_analyst" and "--" not in out.sql
    assert rows_multiset(out.rows) == frame_multiset(snow.query(GOLDEN_QUERY))


def test_cortex_analyst_inline_yaml_suggestions_errors_and_guard(snow, model):
    http = _FakeHttp(_analyst_body(sql=None))
    client = CortexAnalystClient("https://acct.snowflakecomputing.com", "t", token_type=None,
                                 semantic_model_yaml=model.to_yaml(), model=model, http=http)
    out = client.ask("what is the weather", snow)
    assert not out.answered and out.suggestions == ["What is the scrap rate by line?"]
    assert "tables:" in http.calls[0]["json"]["semantic_model"]
    assert "X-Snowflake-Authorization-Token-Type" not in http.calls[0]["headers"]

    evil = _FakeHttp(_analyst_body(sql="SELECT 1; DROP TABLE DEFECT_LOGS"))
    client.http = evil
    out = client.ask("anything", snow)
    assert not out.answered and "refused by the guard" in out.interpretation

    client.http = _FakeHttp({"message": "nope"}, status=401)
    with pytest.raises(CortexAnalystError, match="401"):
        client.send("q")
    with pytest.raises(ValueError):
        CortexAnalystClient("acct", "t", semantic_model_file="not-a-stage-path", model=model, http=http)


def test_cortex_analyst_session_token_and_multi_turn(model):
    conn = types.SimpleNamespace(host="acct.snowflakecomputing.com", rest=types.SimpleNamespace(token="sess"))
    http = _FakeHttp(_analyst_body())
    client = CortexAnalystClient.from_connection(conn, semantic_model_file="@DB.S.ST/m.yaml", model=model, http=http)
    assert client.headers()["Authorization"] == 'Snowflake Token="sess"'
    client.send("first", multi_turn=True)
    client.send("second", multi_turn=True)
    roles = [m["role"] for m in http.calls[1]["json"]["messages"]]
    assert roles == ["user", "analyst", "user"]
    reply = parse_reply(_analyst_body())
    assert reply.request_id == "abc-123" and reply.sql == CORTEX_SQL
    json.dumps(http.calls[1]["json"])


class _PlayedHttp:
    """A transport that answers each POST with the next played (status, body, headers) or raises it."""

    def __init__(self, *answers):
        self.answers, self.calls = list(answers), []

    def post(self, url, json=None, headers=None, timeout=None):
        self.calls.append({"url": url, "json": json})
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        status, body, hdrs = (answer + ({},))[:3] if len(answer) == 2 else answer
        text = body if isinstance(body, str) else __import__("json").dumps(body)
        return types.SimpleNamespace(status_code=status, text=text, headers=hdrs,
                                     json=lambda: __import__("json").loads(text))


def _client(model, http, fallback=None, slept=None):
    return CortexAnalystClient("acct.snowflakecomputing.com", "t", semantic_model_file="@DB.S.ST/m.yaml", model=model,
                               http=http, fallback=fallback, sleep=(slept.append if slept is not None else None))


@pytest.mark.parametrize("answer,why", [
    ((401, {"message": "token expired"}), "HTTP 401"),
    ((500, {"message": "internal"}), "HTTP 500"),
    ((200, "<html>gateway</html>"), "not JSON"),
    ((200, {"unexpected": True}), "unexpected Cortex Analyst response"),
    ((200, {"message": {"content": None}}), "unexpected Cortex Analyst response"),
    ((200, {"message": {"content": ["not a block"]}}), "unexpected Cortex Analyst response"),
    (TimeoutError("read timed out"), "did not answer"),
    ((200, {"message": {"role": "analyst", "content": [{"type": "text", "text": "I cannot help"}]}}), "no SQL"),
    ((200, _analyst_body(sql="SELECT * FROM DEFECT_LOGS; DROP TABLE DEFECT_LOGS")), "refused by the guard"),
])
def test_cortex_analyst_falls_back_to_the_local_engine_and_says_so(snow, model, answer, why):
    from pcb_pipeline.knowledge.questions import LocalDataAnalyst

    out = _client(model, _PlayedHttp(answer), fallback=LocalDataAnalyst(model)).ask(GOLDEN_QUESTION, snow)
    assert out.answered and out.source.startswith("local_fallback:"), out
    assert out.interpretation.startswith("Cortex Analyst could not answer (") and why in out.interpretation
    assert rows_multiset(out.rows) == frame_multiset(snow.query(GOLDEN_QUERY))


def test_cortex_analyst_retries_when_rate_limited(snow, model):
    slept: list[float] = []
    http = _PlayedHttp((429, {"message": "slow down"}, {"Retry-After": "2"}), (503, {"message": "busy"}),
                       (200, _analyst_body()))
    out = _client(model, http, slept=slept).ask(GOLDEN_QUESTION, snow)
    assert out.answered and out.source == "cortex_analyst" and len(http.calls) == 3
    assert slept == [2.0, 2.0]  # Retry-After, then the backoff of the second attempt
    endless = _PlayedHttp(*[(429, {"message": "slow down"}, {"Retry-After": "600"})] * 3)
    with pytest.raises(CortexAnalystError, match="HTTP 429"):
        _client(model, endless, slept=slept).send("q")
    assert max(slept) <= 8.0  # a hostile Retry-After never stalls the app


def test_cortex_analyst_suggestions_are_shown_not_replaced(snow, model):
    from pcb_pipeline.knowledge.questions import LocalDataAnalyst

    out = _client(model, _PlayedHttp((200, _analyst_body(sql=None))), fallback=LocalDataAnalyst(model)).ask(
        "what about the thing", snow)
    assert not out.answered and out.source == "cortex_analyst"
    assert out.suggestions == ["What is the scrap rate by line?"]


def test_feedback_and_the_streamlit_in_snowflake_transport(model):
    from pcb_pipeline.knowledge.analyst import SnowApiTransport

    calls = []

    class FakeSnowflakeModule:  # what `import _snowflake` gives inside Streamlit in Snowflake
        @staticmethod
        def send_snow_api_request(method, path, headers, params, body, request_guid, timeout_ms):
            calls.append((method, path, body, timeout_ms))
            return {"status": 200, "content": json.dumps(_analyst_body() if path.endswith("message") else {})}

    client = CortexAnalystClient("", "", token_type=None, semantic_model_file="@DB.S.ST/m.yaml", model=model,
                                 http=SnowApiTransport(FakeSnowflakeModule), timeout=45)
    reply = client.send("how many opens?")
    assert reply.sql == CORTEX_SQL and reply.request_id == "abc-123"
    client.feedback(reply.request_id, positive=False, message="wrong line")
    assert [(m, p, t) for m, p, _, t in calls] == [("POST", "/api/v2/cortex/analyst/message", 45000),
                                                 ("POST", "/api/v2/cortex/analyst/feedback", 45000)]
    assert calls[1][2] == {"request_id": "abc-123", "positive": False, "feedback_message": "wrong line"}
    with pytest.raises(ImportError):
        SnowApiTransport()  # outside Snowflake there is no _snowflake module


def test_the_apps_analyst_follows_the_conversation_and_takes_feedback(snow, model):
    from contextlib import contextmanager

    from pcb_pipeline.knowledge.analyst import ConnectedCortexAnalyst

    opened = []

    @contextmanager
    def connect():  # a connection per question; its session token authorises the call
        conn = types.SimpleNamespace(host="acct.snowflakecomputing.com",
                                     rest=types.SimpleNamespace(token=f"tok{len(opened)}"))
        opened.append(conn)
        yield conn

    http = _PlayedHttp((200, _analyst_body()), (200, _analyst_body()), (200, {}))
    analyst = ConnectedCortexAnalyst(connect, "@DB.S.ST/m.yaml", http=http, multi_turn=True)
    first = analyst.ask(GOLDEN_QUESTION, snow)
    second = analyst.ask("and only the shorts?", snow)
    assert first.answered and second.answered and second.to_dict()["request_id"] == "abc-123"
    assert [m["role"] for m in http.calls[1]["json"]["messages"]] == ["user", "analyst", "user"]
    assert http.calls[1]["json"]["messages"][-1]["content"][0]["text"] == "and only the shorts?"
    analyst.feedback("abc-123", positive=True)
    assert http.calls[2]["url"].endswith("/api/v2/cortex/analyst/feedback")
    assert http.calls[2]["json"] == {"request_id": "abc-123", "positive": True}
    assert len(opened) == 3  # one connection per call, none kept open
