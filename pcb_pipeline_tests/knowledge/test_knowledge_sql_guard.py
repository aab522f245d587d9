"""The SQL guard: only one read-only SELECT over the semantic model's tables; injections refused clearly."""
from __future__ import annotations

import pytest

from pcb_pipeline.knowledge.api import run_sql
from pcb_pipeline.knowledge.sql_guard import UnsafeSQLError, guard_model_sql, guard_sql

ALLOWED = [
    "SELECT detected_class, COUNT(*) FROM DEFECT_LOGS WHERE factory_line_id = 'SHANGHAI' "
    "AND timestamp >= DATEADD(week, -1, CURRENT_DATE()) GROUP BY detected_class;",
    "WITH __defect_logs AS (SELECT detected_class AS defect_type FROM PCB.PIPELINE.DEFECT_LOGS) "
    "SELECT defect_type, COUNT(*) FROM __defect_logs GROUP BY 1",
    "SELECT m.product_type, COUNT_IF(b.defect_count > 6) FROM BOARD_INSPECTIONS b "
    "LEFT JOIN PCB_METADATA m ON b.board_id = m.board_id GROUP BY 1 ORDER BY 2 DESC LIMIT 3",
    "SELECT factory_line_id, RANK() OVER (ORDER BY COUNT(*) DESC) FROM DEFECT_LOGS GROUP BY 1",
    "SELECT * FROM DEFECT_LOGS WHERE detected_class IN (SELECT detected_class FROM DEFECT_LOGS LIMIT 1)",
    # dividing by a total: the joined side is provably one row
    "WITH t AS (SELECT COUNT(*) AS n FROM BOARD_INSPECTIONS) SELECT d.detected_class, COUNT(*) / MAX(t.n) "
    "FROM DEFECT_LOGS d CROSS JOIN t GROUP BY 1",
    "SELECT COUNT(*) / MAX(t.n) FROM DEFECT_LOGS, (SELECT COUNT(*) AS n FROM BOARD_INSPECTIONS) t",
    "SELECT d.board_id FROM DEFECT_LOGS d JOIN PCB_METADATA m USING (board_id)",
]

INJECTIONS = [
    ("SELECT * FROM DEFECT_LOGS; DROP TABLE DEFECT_LOGS", "exactly one statement"),
    ("SELECT * FROM DEFECT_LOGS WHERE factory_line_id = '' OR 1=1; DELETE FROM DEFECT_LOGS; --'",
     "exactly one statement"),
    ("DROP TABLE DEFECT_LOGS", "only SELECT"),
    ("DELETE FROM DEFECT_LOGS WHERE 1=1", "only SELECT"),
    ("UPDATE DEFECT_LOGS SET detected_class = 'open'", "only SELECT"),
    ("INSERT INTO DEFECT_LOGS (inference_id) VALUES ('x')", "only SELECT"),
    ("MERGE INTO DEFECT_LOGS t USING PCB_METADATA s ON t.board_id = s.board_id WHEN MATCHED THEN DELETE",
     "only SELECT"),
    ("CREATE TABLE X AS SELECT * FROM DEFECT_LOGS", "only SELECT"),
    ("GRANT SELECT ON DEFECT_LOGS TO ROLE PUBLIC", "only SELECT"),
    ("USE ROLE ACCOUNTADMIN", "only SELECT"),
    ("SELECT * FROM INFORMATION_SCHEMA.TABLES", "not in the semantic model"),
    ("SELECT * FROM DEFECT_LOGS UNION ALL SELECT * FROM USERS", "not in the semantic model"),
    ("SELECT * FROM OTHER_DB.PUBLIC.DEFECT_LOGS", "outside"),
    ("SELECT * FROM read_csv('/etc/passwd')", "table functions"),
    ("SELECT * FROM TABLE(RESULT_SCAN(LAST_QUERY_ID()))", "not allowed"),
    ("SELECT * FROM TABLE(GENERATOR(ROWCOUNT => 1000000000))", "not allowed"),
    ("SELECT * FROM DEFECT_LOGS, LATERAL FLATTEN(input => bounding_box_coordinates)", "not allowed"),
    ("SELECT SYSTEM$WHITELIST() FROM DEFECT_LOGS", "SYSTEM$WHITELIST is not allowed"),
    ("SELECT * INTO STOLEN FROM DEFECT_LOGS", "INTO"),
    ("SELECT * FROM DEFECT_LOGS FOR UPDATE", "LOCKS"),
    ("COPY INTO @MODEL_STAGE FROM DEFECT_LOGS", "only SELECT"),
    ("SELECT 1", "none of the allowed tables"),
    ("SELECT COUNT(*) FROM DEFECT_LOGS a, DEFECT_LOGS b, DEFECT_LOGS c, BOARD_INSPECTIONS d, PCB_METADATA e, "
     "PCB_METADATA f", "join without a condition"),
    ("SELECT * FROM DEFECT_LOGS CROSS JOIN BOARD_INSPECTIONS", "join without a condition"),
    ("SELECT * FROM DEFECT_LOGS a JOIN BOARD_INSPECTIONS b ON TRUE", "join without a condition"),
    ("SELECT * FROM DEFECT_LOGS a JOIN BOARD_INSPECTIONS b ON 1 = 1", "join without a condition"),
    ("WITH x AS (SELECT * FROM DEFECT_LOGS) SELECT * FROM DEFECT_LOGS, x", "join without a condition"),
    ("SELECT * FROM DEFECT_LOGS, (SELECT board_id FROM PCB_METADATA GROUP BY 1) t", "join without a condition"),
    ("SELECT * FROM DEFECT_LOGS a JOIN BOARD_INSPECTIONS b ON b.board_id IS NOT NULL", "join without a condition"),
    ("SELECT * FROM DEFECT_LOGS a JOIN (SELECT COUNT(*) OVER () AS n FROM DEFECT_LOGS) t ON TRUE",
     "join without a condition"),
    ("SELEC * FROM DEFECT_LOGS", "does not parse"),
    ("", "empty"),
]


