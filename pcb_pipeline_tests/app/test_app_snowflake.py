"""The app on PCB_BACKEND=snowflake, against fakesnow (patch mode, DuckDB underneath; the Snowflake tests' shim
emulates the stage commands fakesnow lacks). Not tested against a real Snowflake account.

The dashboard's SQL runs through the Snowflake warehouse adapter unchanged and gives the same figures as the local
DuckDB warehouse on the same rows; uploads and the board listing go through the Snowflake stage adapter. The Vision
Lab's model comes from the Snowflake Model Registry (Snowpark), which fakesnow cannot serve: not covered here.
The chat (Query Manuals / Query Data) goes through the backend factory: manual questions to the Cortex Search service
over the SOP_CHUNKS the Dagster resource published (snowflake.core's real resource, REST transport played by
sf_fakes.FakeCortexSearchApi; AI_COMPLETE answered by the shim's extractive stand-in), data questions as guarded
SELECTs on the Snowflake warehouse adapter."""
from __future__ import annotations

import contextlib
import os
import sys
from datetime import date, timedelta
from pathlib import Path

import pytest

from pcb_pipeline.app import data, vision
from pcb_pipeline.knowledge import sample_data

SF_TESTS = Path(__file__).resolve().parents[1] / "backends" / "snowflake"
sys.path.insert(0, str(SF_TESTS))
fakesnow_shim = pytest.importorskip("fakesnow_shim")
import sf_fakes  # noqa: E402 - the Snowflake backend tests' stand-ins

ENV = fakesnow_shim.ENV  # the account the Snowflake backend tests pretend to be
TODAY = date.today()
pytestmark = pytest.mark.filterwarnings("ignore:Arrow output on a DB-API result:UserWarning")


@pytest.fixture
def snowflake_backend(monkeypatch, tmp_path):
    for k in [k for k in os.environ if k.startswith(("SNOWFLAKE_", "PCB_SNOWFLAKE_"))]:
        monkeypatch.delenv(k, raising=False)
    for k, v in ENV.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("PCB_HOME", str(tmp_path / "home"))  # local scratch only (downloads, temp files)
    import snowflake.connector

    with fakesnow_shim.patched_snowflake() as recorder:
        with contextlib.closing(snowflake.connector.connect(account="pcb-test", user="u", password="p",
                                                            database="PCB", schema="PIPELINE")) as conn:
            conn.cursor().execute("CREATE STAGE IF NOT EXISTS MODEL_STAGE DIRECTORY = (ENABLE = TRUE)")
        yield recorder


load = sf_fakes.load_sample_frames  # sample rows the way defect_logs writes them


@pytest.fixture(scope="module")
def frames():
    return sample_data.generate(n_boards=120, days=14, seed=3, today=TODAY)


def test_dashboard_figures_are_the_same_on_snowflake_and_local(snowflake_backend, frames):
    from pcb_pipeline.backends import factory
    from pcb_pipeline.backends.local import DuckDBWarehouse
    from pcb_pipeline.backends.snowflake.warehouse import SnowflakeWarehouse

    sf = factory.warehouse()
    assert isinstance(sf, SnowflakeWarehouse)
    load(sf, frames)
    local = DuckDBWarehouse(":memory:")
    local.ensure_schema()
    sample_data.load_into(local, frames)
    rng = data.DateRange(TODAY - timedelta(days=13), TODAY)
    assert data.kpis(sf, rng) == data.kpis(local, rng)
    assert data.kpis(sf, rng)["boards_inspected"] > 0
    assert data.defect_pareto(sf, rng).to_dict("records") == data.defect_pareto(local, rng).to_dict("records")
    for dim in data.DIMENSIONS:
        a = data.breakdown(sf, dim, rng).sort_values(dim).reset_index(drop=True)
        b = data.breakdown(local, dim, rng).sort_values(dim).reset_index(drop=True)
        assert a.astype(str).to_dict("records") == b.astype(str).to_dict("records"), dim
    assert data.data_bounds(sf) == data.data_bounds(local)


def test_dashboard_page_on_the_snowflake_backend(snowflake_backend, frames):
    from streamlit.testing.v1 import AppTest

    from pcb_pipeline.backends import factory

    load(factory.warehouse(), frames)
    at = AppTest.from_file(str(Path(vision.__file__).parent / "views" / "dashboard.py"), default_timeout=120).run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    cards = {m.label: m.value for m in at.metric}
    assert int(cards["Boards inspected"].replace(",", "")) > 0
    assert len(list(at.get("vega_lite_chart"))) == 1 + len(data.DIMENSIONS)


def test_uploads_and_stage_boards_on_the_snowflake_stage(snowflake_backend, tmp_path):
    from pcb_pipeline.backends import factory
    from pcb_pipeline.backends.snowflake.stage import SnowflakeStage

    stage = factory.stage()
    assert isinstance(stage, SnowflakeStage)
    sys.path.insert(0, str(Path(__file__).parent))
    from test_app_vision import board

    payload = board()
    path = vision.write_upload(stage, payload, "../../../odd name!.jpg", tmp_path)
    assert path.startswith("uploads/") and path.endswith("_odd_name.jpg")
    assert [f.path for f in stage.list("uploads")] == [path]
    assert stage.get_file(path, tmp_path / "back.jpg").read_bytes() == payload
    (tmp_path / "img.jpg").write_bytes(payload)
    (tmp_path / "lab.txt").write_text("10 10 40 40 1\n")
    stage.put_file(tmp_path / "img.jpg", "raw/deeppcb/PCBData/group7/7/7000_test.jpg")
    stage.put_file(tmp_path / "lab.txt", "raw/deeppcb/PCBData/group7/7_not/7000.txt")
    boards = vision.list_stage_boards(stage)
    assert [(b.board_id, b.label_path) for b in boards] == [("7000", "raw/deeppcb/PCBData/group7/7_not/7000.txt")]
    assert vision.fetch_bytes(stage, boards[0].image_path, tmp_path / "cache") == payload
    gt = vision.ground_truth(stage, boards[0], (640, 640), tmp_path / "cache")
    assert len(gt) == 1 and gt[0].class_id == 0


