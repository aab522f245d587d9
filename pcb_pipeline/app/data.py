"""Executive Dashboard data logic, without Streamlit: KPI SQL (Snowflake dialect, run via the Warehouse interface),
the defect Pareto, breakdowns, and the false-call figures against the legacy AOI baseline read from the stage.

Every figure is a metric of the semantic model (sql/semantic_model.yaml, rule DISP-1 of manual PCB-QA-100), taken
from the model rather than restated here: yield rate = yield_rate_percentage, scrap rate = scrap_rate_percentage,
boards = inspected_boards / passed_boards / scrapped_boards (BOARD_INSPECTIONS), defects = defect_count (DEFECT_LOGS).
Every query is a single read-only SELECT built with sqlglot, with dates rendered from `datetime.date` values (no user
text in SQL).
"""
from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path

import pandas as pd
from sqlglot import exp

from pcb_pipeline.core.detection_metrics import AT_AOI_RECALL
from pcb_pipeline.knowledge.semantic_model import load_semantic_model

INSPECTIONS, DEFECTS = "board_inspections", "defect_logs"  # logical tables of the semantic model
# DISP-1: more than this many defects -> SCRAP; read from the model's scrapped_boards, COUNT_IF(defect_count > 6)
SCRAP_DEFECT_LIMIT = int(load_semantic_model().metric_expr(INSPECTIONS, "scrapped_boards").find(exp.GT).expression.name)
KPI_METRICS = {"boards_inspected": "inspected_boards", "boards_passed": "passed_boards",
               "boards_scrapped": "scrapped_boards", "yield_rate_pct": "yield_rate_percentage",
               "scrap_rate_pct": "scrap_rate_percentage"}

# Breakdown dimensions: label -> SQL expression over BOARD_INSPECTIONS b LEFT JOIN PCB_METADATA m.
DIMENSIONS: dict[str, str] = {
    "Factory line": "COALESCE(b.factory_line_id, m.factory_line_id, 'UNKNOWN')",
    "Product type": "COALESCE(m.product_type, 'UNKNOWN')",
    "Shift": "COALESCE(m.production_shift, 'UNKNOWN')",
}

# Where the evaluation report (with `aoi_baseline` / `fpr_reduction`) may sit on the stage, most specific first.
EVALUATION_PATHS = ("models/evaluation.json", "evaluation/evaluation.json", "models/evaluation/evaluation.json")


@dataclass(frozen=True)
class DateRange:
    start: date
    end: date  # inclusive

    def __post_init__(self):
        if not isinstance(self.start, date) or not isinstance(self.end, date):
            raise TypeError("DateRange needs datetime.date values")
        if self.end < self.start:
            raise ValueError(f"the end date {self.end} is before the start date {self.start}")

    def where(self, column: str = "timestamp") -> str:
        """`column >= start AND column < end + 1 day`, Snowflake dialect, from date objects only."""
        start = _as_date(self.start).isoformat()
        stop = (_as_date(self.end) + timedelta(days=1)).isoformat()
        return f"{column} >= TO_TIMESTAMP_NTZ('{start} 00:00:00') AND {column} < TO_TIMESTAMP_NTZ('{stop} 00:00:00')"


def _as_date(d: date) -> date:
    return d.date() if isinstance(d, datetime) else d


# ----------------------------------------------------------------------------------------------------------- SQL
def date_bounds_sql() -> str:
    return "SELECT MIN(timestamp) AS first_ts, MAX(timestamp) AS last_ts, COUNT(*) AS n FROM BOARD_INSPECTIONS"


def _metric(name: str, table: str = INSPECTIONS, alias: str | None = None) -> exp.Expression:
    return load_semantic_model().metric_expr(table, name, alias)


def _physical(table: str) -> str:
    return load_semantic_model().tables[table].physical()


def kpi_sql(rng: DateRange) -> str:
    columns = [exp.alias_(_metric(metric), name) for name, metric in KPI_METRICS.items()]
    return exp.select(*columns).from_(_physical(INSPECTIONS)).where(rng.where("timestamp")).sql(dialect="snowflake")


def defects_found_sql(rng: DateRange) -> str:
    return exp.select(exp.alias_(_metric("defect_count", DEFECTS), "defects_found")).from_(_physical(DEFECTS)) \
        .where(rng.where("timestamp")).sql(dialect="snowflake")


def pareto_sql(rng: DateRange) -> str:
    defect_type = _metric("defect_type", DEFECTS)
    return exp.select(defect_type, exp.alias_(_metric("defect_count", DEFECTS), "defects")) \
        .from_(_physical(DEFECTS)).where(rng.where("timestamp")).group_by(defect_type.copy()).sql(dialect="snowflake")


