"""Stage and warehouse against fakesnow: every statement they send is executed there (GET, REMOVE, LIST with a path
and wildcard PUT through the shim's emulation, which the record marks)."""
from __future__ import annotations

import re
import sys
from datetime import date
from pathlib import Path

import pandas as pd
import pytest

from pcb_pipeline.backends.snowflake import sql
from pcb_pipeline.backends.snowflake.stage import SnowflakeStage
from pcb_pipeline.backends.snowflake.warehouse import SnowflakeWarehouse
from pcb_pipeline.core.defect_logs import DEFECT_LOG_COLUMNS

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the shared warehouse contract
from warehouse_contract import assert_a_batch_is_one_transaction  # noqa: E402

GOLDEN = ("SELECT detected_class, COUNT(*) FROM DEFECT_LOGS WHERE factory_line_id = 'SHANGHAI' "
          "AND timestamp >= DATEADD(week, -1, CURRENT_DATE()) GROUP BY detected_class")
EMULATED = re.compile(r"^(GET @|REMOVE @|LIST @\S+/|PUT '[^']*\*')")


def _logs(batch: str, n: int, line="SHANGHAI", days_ago=0) -> pd.DataFrame:
    ts = pd.Timestamp.now().normalize() - pd.Timedelta(days=days_ago) + pd.Timedelta(hours=1)
    rows = [[f"{batch}-{i}", batch, f"b{i}", ts, "spur", 3, 0.9, "[1.0, 2.0, 3.0, 4.0]", 1.0, 2.0, 3.0, 4.0, 640,
             640, line, "m/1", "run", f"img{i}.jpg"] for i in range(n)]
    return pd.DataFrame(rows, columns=DEFECT_LOG_COLUMNS)


@pytest.fixture
def stage(connect):
    return SnowflakeStage(connect, "MODEL_STAGE", "PCB.PIPELINE.MODEL_STAGE")


@pytest.fixture
def wh(connect):
    w = SnowflakeWarehouse(connect)
    w.ensure_schema()
    return w


def _assert_only_known_emulations(recorder):
    emulated = recorder.statements("emulated")
    assert all(EMULATED.match(s) for s in emulated), emulated
    assert all(not EMULATED.match(s) for s in recorder.statements("fakesnow"))


def test_stage_round_trip(stage, tmp_path, fake_account):
    src = tmp_path / "src"
    (src / "images" / "val").mkdir(parents=True)
    (src / "data.yaml").write_text("train: images/train\n")
    (src / "images" / "val" / "20085000.jpg").write_bytes(b"\xff\xd8jpeg")
    (src / "images" / "val" / "20085001.jpg").write_bytes(b"\xff\xd8jpeg2")
    assert stage.put_dir(src, "datasets/yolo") == 3
    assert stage.put_file(src / "data.yaml", "datasets/yolo2/renamed.yaml") == "datasets/yolo2/renamed.yaml"
    listed = stage.list("datasets/yolo")
    assert [f.path for f in listed] == ["datasets/yolo/data.yaml", "datasets/yolo/images/val/20085000.jpg",
                                        "datasets/yolo/images/val/20085001.jpg"]  # not datasets/yolo2/...
    assert listed[0].size == len("train: images/train\n") and listed[0].md5 and listed[0].last_modified.year > 2000
    assert [f.path for f in stage.list("datasets/yolo/data.yaml")] == ["datasets/yolo/data.yaml"]
    assert stage.get_file("datasets/yolo2/renamed.yaml", tmp_path / "a" / "b.yaml").read_text() == "train: images/train\n"
    got = stage.get_dir("datasets/yolo", tmp_path / "copy")
    assert sorted(p.relative_to(got).as_posix() for p in got.rglob("*") if p.is_file()) == [
        "data.yaml", "images/val/20085000.jpg", "images/val/20085001.jpg"]
    assert (got / "images/val/20085001.jpg").read_bytes() == b"\xff\xd8jpeg2"
    with pytest.raises(FileNotFoundError):
        stage.get_file("datasets/yolo/missing.jpg", tmp_path / "m.jpg")
    assert stage.uri("datasets/yolo") == "@PCB.PIPELINE.MODEL_STAGE/datasets/yolo"
    assert stage.remove_prefix("datasets/yolo") == 3
    assert [f.path for f in stage.list()] == ["datasets/yolo2/renamed.yaml"]
    assert stage.remove_prefix("datasets/yolo2/renamed.yaml") == 1 and stage.list() == []
    assert stage.remove_prefix("nothing/here") == 0
    _assert_only_known_emulations(fake_account)
    # one wildcard PUT per folder, never a per-file round trip for a folder
    puts = [s for s in fake_account.statements("emulated") if s.startswith("PUT")]
    assert len(puts) == 2 and all("AUTO_COMPRESS = FALSE OVERWRITE = TRUE" in s for s in puts)


