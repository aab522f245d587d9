"""The typed plan a question is read into: what to measure, by what, where, when, in which order."""
from __future__ import annotations

from dataclasses import dataclass, field

from sqlglot import exp

from ..semantic_model import LogicalTable, ModelColumn


class CannotAnswer(Exception):
    """The question cannot be mapped onto the semantic model; `suggestions` are questions that can."""

    def __init__(self, message: str, suggestions: list[str] | None = None):
        super().__init__(message)
        self.message = message
        self.suggestions = suggestions or []


@dataclass(frozen=True)
class Condition:
    """A boolean expression over one logical table's physical columns, e.g. `confidence_score < 0.5`."""

    table: str
    expr: exp.Expression
    label: str


@dataclass(frozen=True)
class Measure:
    """An aggregate over the base table: a metric of the model, an aggregated fact, or a ratio of rows.

    A ratio (`numerator` set) is 100 * the rows meeting every numerator condition / all rows, like the model's own
    yield and scrap rates."""

    name: str
    table: str
    expr: exp.Expression | None = None  # None for a ratio
    numerator: tuple[Condition, ...] = ()

    @property
    def is_ratio(self) -> bool:
        return bool(self.numerator)


@dataclass(frozen=True)
class Dimension:
    table: str
    column: ModelColumn

    @property
    def name(self) -> str:
        return self.column.name


@dataclass
class ValueFilter:
    dimension: Dimension
    values: list[str]


@dataclass(frozen=True)
class TimeWindow:
    """[lower, upper) on the base table's time dimension, as Snowflake expressions; either bound may be open."""

    lower: exp.Expression | None
    upper: exp.Expression | None
    label: str


@dataclass(frozen=True)
class Ranking:
    limit: int
    descending: bool


@dataclass
class Plan:
    base: LogicalTable
    measures: list[Measure]
    dimensions: list[Dimension] = field(default_factory=list)
    grain: str | None = None  # DAY | WEEK | MONTH: a time series
    filters: list[ValueFilter] = field(default_factory=list)
    conditions: list[Condition] = field(default_factory=list)
    window: TimeWindow | None = None
    ranking: Ranking | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def tables(self) -> list[str]:
        """The base table first, then every other table a part of the plan reads."""
        used = [d.table for d in self.dimensions] + [f.dimension.table for f in self.filters] + \
            [c.table for c in self.conditions] + [m.table for m in self.measures] + \
            [c.table for m in self.measures for c in m.numerator]
        names = [self.base.name]
        for t in used:
            if t not in names:
                names.append(t)
        return names


def interpret(plan: Plan) -> str:
    """The plan in words, shown beside the answer so a reader can tell what was computed."""
    parts = [", ".join(_measure_label(m) for m in plan.measures)]
    if plan.grain:
        parts.append(f"per {plan.grain.lower()}")
    if plan.dimensions:
        parts.append("by " + ", ".join(d.name for d in plan.dimensions))
    conds = [f"{f.dimension.name} {'=' if len(f.values) == 1 else 'in'} {', '.join(f.values)}" for f in plan.filters]
    conds += [c.label for c in plan.conditions]
    if plan.window:
        conds.append(f"time in {plan.window.label}")
    if conds:
        parts.append("where " + " and ".join(conds))
    if plan.ranking:
        parts.append(f"{'top' if plan.ranking.descending else 'bottom'} {plan.ranking.limit} by "
                     f"{plan.measures[0].name}")
    text = " ".join(parts) + f" (from {', '.join(plan.tables)})"
    if plan.notes:
        text += "; " + "; ".join(plan.notes)
    return text


def _measure_label(m: Measure) -> str:
    if not m.is_ratio:
        return m.name
    return f"{m.name} (percentage of {m.table} rows with {' and '.join(c.label for c in m.numerator)})"