@pytest.mark.parametrize("sql", ALLOWED)
def test_read_only_selects_pass(model, sql):
    g = guard_model_sql(sql, model)
    assert not g.sql.endswith(";") and g.tables <= {"DEFECT_LOGS", "BOARD_INSPECTIONS", "PCB_METADATA"}


@pytest.mark.parametrize("sql, message", INJECTIONS)
def test_injections_are_rejected_with_a_clear_message(model, sql, message):
    with pytest.raises(UnsafeSQLError, match=None) as err:
        guard_model_sql(sql, model)
    assert message in str(err.value), str(err.value)


def test_comments_are_stripped_before_running():
    g = guard_sql("SELECT * FROM DEFECT_LOGS -- '; DROP TABLE X", ["DEFECT_LOGS"])
    assert "--" not in g.sql and "DROP" not in g.sql


def test_run_sql_guards_then_runs(warehouse):
    out = run_sql("SELECT COUNT(*) AS n FROM DEFECT_LOGS", warehouse)
    assert out["rows"][0][0] > 0
    with pytest.raises(UnsafeSQLError):
        run_sql("DELETE FROM DEFECT_LOGS", warehouse)
    assert warehouse.query("SELECT COUNT(*) AS n FROM DEFECT_LOGS")["n"][0] > 0


def test_user_queries_are_bounded_in_rows(warehouse, monkeypatch):
    from pcb_pipeline.knowledge import sql_guard

    monkeypatch.setattr(sql_guard, "MAX_RESULT_ROWS", 7)
    out = run_sql("SELECT * FROM DEFECT_LOGS", warehouse)
    assert len(out["rows"]) == 7 and warehouse.query("SELECT COUNT(*) AS n FROM DEFECT_LOGS")["n"][0] > 7


def test_a_slow_query_is_stopped_at_its_time_limit(tmp_path):
    import time

    from pcb_pipeline.backends.base import QueryTimeoutError
    from pcb_pipeline.backends.local import DuckDBWarehouse

    wh = DuckDBWarehouse(tmp_path / "w.duckdb")
    wh.ensure_schema()
    slow = "SELECT COUNT(*) FROM range(100000) a, range(100000) b, range(1000) c"  # 10^13 rows: hours
    start = time.perf_counter()
    with pytest.raises(QueryTimeoutError, match="longer than 0.5 s"):
        wh.query(slow, timeout_s=0.5)
    assert time.perf_counter() - start < 30
    assert wh.query("SELECT COUNT(*) AS n FROM DEFECT_LOGS", timeout_s=5)["n"][0] == 0  # the file is usable


def test_read_only_connections_cannot_write_and_do_not_block_each_other(tmp_path):
    import subprocess
    import sys

    from pcb_pipeline.backends.local import DuckDBWarehouse

    path = tmp_path / "w.duckdb"
    DuckDBWarehouse(path).ensure_schema()
    reader = DuckDBWarehouse(path, read_only=True)
    with pytest.raises(Exception, match="(?i)read-only"):
        reader.execute("DELETE FROM DEFECT_LOGS")
    holder = subprocess.Popen(  # another process (the app, a second `sql`) holds a read-only connection
        [sys.executable, "-c", "import duckdb, sys, time; c = duckdb.connect(sys.argv[1], read_only=True); "
                               "print('ready', flush=True); time.sleep(60)", str(path)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ready"
        assert reader.query("SELECT COUNT(*) AS n FROM DEFECT_LOGS")["n"][0] == 0  # readers share the file
    finally:
        holder.kill()
        holder.wait()
