"""SQL guard for every generated or typed query: one read-only SELECT over the semantic model's tables, nothing else.

The SQL is parsed with sqlglot (Snowflake dialect) and walked node by node against an allow-list: query structure,
literals, operators and scalar/aggregate functions pass; writes, DDL, session commands, table functions (file
readers, RESULT_SCAN, FLATTEN, GENERATOR), SYSTEM$ functions, SELECT INTO and locking clauses are refused, and every
table must be one of the model's physical tables (or a CTE defined in the query). Rejections raise UnsafeSQLError
with a message that says what was found.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable

import sqlglot
from sqlglot import exp

MAX_SQL_CHARS = 20_000

# Non-function nodes a read-only analytical query may contain.
ALLOWED_NODES: tuple[type[exp.Expression], ...] = tuple(getattr(exp, n) for n in (
    "Select", "From", "Where", "Group", "Having", "Order", "Ordered", "Limit", "Offset", "Join", "With", "CTE",
    "Subquery", "Union", "Intersect", "Except", "Distinct", "TableAlias", "Alias", "Table", "Identifier", "Column",
    "Star", "Paren", "Tuple", "Literal", "Boolean", "Null", "Var", "Interval", "DataType", "DataTypeParam",
    "And", "Or", "Not", "EQ", "NEQ", "GT", "GTE", "LT", "LTE", "NullSafeEQ", "NullSafeNEQ", "In", "Between", "Like",
    "ILike", "Is", "Add", "Sub", "Mul", "Div", "IntDiv", "Mod", "Neg", "Case", "If", "Cast", "TryCast", "DPipe",
    "Window", "WindowSpec", "Qualify", "PartitionedByProperty", "Bracket", "Any", "All", "Exists", "Placeholder",
    "Collate", "Filter", "WithinGroup", "IgnoreNulls", "RespectNulls", "Escape",
) if hasattr(exp, n))

# Function classes that read files, expand rows or otherwise reach outside the model's tables.
DENIED_FUNCS = tuple(getattr(exp, n) for n in (
    "ReadCSV", "ReadParquet", "ReadJSON", "Explode", "ExplodeOuter", "Posexplode", "PosexplodeOuter", "Unnest",
    "GenerateSeries", "GenerateDateArray", "TableFromRows", "Lateral",
) if hasattr(exp, n))

# Functions sqlglot keeps as Anonymous that are plain scalar helpers in Snowflake.
SAFE_ANONYMOUS = frozenset({
    "DIV0", "DIV0NULL", "ZEROIFNULL", "NULLIFZERO", "IFNULL", "NVL", "NVL2", "IFF", "DATE_PART", "DAYNAME",
    "MONTHNAME", "TO_DATE", "TO_TIMESTAMP", "TO_TIMESTAMP_NTZ", "TO_CHAR", "TO_VARCHAR", "TO_NUMBER", "TO_DOUBLE",
    "TRUNC", "TRUNCATE", "ROUND", "WEEKOFYEAR", "YEAROFWEEK", "DAYOFWEEKISO", "LAST_DAY", "CURRENT_DATE",
    "SQUARE", "RATIO_TO_REPORT", "MODE", "KURTOSIS", "SKEW", "BOOLAND_AGG", "BOOLOR_AGG", "EQUAL_NULL",
    "TIMESTAMPADD", "TIMESTAMPDIFF", "DATEDIFF", "DATEADD", "DATE_TRUNC", "STARTSWITH", "ENDSWITH", "CONTAINS",
    "REGEXP_LIKE", "UNIFORM", "INITCAP", "SPLIT_PART", "LPAD", "RPAD", "TRIM", "LTRIM", "RTRIM",
})


class UnsafeSQLError(ValueError):
    """The SQL is not a single read-only SELECT over the allowed tables."""


@dataclass(frozen=True)
class GuardedSQL:
    sql: str  # the statement to run (comments removed if there were any, no trailing semicolon)
    tables: frozenset[str]  # physical tables read, upper case


def guard_sql(sql: str, allowed_tables: Iterable[str], database: str | None = None,
              schema: str | None = None) -> GuardedSQL:
    """Allow only one read-only SELECT that reads `allowed_tables` (physical names, case-insensitive).

    A qualified table (DB.SCHEMA.TABLE) passes only when its qualifiers match `database`/`schema` when those are given.
    """
    allowed = {t.upper() for t in allowed_tables}
    listing = ", ".join(sorted(allowed))
    if sql is None or not str(sql).strip():
        raise UnsafeSQLError("empty SQL")
    text = str(sql).strip()
    if len(text) > MAX_SQL_CHARS:
        raise UnsafeSQLError(f"SQL longer than {MAX_SQL_CHARS} characters")
    try:
        statements = [s for s in sqlglot.parse(text, read="snowflake") if s is not None]
    except sqlglot.errors.ParseError as e:
        raise UnsafeSQLError(f"rejected: the SQL does not parse ({str(e).splitlines()[0]})") from None
    except sqlglot.errors.TokenError as e:
        raise UnsafeSQLError(f"rejected: the SQL does not tokenize ({e})") from None
    if len(statements) != 1:
        raise UnsafeSQLError(f"rejected: exactly one statement is allowed, found {len(statements)} "
                             f"(stacked queries such as '; DROP TABLE ...' are refused)")
    tree = statements[0]
    if not isinstance(tree, (exp.Select, exp.Union, exp.Intersect, exp.Except, exp.Subquery)):
        raise UnsafeSQLError(f"rejected: only SELECT queries are allowed, found {_describe(tree)}")

    cte_names = {c.alias_or_name.upper() for c in tree.find_all(exp.CTE)}
    read: set[str] = set()
    for node in tree.walk():
        if isinstance(node, exp.Select):
            for arg in ("into", "locks", "kind"):
                if node.args.get(arg):
                    raise UnsafeSQLError(f"rejected: SELECT ... {arg.upper()} is not allowed (read-only queries only)")
        if isinstance(node, exp.Anonymous):
            name = str(node.this).upper()
            if name not in SAFE_ANONYMOUS:
                raise UnsafeSQLError(f"rejected: function {name} is not allowed")
            continue
        if isinstance(node, DENIED_FUNCS):
            raise UnsafeSQLError(f"rejected: {_describe(node)} is not allowed (it reads outside the model's tables)")
        if isinstance(node, exp.Func):
            continue
        if not isinstance(node, ALLOWED_NODES):
            raise UnsafeSQLError(f"rejected: {_describe(node)} is not allowed in a read-only query")
        if isinstance(node, exp.Table):
            if not isinstance(node.this, exp.Identifier):
                raise UnsafeSQLError(f"rejected: table functions are not allowed ({node.sql(dialect='snowflake')})")
            name = node.name.upper()
            if not node.args.get("db") and name in cte_names:
                continue
            if name not in allowed:
                raise UnsafeSQLError(f"rejected: table {node.sql(dialect='snowflake')} is not in the semantic model "
                                     f"(allowed: {listing})")
            db, sch = node.args.get("catalog"), node.args.get("db")
            if (db is not None and database and db.name.upper() != database.upper()) or (
                    sch is not None and schema and sch.name.upper() != schema.upper()):
                raise UnsafeSQLError(f"rejected: {node.sql(dialect='snowflake')} is outside "
                                     f"{database or '?'}.{schema or '?'}")
            read.add(name)
    if not read:
        raise UnsafeSQLError(f"rejected: the query reads none of the allowed tables ({listing})")
    _refuse_unbounded_joins(tree)
    if re.search(r"--|/\*|//", text):
        text = tree.sql(dialect="snowflake", comments=False)
    return GuardedSQL(sql=text.rstrip().rstrip(";").rstrip(), tables=frozenset(read))


def _refuse_unbounded_joins(tree: exp.Expression) -> None:
    """A join without a condition that relates its two sides (CROSS JOIN, a comma, ON TRUE, ON 1 = 1) multiplies
    row counts: six tables of 10^4 rows make 10^24. It is allowed only when the joined side is provably one row (a
    subquery or CTE that aggregates without GROUP BY, or has LIMIT 1), the usual way to divide by a total."""
    ctes = {c.alias_or_name.upper(): c.this for c in tree.find_all(exp.CTE)}
    for join in tree.find_all(exp.Join):
        condition = join.args.get("on")
        if join.args.get("using") or (condition is not None and _relates_columns(condition)):
            continue
        side = join.this
        if isinstance(side, exp.Table) and not side.args.get("db") and side.name.upper() in ctes:
            side = ctes[side.name.upper()]
        if not _single_row(side):
            raise UnsafeSQLError(f"rejected: a join without a condition ({join.sql(dialect='snowflake')[:80]}) "
                                 "multiplies the tables' rows; join ON matching columns such as board_id")


def _relates_columns(condition: exp.Expression) -> bool:
    """Does the condition compare one column with another (a.board_id = b.board_id), not only filter one side
    (b.board_id IS NOT NULL)?"""
    comparisons = (exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE, exp.NullSafeEQ)
    return any(isinstance(c.left, exp.Column) and isinstance(c.right, exp.Column)
               for c in condition.find_all(*comparisons))


def _single_row(node: exp.Expression) -> bool:
    select = node.this if isinstance(node, exp.Subquery) else node
    if not isinstance(select, exp.Select):
        return False
    limit = select.args.get("limit")
    if limit is not None and limit.expression is not None and limit.expression.name == "1":
        return True
    aggregates = [a for e in select.expressions for a in e.find_all(exp.AggFunc) if not a.find_ancestor(exp.Window)]
    return not select.args.get("group") and bool(aggregates)  # COUNT(*) OVER () keeps every row: not one


USER_QUERY_TIMEOUT_S = 30.0  # a question or typed query is stopped after this; the dashboards answer in < 1 s
MAX_RESULT_ROWS = 5000  # rows shown for one question; more are never fetched


def run_guarded(warehouse, guarded: GuardedSQL):
    """Run a guarded user query bounded in time and rows (a DataFrame of at most MAX_RESULT_ROWS rows)."""
    return warehouse.query(guarded.sql, timeout_s=USER_QUERY_TIMEOUT_S, max_rows=MAX_RESULT_ROWS)


def guard_model_sql(sql: str, model, qualified_ok: bool = True) -> GuardedSQL:
    """guard_sql over the physical tables of a SemanticModel (database/schema from its base tables)."""
    tables = list(model.tables.values())
    dbs = {t.database.upper() for t in tables}
    schemas = {t.schema.upper() for t in tables}
    return guard_sql(sql, model.physical_tables, database=next(iter(dbs)) if len(dbs) == 1 else None,
                     schema=next(iter(schemas)) if len(schemas) == 1 else None)


_FRIENDLY = {"TABLEFROMROWS": "a TABLE(...) table function", "LATERAL": "LATERAL (FLATTEN)",
             "READCSV": "a file reader", "EXPLODE": "FLATTEN/EXPLODE"}


def _describe(node: exp.Expression) -> str:
    key = node.key.upper()
    if key in _FRIENDLY:
        return _FRIENDLY[key]
    if isinstance(node, exp.Command):
        return f"command {str(node.this).upper()}"
    kind = node.args.get("kind")
    if isinstance(node, (exp.Create, exp.Drop)) and kind:
        return f"{key} {str(kind).upper()}"
    return key