@pytest.mark.parametrize("bad", ["../etc/passwd", "/abs/path", "a/../../b", "with space/x.jpg", "quote'/x",
                                 "semi;colon"])
def test_stage_refuses_paths_that_escape_or_need_quoting(stage, bad, tmp_path):
    f = tmp_path / "x.txt"
    f.write_text("x")
    with pytest.raises(sql.UnsafeNameError):
        stage.put_file(f, bad)


def test_statement_texts_are_exact(tmp_path):
    d = tmp_path
    assert sql.put(d / "best.pt", "MODEL_STAGE", "models/r1") == (
        f"PUT 'file://{d.resolve()}/best.pt' @MODEL_STAGE/models/r1/ AUTO_COMPRESS = FALSE OVERWRITE = TRUE")
    assert sql.put(d, "S", "a", glob=True).startswith(f"PUT 'file://{d.resolve()}/*' @S/a/ ")
    assert sql.get("S", "a/b.pt", d, pattern=sql.pattern_for_file("a/b.pt")) == (
        f"GET @S/a/b.pt 'file://{d.resolve()}/' PATTERN = '(.*/)?a/b[.]pt$'")
    assert sql.list_files("S", "raw/deeppcb") == "LIST @S/raw/deeppcb"
    assert sql.remove("S", "raw", directory=True) == "REMOVE @S/raw/"
    assert sql.delete_where("DEFECT_LOGS", "batch_id") == "DELETE FROM DEFECT_LOGS WHERE batch_id = %s"


@pytest.mark.parametrize("name", ["images/val/1.jpg", "model_stage/images/val/1.jpg"])
def test_children_pattern_matches_direct_children_only(name):
    # Snowflake's docs do not say whether PATTERN sees the stage name: the pattern works both ways.
    p = sql.pattern_for_children("images/val")
    assert re.fullmatch(p, name) and re.search(p, name)
    assert not re.fullmatch(p, name.replace("val/1", "val/sub/1"))
    assert not re.search(p, name.replace("val/1", "val/sub/1"))
    assert not re.fullmatch(p, name.replace("images/val", "images/valx"))


def test_a_batch_is_written_to_both_tables_in_one_transaction(wh, fake_account):
    assert_a_batch_is_one_transaction(wh, _logs)


def test_replace_rows_is_idempotent_and_atomic(wh, fake_account):
    assert wh.replace_rows("DEFECT_LOGS", "batch_id", "a", _logs("a", 3)) == 3
    wh.replace_rows("DEFECT_LOGS", "batch_id", "a", _logs("a", 3))
    wh.replace_rows("DEFECT_LOGS", "batch_id", "b", _logs("b", 2))
    assert wh.query("SELECT COUNT(*) AS n FROM DEFECT_LOGS")["n"][0] == 5
    bad = _logs("a", 2)
    bad.loc[1, "inference_id"] = bad.loc[0, "inference_id"]  # primary key violation inside the transaction
    with pytest.raises(Exception):
        wh.replace_rows("DEFECT_LOGS", "batch_id", "a", bad)
    assert wh.query("SELECT COUNT(*) AS n FROM DEFECT_LOGS WHERE batch_id = 'a'")["n"][0] == 3, "rolled back"
    assert wh.replace_rows("DEFECT_LOGS", "batch_id", "b", _logs("b", 0)) == 0
    assert wh.query("SELECT COUNT(*) AS n FROM DEFECT_LOGS WHERE batch_id = 'b'")["n"][0] == 0
    # VARIANT column holds a parsed array, not a JSON string
    assert wh.query("SELECT bounding_box_coordinates[2] AS x2 FROM DEFECT_LOGS LIMIT 1")["x2"].astype(float)[0] == 3.0
    stmts = fake_account.statements()
    i = stmts.index("BEGIN")
    assert stmts[i + 1] == "DELETE FROM DEFECT_LOGS WHERE batch_id = %s" and stmts[i + 2].startswith(
        "INSERT INTO DEFECT_LOGS (inference_id,") and "PARSE_JSON(bounding_box_coordinates)" in stmts[i + 2]
    assert stmts[i + 3] == "COMMIT" and "ROLLBACK" in stmts
    loads = fake_account.statements("write_pandas")
    assert loads and all("('quote_identifiers', False)" in s and "('use_logical_type', True)" in s for s in loads)
    # write_pandas (its own temporary stage is DDL, which commits) happens before BEGIN, never inside
    assert stmts.index(loads[0]) < i


