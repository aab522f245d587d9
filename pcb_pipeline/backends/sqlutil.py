"""Snowflake-dialect SQL: splitting scripts, transpiling to DuckDB, and reading the packaged SQL files."""
from __future__ import annotations

from functools import lru_cache

import sqlglot
from sqlglot import exp

from pcb_pipeline.resources import sql_dir



def split_statements(script: str) -> list[str]:
    """Split a Snowflake script into statements (sqlglot handles quotes and comments)."""
    return [s.sql(dialect="snowflake") for s in sqlglot.parse(script, read="snowflake") if s is not None]


def _duckdb_types(node: exp.Expression) -> exp.Expression:
    # DuckDB has no VARIANT/OBJECT/untyped ARRAY; JSON keeps the semi-structured value queryable.
    if isinstance(node, exp.DataType) and node.this in (exp.DataType.Type.VARIANT, exp.DataType.Type.OBJECT,
                                                          exp.DataType.Type.ARRAY) and not node.expressions:
        return exp.DataType.build("JSON")
    return node


@lru_cache(maxsize=512)
def to_duckdb(sql: str) -> str:
    """Transpile one Snowflake statement to DuckDB."""
    tree = sqlglot.parse_one(sql, read="snowflake")
    return tree.transform(_duckdb_types).sql(dialect="duckdb")


def read_sql_file(name: str) -> list[str]:
    return split_statements((sql_dir() / name).read_text())
