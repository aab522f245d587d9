"""The app on PCB_BACKEND=snowflake, against fakesnow (patch mode, DuckDB underneath; the Snowflake tests' shim
emulates the stage commands fakesnow lacks). Not tested against a real Snowflake account.

The dashboard's SQL runs through the Snowflake warehouse adapter unchanged and gives the same figures as the local
DuckDB warehouse on the same rows; uploads and the board listing go through the Snowflake stage adapter. The Vision
Lab's model comes from the Snowflake Model Registry (Snowpark), which fakesnow cannot serve: not covered here."""
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

    with fakesnow_shim.patched_snowflake():
        with contextlib.closing(snowflake.connector.connect(account="pcb-test", user="u", password="p",
                                                            database="PCB", schema="PIPELINE")) as conn:
            conn.cursor().execute("CREATE STAGE IF NOT EXISTS MODEL_STAGE DIRECTORY = (ENABLE = TRUE)")
        yield


def load(warehouse, frames) -> None:
    """Sample rows through the Warehouse interface the way defect_logs writes them: replace_rows per batch.
    (The adapter's MERGE into DEFECT_LOGS' VARIANT column does not run on fakesnow 0.12.)"""
    warehouse.upsert("PCB_METADATA", ["board_id"], frames["PCB_METADATA"])
    for table in ("BOARD_INSPECTIONS", "DEFECT_LOGS"):
        for batch, rows in frames[table].groupby("batch_id"):
            warehouse.replace_rows(table, "batch_id", batch, rows)


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
