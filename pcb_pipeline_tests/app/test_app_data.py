"""Dashboard data logic without Streamlit: KPI SQL run through a real (in-memory DuckDB) Warehouse, checked against
pandas on the same rows; the Pareto; the false-call figures read from the stage."""
from __future__ import annotations

import json
from datetime import date, timedelta

import pandas as pd
import pytest

from pcb_pipeline.app import charts, data
from pcb_pipeline.backends.local import DuckDBWarehouse, LocalStage
from pcb_pipeline.knowledge import sample_data

TODAY = date(2026, 3, 31)


@pytest.fixture(scope="module")
def frames():
    return sample_data.generate(n_boards=300, days=60, seed=5, today=TODAY)


@pytest.fixture(scope="module")
def wh(frames):
    w = DuckDBWarehouse(":memory:")
    w.ensure_schema()
    sample_data.load_into(w, frames)
    return w


def _in(df, rng):
    ts = pd.to_datetime(df["timestamp"])
    return df[(ts >= pd.Timestamp(rng.start)) & (ts < pd.Timestamp(rng.end + timedelta(days=1)))]


def test_date_range_sql_is_built_from_dates_only():
    rng = data.DateRange(date(2026, 1, 1), date(2026, 1, 31))
    assert rng.where() == ("timestamp >= TO_TIMESTAMP_NTZ('2026-01-01 00:00:00') AND "
                           "timestamp < TO_TIMESTAMP_NTZ('2026-02-01 00:00:00')")
    with pytest.raises(ValueError, match="before the start"):
        data.DateRange(date(2026, 2, 1), date(2026, 1, 1))
    with pytest.raises(TypeError):
        data.DateRange("2026-01-01'; DROP TABLE DEFECT_LOGS; --", date(2026, 1, 1))


@pytest.mark.parametrize("days", [7, 30, 60])
def test_kpis_match_pandas_on_the_same_rows(wh, frames, days):
    rng = data.DateRange(TODAY - timedelta(days=days - 1), TODAY)
    k = data.kpis(wh, rng)
    insp, logs = _in(frames["BOARD_INSPECTIONS"], rng), _in(frames["DEFECT_LOGS"], rng)
    assert k["boards_inspected"] == len(insp) > 0
    assert k["defects_found"] == len(logs) == int(insp["defect_count"].sum())
    assert k["boards_passed"] == int((insp["defect_count"] == 0).sum())
    assert k["boards_scrapped"] == int((insp["defect_count"] > 6).sum())
    assert k["yield_rate_pct"] == pytest.approx(round(100 * (insp["defect_count"] == 0).mean(), 2))
    assert k["scrap_rate_pct"] == pytest.approx(round(100 * (insp["defect_count"] > 6).mean(), 2))


def test_kpis_of_an_empty_range_are_zero_not_errors(wh):
    k = data.kpis(wh, data.DateRange(date(2001, 1, 1), date(2001, 1, 2)))
    assert k["boards_inspected"] == 0 and k["defects_found"] == 0
    assert k["yield_rate_pct"] is None and k["scrap_rate_pct"] is None


def test_pareto_sorted_with_cumulative_percentage():
    counts = pd.DataFrame({"detected_class": ["spur", "open", "short", "copper"], "defects": [10, 50, 30, 10]})
    p = data.pareto(counts)
    assert list(p["detected_class"]) == ["open", "short", "copper", "spur"]  # ties broken by name
    assert list(p["cumulative"]) == [50, 80, 90, 100]
    assert list(p["cumulative_pct"]) == [50.0, 80.0, 90.0, 100.0]
    assert p["share_pct"].sum() == pytest.approx(100.0)
    assert data.pareto(pd.DataFrame(columns=["detected_class", "defects"])).empty


def test_defect_pareto_from_the_warehouse(wh, frames):
    rng = data.DateRange(TODAY - timedelta(days=59), TODAY)
    p = data.defect_pareto(wh, rng)
    expected = _in(frames["DEFECT_LOGS"], rng)["detected_class"].value_counts()
    assert dict(zip(p["detected_class"], p["defects"])) == expected.to_dict()
    assert p["defects"].is_monotonic_decreasing and p["cumulative_pct"].iloc[-1] == 100.0
    chart = charts.pareto_chart(p).to_dict()
    marks = [layer.get("mark", {}).get("type") if isinstance(layer.get("mark"), dict) else layer.get("mark")
             for layer in chart["layer"]]
    assert "bar" in marks  # bars plus a layered cumulative line on an independent axis
    assert chart["resolve"]["scale"]["y"] == "independent"


@pytest.mark.parametrize("dimension,column", [("Factory line", "factory_line_id"), ("Product type", "product_type"),
                                              ("Shift", "production_shift")])
