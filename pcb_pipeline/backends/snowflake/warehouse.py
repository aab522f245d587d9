"""Snowflake behind the Warehouse interface: SQL as written, bulk writes through write_pandas.

replace_batch and upsert first load the rows with `write_pandas` into a session-scoped TEMPORARY table (write_pandas
creates its own temporary stage, a DDL statement that would commit any open transaction, so it runs before the
transaction starts), then:
  replace_batch: BEGIN; per table: DELETE FROM t WHERE key = %s; INSERT INTO t (...) SELECT ... FROM tmp; COMMIT
                 (ROLLBACK on error; replace_rows is the one-table case)
  upsert:       MERGE INTO t USING tmp ON keys WHEN MATCHED THEN UPDATE ... WHEN NOT MATCHED THEN INSERT ...
Semi-structured target columns (VARIANT/OBJECT/ARRAY) travel as JSON text and are PARSE_JSON'ed on the way in.
Column names come back lower-cased where Snowflake upper-cased an unquoted name, so `df["board_id"]` works on both
backends.
"""
from __future__ import annotations

import uuid

import pandas as pd

from pcb_pipeline.backends.base import QueryTimeoutError
from pcb_pipeline.backends.sqlutil import read_sql_file

from . import sql
from .stage import Connect


# 604: "SQL execution canceled" (the connector's own timeout cancelled it); 630: the server's STATEMENT_TIMEOUT
STATEMENT_CANCELED_ERRNOS = frozenset({604, 630})


def _column_name(name: str) -> str:
    return name.lower() if name == name.upper() else name


class SnowflakeWarehouse:
    def __init__(self, connect: Connect, tables_file: str = "tables.sql"):
        self.connect = connect
        self.tables_file = tables_file

    def ensure_schema(self) -> None:
        """CREATE TABLE IF NOT EXISTS for every table in sql/tables.sql (idempotent)."""
        with self.connect() as conn:
            cur = conn.cursor()
            for stmt in read_sql_file(self.tables_file):
                cur.execute(stmt)

    def execute(self, statement: str) -> None:
        with self.connect() as conn:
            conn.cursor().execute(statement)

    def query(self, statement: str, timeout_s: float | None = None, max_rows: int | None = None) -> pd.DataFrame:
        """``timeout_s`` is the connector's per-statement ``timeout`` (it cancels the query: error 604);
        ``max_rows`` fetches only that many rows of the result."""
        from snowflake.connector.errors import ProgrammingError

        with self.connect() as conn:
            cur = conn.cursor()
            try:
                cur.execute(statement, timeout=int(max(1, round(timeout_s)))) if timeout_s else cur.execute(statement)
            except ProgrammingError as e:
                if timeout_s and getattr(e, "errno", None) in STATEMENT_CANCELED_ERRNOS:
                    raise QueryTimeoutError(f"the query ran longer than {timeout_s:g} s and was stopped") from None
                raise
            rows = cur.fetchall() if max_rows is None else cur.fetchmany(max_rows)
            names = [_column_name(d[0]) for d in cur.description or []]
        return pd.DataFrame.from_records(rows, columns=names)

    # ------------------------------------------------------------------------------------------------ bulk writes
    def _column_types(self, cur, table: str) -> dict[str, str]:
        cur.execute(sql.describe_table(table))
        return {str(r[0]).upper(): str(r[1]).upper() for r in cur.fetchall()}

    def _load_temp(self, conn, table: str, rows: pd.DataFrame) -> tuple[str, list[str], set[str]]:
        """Stage `rows` in a temporary table shaped like the target's columns; returns (name, columns, variant)."""
        from snowflake.connector import pandas_tools  # attribute lookup at call time: fakesnow patches it

        cur = conn.cursor()
        types = self._column_types(cur, table)
        columns = [str(c) for c in rows.columns]
        unknown = [c for c in columns if c.upper() not in types]
        if unknown:
            raise ValueError(f"{table} has no column(s) {unknown}")
        variant = {c.upper() for c in columns if types[c.upper()].split("(")[0] in sql.SEMI_STRUCTURED}
        temp = f"PCB_TMP_{table.split('.')[-1].upper()}_{uuid.uuid4().hex[:10].upper()}"
        staging_types = [(c, "VARCHAR" if c.upper() in variant else types[c.upper()]) for c in columns]
        cur.execute(sql.create_temp_table(temp, staging_types))
        frame = rows.copy()
        frame.columns = [c.upper() for c in columns]
        for c in frame.columns:
            if c in variant:
                frame[c] = frame[c].astype("string")
        ok, _chunks, nrows, _ = pandas_tools.write_pandas(conn, frame, temp, quote_identifiers=False,
                                                          use_logical_type=True, auto_create_table=False,
                                                          overwrite=False)
        if not ok or nrows != len(rows):
            raise RuntimeError(f"write_pandas loaded {nrows} of {len(rows)} rows into {temp}")
        return temp, columns, variant

    def replace_rows(self, table: str, key_column: str, key_value: str, rows: pd.DataFrame) -> int:
        return self.replace_batch(key_column, key_value, {table: rows})[table]

    def replace_batch(self, key_column: str, key_value: str, tables: dict[str, pd.DataFrame]) -> dict[str, int]:
        """One transaction over every table: all of a batch's rows appear together or not at all."""
        sql.identifier(key_column)
        for table, rows in tables.items():
            sql.identifier(table), [sql.identifier(str(c)) for c in rows.columns]
        with self.connect() as conn:
            cur = conn.cursor()
            temps: dict[str, tuple[str, list[str], set[str]]] = {}
            try:
                for table, rows in tables.items():  # write_pandas' DDL would commit an open transaction
                    if len(rows):
                        temps[table] = self._load_temp(conn, table, rows)
                cur.execute(sql.BEGIN)
                try:
                    for table in tables:
                        cur.execute(sql.delete_where(table, key_column), (key_value,))
                        if table in temps:
                            temp, columns, variant = temps[table]
                            cur.execute(sql.insert_select(table, temp, columns, variant))
                    cur.execute(sql.COMMIT)
                except Exception:
                    cur.execute(sql.ROLLBACK)
                    raise
            finally:
                for temp, _, _ in temps.values():
                    cur.execute(sql.drop_table(temp))
        return {table: len(rows) for table, rows in tables.items()}

    def upsert(self, table: str, key_columns: list[str], rows: pd.DataFrame) -> int:
        sql.identifier(table), [sql.identifier(k) for k in key_columns], [sql.identifier(str(c)) for c in rows.columns]
        if rows.empty:
            return 0
        missing = [k for k in key_columns if k not in rows.columns]
        if missing:
            raise ValueError(f"upsert keys {missing} are not columns of the rows")
        dupes = rows.duplicated(subset=key_columns)
        if dupes.any():  # MERGE with a duplicated source key is nondeterministic (an error in Snowflake)
            raise ValueError(f"{int(dupes.sum())} rows repeat a key {key_columns}; upsert needs unique keys")
        with self.connect() as conn:
            temp, columns, variant = self._load_temp(conn, table, rows)
            cur = conn.cursor()
            try:
                cur.execute(sql.merge(table, temp, key_columns, columns, variant))
            finally:
                cur.execute(sql.drop_table(temp))
        return len(rows)
