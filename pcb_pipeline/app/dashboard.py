"""Executive Dashboard page: KPI cards, defect Pareto, breakdowns, date filter, a plain-English question box."""
from __future__ import annotations

from datetime import date

import streamlit as st

from . import chat, charts, data, ui

DATES_KEY = "dash_dates"


@st.cache_data(ttl=30, show_spinner=False)
def _bounds(key: str):
    return data.data_bounds(ui.get_warehouse())


@st.cache_data(ttl=30, show_spinner=False)
def _figures(key: str, start: date, end: date) -> dict:
    wh, rng = ui.get_warehouse(), data.DateRange(start, end)
    return {"kpis": data.kpis(wh, rng), "pareto": data.defect_pareto(wh, rng),
            "breakdowns": {dim: data.breakdown(wh, dim, rng) for dim in data.DIMENSIONS}}


@st.cache_data(ttl=120, show_spinner=False)
def _false_calls(key: str):
    """An evaluation report on the stage first (`pcb-pipeline evaluate --publish`), else what the champion's
    training measured against the AOI on its validation boards."""
    try:
        champion = ui.champion()
    except Exception:  # noqa: BLE001 - no champion: look at the generic locations only
        champion = None
    from pcb_pipeline import settings

    report = data.load_false_call_figures(ui.get_stage(), champion.run_id if champion else None,
                                          settings.paths().work)
    if report is None and champion is not None:
        return data.false_call_figures_from_metrics(champion.metrics, f"the validation boards of champion "
                                                                      f"v{champion.version}'s training")
    return report


def _pct(v) -> str:
    return "n/a" if v is None else f"{float(v):.1f}%"


def _date_range(bounds) -> data.DateRange | None:
    first, last = bounds
    default = (max(first, date.fromordinal(last.toordinal() - 29)), last)
    picked = st.date_input("Inspection dates", value=default, key=DATES_KEY,
                           help="Boards inspected between these dates (inclusive).")
    if isinstance(picked, (tuple, list)):
        if len(picked) != 2:
            st.info("Pick an end date to complete the range.")
            return None
        start, end = picked
    else:
        start = end = picked
    try:
        return data.DateRange(start, end)
    except ValueError as e:
        st.error(str(e))
        return None


def _kpi_cards(k: dict, fc) -> None:
    c1, c2, c3, c4, c5 = st.columns([1, 1, 1, 1, 1.5])
    c1.metric("Yield rate", _pct(k["yield_rate_pct"]), help="First-pass yield: boards with no defect / inspected.")
    c2.metric("Boards inspected", f"{k['boards_inspected']:,}")
    c3.metric("Defects found", f"{k['defects_found']:,}")
    c4.metric("Scrap rate", _pct(k["scrap_rate_pct"]),
              help=f"Boards with more than {data.SCRAP_DEFECT_LIMIT} defects (DISP-1) / inspected.")
    if fc is not None and fc.measured:
        value = _pct(100 * fc.model_fpr) if fc.model_fpr is not None else "measured"
        delta = (f"{-100 * fc.fpr_reduction:+.0f}% vs legacy AOI" if fc.fpr_reduction is not None else None)
        recall = f" at matched recall {fc.target_recall:.2f}" if fc.target_recall is not None else ""
        base = f"; legacy AOI {_pct(100 * fc.baseline_fpr)}" if fc.baseline_fpr is not None else ""
        c5.metric("False-call rate", value, delta=delta, delta_color="inverse",
                  help=f"False calls / all calls of the model{recall}{base} (from {fc.source}).")
    else:
        c5.metric("False-call rate vs AOI", "not measured",
                  help="No evaluation report with an `aoi_baseline` comparison on the stage yet "
                       "(models/evaluation.json) and the champion's training did not measure one: run "
                       "`pcb-pipeline evaluate --publish`.")


def _question_box() -> None:
    st.subheader("Ask the data")
    with st.form("dash_question_form", clear_on_submit=False):
        q = st.text_input("Question", key="dash_question",
                          placeholder="e.g. Which factory line had the most shorts last week?")
        asked = st.form_submit_button("Ask")
    if asked:
        st.session_state["dash_answer"] = ui.ask(chat.QUERY_DATA, q)
    msg = st.session_state.get("dash_answer")
    if msg:
        ui.render_message(msg)


def render() -> None:
    st.title("Executive Dashboard")
    key = ui.backend_key()
    try:
        bounds = _bounds(key)
    except Exception as e:  # noqa: BLE001 - warehouse unreachable: say so, keep the page alive
        st.error(f"The warehouse could not be read: {type(e).__name__}: {e}")
        _question_box()
        return
    if bounds is None:
        st.info("No boards have been inspected yet. Run `pcb-pipeline demo` (or materialise `defect_logs`) to fill "
                "BOARD_INSPECTIONS and DEFECT_LOGS.")
        _question_box()
        return
    rng = _date_range(bounds)
    if rng is None:
        _question_box()
        return
    figs = _figures(key, rng.start, rng.end)
    _kpi_cards(figs["kpis"], _false_calls(key))
    st.caption(f"{rng.start:%d %b %Y} to {rng.end:%d %b %Y} | inspections on record: {bounds[0]:%d %b %Y} to "
               f"{bounds[1]:%d %b %Y}")

    left, right = st.columns([3, 2])
    with left:
        p = figs["pareto"]
        if p.empty:
            st.info("No defects logged in this date range.")
        else:
            st.altair_chart(charts.pareto_chart(p), width="stretch")
    with right:
        st.subheader("Defects by class")
        st.dataframe(figs["pareto"].rename(columns={"detected_class": "class", "share_pct": "share %",
                                                    "cumulative_pct": "cumulative %"}),
                     hide_index=True)

    st.subheader("Breakdowns")
    tabs = st.tabs(list(data.DIMENSIONS))
    for tab, dim in zip(tabs, data.DIMENSIONS):
        with tab:
            df = figs["breakdowns"][dim]
            if df.empty:
                st.info("No inspections in this date range.")
                continue
            a, b = st.columns([3, 2])
            a.altair_chart(charts.breakdown_chart(df, dim), width="stretch")
            b.dataframe(df.rename(columns={"boards_inspected": "boards", "defects_found": "defects",
                                           "yield_rate_pct": "yield %", "scrap_rate_pct": "scrap %"}),
                        hide_index=True)
    _question_box()