def test_upsert_merges_by_key(wh, fake_account):
    rows = pd.DataFrame({"board_id": ["1", "2"], "factory_line_id": ["SHANGHAI", "PENANG"],
                         "manufacturing_date": [date(2026, 1, 2)] * 2})
    assert wh.upsert("PCB_METADATA", ["board_id"], rows) == 2
    wh.upsert("PCB_METADATA", ["board_id"], rows.assign(factory_line_id="SHENZHEN"))
    out = wh.query("SELECT board_id, factory_line_id, manufacturing_date FROM PCB_METADATA ORDER BY board_id")
    assert out.values.tolist() == [["1", "SHENZHEN", date(2026, 1, 2)], ["2", "SHENZHEN", date(2026, 1, 2)]]
    assert any(s.startswith("MERGE INTO PCB_METADATA AS t USING PCB_TMP_PCB_METADATA_") for s in fake_account.statements())
    with pytest.raises(ValueError, match="repeat a key"):
        wh.upsert("PCB_METADATA", ["board_id"], pd.concat([rows, rows]))
    assert wh.upsert("PCB_METADATA", ["board_id"], rows.iloc[:0]) == 0


def test_upsert_parses_variant_columns(wh, fake_account):
    rows = _logs("u", 3)
    wh.upsert("DEFECT_LOGS", ["inference_id"], rows)
    wh.upsert("DEFECT_LOGS", ["inference_id"], rows.assign(confidence_score=0.5))
    out = wh.query("SELECT COUNT(*) AS n, MIN(confidence_score) AS c, MAX(bounding_box_coordinates[3]) AS y2 "
                   "FROM DEFECT_LOGS")
    assert (out["n"][0], out["c"][0], float(out["y2"][0])) == (3, 0.5, 4.0)
    merge = [s for s in fake_account.statements() if s.startswith("MERGE INTO DEFECT_LOGS")][0]
    assert "USING (SELECT inference_id, batch_id" in merge and "PARSE_JSON(bounding_box_coordinates) AS " \
        "bounding_box_coordinates" in merge


def test_golden_query_and_lower_case_columns(wh):
    wh.replace_rows("DEFECT_LOGS", "batch_id", "a", _logs("a", 3))
    wh.replace_rows("DEFECT_LOGS", "batch_id", "old", _logs("old", 2, days_ago=10))
    wh.replace_rows("DEFECT_LOGS", "batch_id", "pen", _logs("pen", 4, line="PENANG"))
    assert wh.query(GOLDEN).values.tolist() == [["spur", 3]]
    assert list(wh.query("SELECT board_id, factory_line_id FROM DEFECT_LOGS LIMIT 1").columns) == [
        "board_id", "factory_line_id"]


def test_unsafe_identifiers_refused(wh):
    with pytest.raises(ValueError, match="unsafe"):
        wh.replace_rows("DEFECT_LOGS; DROP TABLE X", "batch_id", "a", _logs("a", 1))
    with pytest.raises(ValueError, match="unsafe"):
        wh.upsert("PCB_METADATA", ["board_id) --"], pd.DataFrame({"board_id": ["1"]}))
    with pytest.raises(ValueError, match="no column"):
        wh.upsert("PCB_METADATA", ["board_id"], pd.DataFrame({"board_id": ["1"], "nope": [1]}))