def breakdown_sql(dimension: str, rng: DateRange) -> str:
    if dimension not in DIMENSIONS:
        raise ValueError(f"unknown breakdown {dimension!r}: choose one of {sorted(DIMENSIONS)}")
    group = exp.maybe_parse(DIMENSIONS[dimension], dialect="snowflake")
    defects = exp.func("COALESCE", exp.func("SUM", _metric("defects_on_board", alias="b")), exp.Literal.number(0))
    columns = [exp.alias_(group, "grp"), exp.alias_(_metric("inspected_boards", alias="b"), "boards_inspected"),
               exp.alias_(defects, "defects_found"),
               exp.alias_(_metric("yield_rate_percentage", alias="b"), "yield_rate_pct"),
               exp.alias_(_metric("scrap_rate_percentage", alias="b"), "scrap_rate_pct")]
    metadata = exp.alias_(exp.to_table(_physical("pcb_metadata")), "m", table=True)
    return exp.select(*columns).from_(exp.alias_(exp.to_table(_physical(INSPECTIONS)), "b", table=True)) \
        .join(metadata, on="b.board_id = m.board_id", join_type="LEFT").where(rng.where("b.timestamp")) \
        .group_by(group.copy()).order_by("defects_found DESC", exp.Ordered(this=exp.column("grp"), nulls_first=False)) \
        .sql(dialect="snowflake")


# ------------------------------------------------------------------------------------------------------ queries
def _query(warehouse, sql: str, retries: int = 3) -> pd.DataFrame:
    """Run a read; a warehouse briefly locked by a writer (DuckDB allows one) is retried, other errors raise."""
    for attempt in range(retries):
        try:
            df = warehouse.query(sql)
            df.columns = [str(c).lower() for c in df.columns]  # Snowflake returns upper-case names
            return df
        except Exception as e:  # noqa: BLE001 - backend-specific lock errors have no common type
            if "lock" not in str(e).lower() or attempt == retries - 1:
                raise
            time.sleep(0.3 * (attempt + 1))
    raise AssertionError("unreachable")


def default_range(warehouse, today: date | None = None, days: int = 30) -> DateRange:
    """The last `days` days up to the latest inspection (or today when there is none)."""
    df = _query(warehouse, date_bounds_sql())
    last = df["last_ts"].iloc[0] if len(df) else None
    first = df["first_ts"].iloc[0] if len(df) else None
    if last is None or pd.isna(last):
        end = today or date.today()
        return DateRange(end - timedelta(days=days - 1), end)
    end = pd.Timestamp(last).date()
    start = max(pd.Timestamp(first).date(), end - timedelta(days=days - 1))
    return DateRange(start, end)


def data_bounds(warehouse) -> tuple[date, date] | None:
    df = _query(warehouse, date_bounds_sql())
    if not len(df) or pd.isna(df["last_ts"].iloc[0]):
        return None
    return pd.Timestamp(df["first_ts"].iloc[0]).date(), pd.Timestamp(df["last_ts"].iloc[0]).date()


def kpis(warehouse, rng: DateRange) -> dict:
    """{"boards_inspected", "boards_passed", "boards_scrapped", "yield_rate_pct", "scrap_rate_pct",
    "defects_found"}; rates are None when no board was inspected in the range."""
    row = _query(warehouse, kpi_sql(rng)).iloc[0].to_dict()
    out = {k: _plain(v) for k, v in row.items()}
    out["boards_inspected"] = int(out.get("boards_inspected") or 0)
    for k in ("boards_passed", "boards_scrapped"):
        out[k] = int(out.get(k) or 0)
    out["defects_found"] = int(_query(warehouse, defects_found_sql(rng))["defects_found"].iloc[0] or 0)
    return out


def _plain(v):
    if v is None or (isinstance(v, float) and v != v) or (not isinstance(v, str) and pd.isna(v)):
        return None
    return v.item() if hasattr(v, "item") else v


def pareto(counts: pd.DataFrame, category: str = "detected_class", value: str = "defects") -> pd.DataFrame:
    """Sort categories by count (desc, ties by name) and add cumulative count and cumulative percentage.

    Returns columns [category, value, share_pct, cumulative, cumulative_pct]; an empty frame stays empty."""
    cols = [category, value, "share_pct", "cumulative", "cumulative_pct"]
    if counts is None or counts.empty:
        return pd.DataFrame(columns=cols)
    df = counts[[category, value]].copy()
    df[value] = df[value].astype(int)
    df = df.groupby(category, as_index=False)[value].sum()
    df = df.sort_values([value, category], ascending=[False, True], kind="mergesort").reset_index(drop=True)
    total = int(df[value].sum())
    df["share_pct"] = (100.0 * df[value] / total).round(2) if total else 0.0
    df["cumulative"] = df[value].cumsum()
    df["cumulative_pct"] = (100.0 * df["cumulative"] / total).round(2) if total else 0.0
    return df[cols]


