"""Read-only guard for typed SQL: exactly one SELECT (Snowflake dialect), nothing that writes."""
from __future__ import annotations

import sqlglot
from sqlglot import exp

WRITE_NODES = (exp.Insert, exp.Update, exp.Delete, exp.Merge, exp.Create, exp.Drop, exp.Alter, exp.Command,
               exp.TruncateTable, exp.Copy, exp.Grant, exp.Set, exp.Use, exp.Transaction, exp.Commit, exp.Rollback)


class UnsafeSQLError(ValueError):
    pass


def ensure_read_only(sql: str) -> str:
    """Return the statement if it is a single read-only query; raise UnsafeSQLError otherwise."""
    try:
        statements = [s for s in sqlglot.parse(sql, read="snowflake") if s is not None]
    except sqlglot.errors.ParseError as e:
        raise UnsafeSQLError(f"could not parse the SQL: {str(e).splitlines()[0]}") from None
    if len(statements) != 1:
        raise UnsafeSQLError(f"exactly one statement is allowed, got {len(statements)}")
    tree = statements[0]
    if not isinstance(tree, (exp.Select, exp.Union, exp.Intersect, exp.Except, exp.With)) and not (
            isinstance(tree, exp.Subquery)):
        raise UnsafeSQLError(f"only SELECT queries are allowed, got {tree.key.upper()}")
    for node in tree.walk():
        if isinstance(node, WRITE_NODES):
            raise UnsafeSQLError(f"only read-only queries are allowed: found {node.key.upper()}")
    return sql