def test_breakdowns_by_line_product_and_shift(wh, frames, dimension, column):
    rng = data.DateRange(TODAY - timedelta(days=59), TODAY)
    df = data.breakdown(wh, dimension, rng)
    insp = _in(frames["BOARD_INSPECTIONS"], rng).merge(frames["PCB_METADATA"], on="board_id", suffixes=("", "_m"))
    expected = insp.groupby(column)["defect_count"].agg(["count", "sum"])
    got = df.set_index(dimension)
    assert set(got.index) == set(expected.index)
    for g, row in expected.iterrows():
        assert got.loc[g, "boards_inspected"] == row["count"] and got.loc[g, "defects_found"] == row["sum"]
    assert charts.breakdown_chart(df, dimension).to_dict()["mark"]["type"] == "bar"
    with pytest.raises(ValueError, match="unknown breakdown"):
        data.breakdown_sql("1; DROP TABLE X", rng)


def test_default_range_ends_at_the_latest_inspection(wh):
    rng = data.default_range(wh, days=30)
    assert rng.end == TODAY and rng.start == TODAY - timedelta(days=29)
    empty = DuckDBWarehouse(":memory:")
    empty.ensure_schema()
    assert data.data_bounds(empty) is None
    assert data.default_range(empty, today=TODAY).end == TODAY


def test_false_call_report_shapes():
    compare = {"target_recall": 0.8, "model": {"fpr": 0.1}, "baseline": {"fpr": 0.4}, "fpr_reduction": 0.75}
    f = data.parse_false_call_report({"aoi_baseline": compare}, "models/evaluation.json")
    assert (f.model_fpr, f.baseline_fpr, f.fpr_reduction, f.target_recall) == (0.1, 0.4, 0.75, 0.8) and f.measured
    f = data.parse_false_call_report({"model": {"fpr": 0.2}, "aoi_baseline": {"fpr": 0.5}})
    assert f.baseline_fpr == 0.5 and f.fpr_reduction == pytest.approx(0.6)
    f = data.parse_false_call_report({"fpr_reduction": 0.5})
    assert f.fpr_reduction == 0.5 and f.model_fpr is None and f.measured
    assert data.parse_false_call_report({"map50": 0.7}) is None
    assert data.parse_false_call_report([1, 2]) is None
    assert not data.parse_false_call_report({"aoi_baseline": None}).measured


def test_false_call_figures_from_a_champions_training_metrics():
    """The two-stage inspector's training records the comparison on its validation boards as flat registry
    metrics; a YOLO's training does not (no figures, not zeros)."""
    metrics = {"map50": 0.97, "fpr_aoi_recall": 0.02, "aoi_fpr_aoi_recall": 0.1, "fpr_reduction_aoi_recall": 0.8,
               "target_recall_aoi_recall": 0.97, "fpr_recall_0_99": 0.05}
    f = data.false_call_figures_from_metrics(metrics, "training")
    assert (f.model_fpr, f.baseline_fpr, f.fpr_reduction, f.target_recall, f.source) == (0.02, 0.1, 0.8, 0.97,
                                                                                        "training")
    assert data.false_call_figures_from_metrics({"map50": 0.9, "map50_95": 0.5}, "training") is None


def test_false_call_figures_from_the_evaluate_report_shape():
    """`pcb-pipeline evaluate --publish` (vision.evaluate): headline comparison inside aoi_baseline, a per-recall
    dict under fpr_reduction; and both None when the AOI baseline was not run."""
    headline = {"target_recall": 0.71, "model": {"fpr": 0.05, "false_calls_per_board": 0.2},
                "baseline": {"fpr": 0.25, "false_calls_per_board": 1.1}, "fpr_reduction": 0.8}
    report = {"map50": 0.9, "aoi_baseline": {"operating": {"recall": 0.71}, **headline},
              "fpr_reduction": {"class_agnostic": True, "at_aoi_operating_recall": {"fpr_reduction": 0.8}}}
    f = data.parse_false_call_report(report, "models/run/evaluation.json")
    assert (f.model_fpr, f.baseline_fpr, f.fpr_reduction, f.target_recall) == (0.05, 0.25, 0.8, 0.71)
    none = data.parse_false_call_report({"aoi_baseline": None, "fpr_reduction": None, "aoi_skipped": "no templates"})
    assert none is not None and not none.measured


def test_false_call_figures_from_the_stage(tmp_path):
    stage = LocalStage(tmp_path / "stage")
    assert data.load_false_call_figures(stage, "run1", tmp_path) is None  # "not measured"
    (tmp_path / "bad.json").write_text("{not json")
    stage.put_file(tmp_path / "bad.json", "models/run1/evaluation.json")  # unreadable: skipped
    report = {"aoi_baseline": {"model": {"fpr": 0.1}, "baseline": {"fpr": 0.3}, "fpr_reduction": 2 / 3}}
    (tmp_path / "e.json").write_text(json.dumps(report))
    stage.put_file(tmp_path / "e.json", "models/evaluation.json")
    f = data.load_false_call_figures(stage, "run1", tmp_path)
    assert f.source == "models/evaluation.json" and f.fpr_reduction == pytest.approx(2 / 3)