def defect_pareto(warehouse, rng: DateRange) -> pd.DataFrame:
    return pareto(_query(warehouse, pareto_sql(rng)))


def breakdown(warehouse, dimension: str, rng: DateRange) -> pd.DataFrame:
    df = _query(warehouse, breakdown_sql(dimension, rng))
    return df.rename(columns={"grp": dimension})


# --------------------------------------------------------------------------------------- false calls vs AOI
@dataclass(frozen=True)
class FalseCallFigures:
    model_fpr: float | None  # false calls / all calls of the model at the matched recall
    baseline_fpr: float | None  # the same for the legacy AOI inspector
    fpr_reduction: float | None  # 1 - model_fpr / baseline_fpr
    target_recall: float | None
    source: str  # stage path of the report

    @property
    def measured(self) -> bool:
        return self.fpr_reduction is not None or (self.model_fpr is not None and self.baseline_fpr is not None)


def _num(v) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if f == f else None


def _fpr_of(d) -> float | None:
    if not isinstance(d, dict):
        return _num(d)
    for k in ("fpr", "false_call_rate", "false_positive_rate"):
        if k in d:
            return _num(d[k])
    return None


def parse_false_call_report(report: dict, source: str = "") -> FalseCallFigures | None:
    """Read the figures from an evaluation report with `aoi_baseline` and/or `fpr_reduction` keys.

    Accepted shapes: the `compare_at_matched_recall` dict ({"model": {"fpr"}, "baseline": {"fpr"}, "fpr_reduction",
    "target_recall"}) at the top level or under `aoi_baseline`; `aoi_baseline` as the baseline's own operating point
    ({"fpr": ...}) beside a top-level `model`/`fpr_reduction`. None when neither key is present."""
    if not isinstance(report, dict) or not ({"aoi_baseline", "fpr_reduction"} & set(report)):
        return None
    aoi = report.get("aoi_baseline")
    nested = aoi if isinstance(aoi, dict) and ("baseline" in aoi or "fpr_reduction" in aoi) else {}
    top = _num(report.get("fpr_reduction"))  # `evaluate` puts a per-recall dict here and the headline in aoi_baseline
    reduction = top if top is not None else _num(nested.get("fpr_reduction"))
    baseline_fpr = _fpr_of(nested.get("baseline")) if nested else _fpr_of(aoi)
    model_fpr = _fpr_of(nested.get("model")) if nested.get("model") is not None else _fpr_of(report.get("model"))
    if reduction is None and model_fpr is not None and baseline_fpr:
        reduction = 1.0 - model_fpr / baseline_fpr
    recall = _num(report.get("target_recall"))
    recall = recall if recall is not None else _num(nested.get("target_recall"))
    return FalseCallFigures(model_fpr, baseline_fpr, reduction, recall, source)


def false_call_figures_from_metrics(metrics: dict, source: str) -> FalseCallFigures | None:
    """The figures a model's training recorded against the AOI on its validation boards (flat registry metrics
    named by `core.detection_metrics.comparison_metrics`, at the AOI's operating recall), else None."""
    def get(figure: str) -> float | None:
        return _num(metrics.get(f"{figure}_{AT_AOI_RECALL}"))

    figures = FalseCallFigures(get("fpr"), get("aoi_fpr"), get("fpr_reduction"), get("target_recall"), source)
    return figures if figures.measured else None


def load_false_call_figures(stage, champion_run_id: str | None = None,
                            work_dir: Path | None = None) -> FalseCallFigures | None:
    """The first evaluation report on the stage that carries the baseline comparison, else None ("not measured").

    Looks at models/<champion run id>/evaluation.json first, then EVALUATION_PATHS. Unreadable files are skipped."""
    candidates = ([f"models/{champion_run_id}/evaluation.json"] if champion_run_id else []) + list(EVALUATION_PATHS)
    with tempfile.TemporaryDirectory(dir=work_dir) as tmp:
        for i, path in enumerate(candidates):
            try:
                if not stage.list(path):
                    continue
                local = stage.get_file(path, Path(tmp) / f"{i}.json")
                figures = parse_false_call_report(json.loads(Path(local).read_text()), path)
            except Exception:  # noqa: BLE001 - a bad or missing report means "not measured", not a broken page
                continue
            if figures is not None:
                return figures
    return None
