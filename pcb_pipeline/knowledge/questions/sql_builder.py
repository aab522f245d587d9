"""Plan -> one SELECT built as sqlglot expressions and rendered per dialect (Snowflake by default; the local
warehouse transpiles it like every other statement). Values are literals of the tree, never spliced text."""
from __future__ import annotations

from sqlglot import exp

from ..semantic_model import ModelColumn, SemanticModel, qualify_columns
from .plan import CannotAnswer, Measure, Plan


class _Aliases:
    """Table aliases when the plan joins (`d`, `p`, ...), none for one table."""

    def __init__(self, tables: list[str]):
        self.joined = len(tables) > 1
        self.names: dict[str, str] = {}
        for t in tables if self.joined else []:
            a = t[0]
            while a in self.names.values():
                a += t[len(a)] if len(a) < len(t) else "x"
            self.names[t] = a

    def column(self, table: str, expr: exp.Expression) -> exp.Expression:
        return qualify_columns(expr, self.names[table]) if self.joined else expr.copy()

    def table(self, model: SemanticModel, name: str) -> exp.Expression:
        t = exp.to_table(model.tables[name].physical(), dialect="snowflake")
        return exp.alias_(t, self.names[name], table=True) if self.joined else t


def build_select(plan: Plan, model: SemanticModel) -> exp.Select:
    names = _Aliases(plan.tables)
    select = exp.select(*_projections(plan, model, names)).from_(names.table(model, plan.base.name))
    for t in plan.tables[1:]:
        select = select.join(names.table(model, t), on=_join_condition(plan, model, t, names),
                             join_type=model.relationship(plan.base.name, t).sql_join.replace(" JOIN", ""))
    where = _where(plan, model, names)
    if where:
        select = select.where(*where)
    groups = ([_grain_expr(plan, model, names)] if plan.grain else []) + \
        [names.column(d.table, d.column.parsed()) for d in plan.dimensions]
    if groups:
        select = select.group_by(*groups)
    return _ordered(select, plan)


def plan_to_sql(plan: Plan, model: SemanticModel, dialect: str = "snowflake") -> str:
    return build_select(plan, model).sql(dialect=dialect)


def _projections(plan: Plan, model: SemanticModel, names: _Aliases) -> list[exp.Expression]:
    out = []
    if plan.grain:
        out.append(exp.alias_(_grain_expr(plan, model, names), plan.grain.lower()))
    for d in plan.dimensions:
        col = names.column(d.table, d.column.parsed())
        same = isinstance(col, exp.Column) and not col.table and col.name == d.name
        out.append(col if same else exp.alias_(col, d.name))
    out += [exp.alias_(_measure_expr(m, names), m.name) for m in plan.measures]
    return out


def _measure_expr(m: Measure, names: _Aliases) -> exp.Expression:
    if not m.is_ratio:
        return names.column(m.table, m.expr)
    hits = exp.func("COUNT_IF", exp.and_(*[names.column(c.table, c.expr) for c in m.numerator]))
    return percentage(hits, exp.Count(this=exp.Star()))


def percentage(part: exp.Expression, whole: exp.Expression) -> exp.Expression:
    """ROUND(100.0 * part / NULLIF(whole, 0), 2): how the model writes its own rates."""
    share = exp.Div(this=exp.Mul(this=exp.Literal.number("100.0"), expression=part),
                    expression=exp.func("NULLIF", whole, exp.Literal.number(0)))
    return exp.func("ROUND", share, exp.Literal.number(2))


def _join_condition(plan: Plan, model: SemanticModel, table: str, names: _Aliases) -> exp.Expression:
    rel = model.relationship(plan.base.name, table)
    pairs = [(model.tables[plan.base.name].columns[lc], model.tables[table].columns[rc]) for lc, rc in rel.columns]
    return exp.and_(*[names.column(plan.base.name, left.parsed()).eq(names.column(table, right.parsed()))
                      for left, right in pairs])


def _where(plan: Plan, model: SemanticModel, names: _Aliases) -> list[exp.Expression]:
    out = []
    for f in plan.filters:
        col = names.column(f.dimension.table, f.dimension.column.parsed())
        values = [exp.Literal.string(v) for v in f.values]
        out.append(col.eq(values[0]) if len(values) == 1 else col.isin(*values))
    out += [names.column(c.table, c.expr) for c in plan.conditions]
    if plan.window:
        table, column = time_dimension(plan, model)
        at = names.column(table, column.parsed())
        if plan.window.lower is not None:
            out.append(exp.GTE(this=at, expression=plan.window.lower.copy()))
        if plan.window.upper is not None:
            out.append(exp.LT(this=at.copy(), expression=plan.window.upper.copy()))
    return out


def _grain_expr(plan: Plan, model: SemanticModel, names: _Aliases) -> exp.Expression:
    table, column = time_dimension(plan, model)
    return exp.func("DATE_TRUNC", exp.Literal.string(plan.grain.lower()), names.column(table, column.parsed()))


def _ordered(select: exp.Select, plan: Plan) -> exp.Select:
    first = exp.column(plan.measures[0].name)
    if plan.ranking is not None:
        select = select.order_by(exp.Ordered(this=first, desc=plan.ranking.descending))
        if plan.grain:
            select = select.order_by(exp.column(plan.grain.lower()), append=True)
        return select.limit(int(plan.ranking.limit))
    if plan.grain:
        return select.order_by(exp.column(plan.grain.lower()))
    if plan.dimensions:
        return select.order_by(exp.Ordered(this=first, desc=True))
    return select


def time_dimension(plan: Plan, model: SemanticModel) -> tuple[str, ModelColumn]:
    """The base table's time dimension, else that of a table the plan joins."""
    if plan.base.time_dimensions:
        return plan.base.name, plan.base.time_dimensions[0]
    for t in plan.tables[1:]:
        if model.tables[t].time_dimensions:
            return t, model.tables[t].time_dimensions[0]
    raise CannotAnswer(f"{plan.base.name} has no time dimension to filter on.")

