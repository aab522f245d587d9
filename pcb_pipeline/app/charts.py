"""Altair charts for the dashboard (no Streamlit import: the specs are testable on their own)."""
from __future__ import annotations

import altair as alt
import pandas as pd


def pareto_chart(pareto_df: pd.DataFrame, category: str = "detected_class", value: str = "defects") -> alt.LayerChart:
    """Bars of defect counts (left axis), sorted descending, with the cumulative percentage as a line (right axis)."""
    order = list(pareto_df[category])
    base = alt.Chart(pareto_df).encode(
        x=alt.X(f"{category}:N", sort=order, title="Defect class", axis=alt.Axis(labelAngle=0)))
    bars = base.mark_bar(color="#4c78a8").encode(
        y=alt.Y(f"{value}:Q", title="Defects"),
        tooltip=[alt.Tooltip(f"{category}:N", title="class"), alt.Tooltip(f"{value}:Q", title="defects"),
                 alt.Tooltip("share_pct:Q", title="share %")])
    line = base.mark_line(color="#e45756", point=True).encode(
        y=alt.Y("cumulative_pct:Q", title="Cumulative %", scale=alt.Scale(domain=[0, 100]),
                axis=alt.Axis(orient="right")),
        tooltip=[alt.Tooltip(f"{category}:N", title="class"), alt.Tooltip("cumulative_pct:Q", title="cumulative %")])
    rule = alt.Chart(pd.DataFrame({"cumulative_pct": [80]})).mark_rule(strokeDash=[4, 4], color="#999").encode(
        y=alt.Y("cumulative_pct:Q"))  # the 80 % line of the Pareto rule, on the cumulative axis
    return alt.layer(bars, alt.layer(line, rule)).resolve_scale(y="independent").properties(
        height=320, title="Defect Pareto")


def breakdown_chart(df: pd.DataFrame, dimension: str) -> alt.Chart:
    """Yield rate per group as bars, annotated with boards inspected."""
    return alt.Chart(df).mark_bar(color="#54a24b").encode(
        x=alt.X(f"{dimension}:N", sort="-y", title=dimension, axis=alt.Axis(labelAngle=0)),
        y=alt.Y("yield_rate_pct:Q", title="Yield %", scale=alt.Scale(domain=[0, 100])),
        tooltip=[f"{dimension}:N", "boards_inspected:Q", "defects_found:Q", "yield_rate_pct:Q", "scrap_rate_pct:Q"],
    ).properties(height=260, title=f"Yield by {dimension.lower()}")