# ------------------------------------------------------------------------------------------------------- chat
HOSTILE = "'; DROP TABLE DEFECT_LOGS; --"


@pytest.fixture
def chat_backend(snowflake_backend, frames, monkeypatch):
    """Rows in the (fake) warehouse, SOP chunks published to Cortex Search by the Dagster resource; returns the
    played Cortex Search api and the recorder."""
    from test_sf_search_index import CHUNKS

    from pcb_pipeline.backends import factory
    from pcb_pipeline.backends.snowflake import connect
    from pcb_pipeline.backends.snowflake.config import from_env
    from pcb_pipeline.defs.snowflake_resources import SnowflakeSearchIndexResource

    # the local engine on Snowflake's warehouse; Cortex Analyst's own path (played REST transport, visible fallback)
    # is tested in backends/snowflake/test_sf_ask.py
    monkeypatch.setenv("PCB_DATA_ANALYST", "local")
    load(factory.warehouse(), frames)
    SnowflakeSearchIndexResource(snowflake=connect.snowflake_resource(from_env())).publish(CHUNKS)
    api = sf_fakes.play_cortex_search(monkeypatch, snowflake_backend, fakesnow_shim.connect_factory())
    snowflake_backend.clear()
    return api, snowflake_backend


def _counts() -> dict[str, int]:
    from pcb_pipeline.backends import factory

    wh = factory.warehouse()
    return {t: int(wh.query(f"SELECT COUNT(*) AS n FROM {t}")["n"][0])
            for t in ("DEFECT_LOGS", "BOARD_INSPECTIONS", "PCB_METADATA", "SOP_CHUNKS")}


def _vision_lab():
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(Path(vision.__file__).parent / "views" / "vision_lab.py"), default_timeout=120).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _ask(at, mode: str, question: str):
    at.radio(key="chat_mode").set_value(mode).run()
    at.chat_input(key="chat_input").set_value(question).run()
    assert not at.exception, [e.value for e in at.exception]
    return [m.value for m in at.markdown]


def test_chat_on_snowflake_manuals_from_cortex_search_data_from_the_warehouse(chat_backend):
    from pcb_pipeline.app import chat
    from pcb_pipeline.knowledge.snowflake_search import AI_COMPLETE_SQL_PYFORMAT, RESULT_COLUMNS, SERVICE_NAME

    api, recorder = chat_backend
    at = _vision_lab()

    # Query Manuals: the Cortex Search service over the published SOP_CHUNKS, AI_COMPLETE, cited passages
    question = "Is a mousebite acceptable under Class 2?"
    md = _ask(at, chat.QUERY_MANUALS, question)
    [(db, schema, name, req)] = api.calls
    assert (db, schema, name, req.query, req.columns, req.filter) == ("PCB", "PIPELINE", SERVICE_NAME, question,
                                                                      RESULT_COLUMNS, None)
    assert [r.statement for r in recorder.records] == [AI_COMPLETE_SQL_PYFORMAT]
    assert "**Sources**" in md
    cited = [t for t in md if t.startswith("- [")]
    assert cited and all("PCB-SOP-2" in t and ".pdf, page " in t for t in cited), md
    assert "- [1] PCB-SOP-203_mousebite_repair.pdf, page 2 (Etching)" in cited  # the Class 2 passage ranks first
    assert any(t.startswith("Under Class 2 a mousebite that reduces conductor width") for t in md)

    # Query Data: a guarded SELECT that ran on the Snowflake warehouse adapter, rows shown
    recorder.clear()
    _ask(at, chat.QUERY_DATA, "How many defects per factory line?")
    [sql] = [c.value for c in at.code]
    assert " ".join(sql.split()) in recorder.statements("fakesnow")
    table = at.dataframe[-1].value
    assert len(table) > 0 and table.shape[1] == 2
    assert int(table.iloc[:, 1].sum()) == _counts()["DEFECT_LOGS"]  # every defect row, counted on Snowflake


def test_chat_on_snowflake_hostile_questions_change_nothing(chat_backend):
    from pcb_pipeline.app import chat, ui
    from pcb_pipeline.knowledge.snowflake_search import AI_COMPLETE_SQL_PYFORMAT

    api, recorder = chat_backend
    before = _counts()
    recorder.clear()
    for question in (HOSTILE, "SELECT * FROM DEFECT_LOGS; DROP TABLE DEFECT_LOGS"):
        reply = ui.ask(chat.QUERY_DATA, question)
        assert not reply["error"] and not reply["answered"] and reply["sql"] is None and reply["rows"] == []
        assert reply["text"].startswith("Cannot answer")
    reply = ui.ask(chat.QUERY_MANUALS, f"How do I repair a short? {HOSTILE}")
    assert not reply["error"] and reply["citations"]
    assert api.calls[-1][3].query == f"How do I repair a short? {HOSTILE}"  # a search string, not SQL
    sent = recorder.statements()
    assert AI_COMPLETE_SQL_PYFORMAT in sent  # the question travels only as a bound parameter
    assert not any("DROP" in s.upper() or "DELETE" in s.upper() for s in sent), sent
    assert _counts() == before
