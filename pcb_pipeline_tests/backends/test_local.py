from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import pytest

from pcb_pipeline.backends.base import ModelVersion
from pcb_pipeline.backends.local import DuckDBWarehouse, LocalStage, StagePathError
from pcb_pipeline.backends.mlflow_registry import promotion_decision
from pcb_pipeline.backends.sqlutil import read_sql_file, to_duckdb
from pcb_pipeline.core.defect_logs import DEFECT_LOG_COLUMNS

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the shared warehouse contract
from warehouse_contract import assert_a_batch_is_one_transaction  # noqa: E402

GOLDEN = ("SELECT detected_class, COUNT(*) FROM DEFECT_LOGS WHERE factory_line_id = 'SHANGHAI' "
          "AND timestamp >= DATEADD(week, -1, CURRENT_DATE()) GROUP BY detected_class")


@pytest.fixture
def wh(tmp_path):
    w = DuckDBWarehouse(tmp_path / "w.duckdb")
    w.ensure_schema()
    return w


def _logs(batch: str, n: int, line="SHANGHAI", days_ago=0) -> pd.DataFrame:
    ts = pd.Timestamp.now().normalize() - pd.Timedelta(days=days_ago) + pd.Timedelta(hours=1)
    rows = [[f"{batch}-{i}", batch, f"b{i}", ts, "spur", 3, 0.9, "[1, 2, 3, 4]", 1.0, 2.0, 3.0, 4.0, 640, 640, line,
             "m/1", "run", f"img{i}.jpg"] for i in range(n)]
    return pd.DataFrame(rows, columns=DEFECT_LOG_COLUMNS)


def test_ddl_is_snowflake_and_transpiles(wh):
    stmts = read_sql_file("tables.sql")
    assert len(stmts) == 3 and all("CREATE TABLE IF NOT EXISTS" in s for s in stmts)
    assert "VARIANT" in stmts[1] and "JSON" in to_duckdb(stmts[1])
    wh.ensure_schema()  # idempotent


def test_golden_query_runs_as_written(wh):
    wh.replace_rows("DEFECT_LOGS", "batch_id", "a", _logs("a", 3))
    wh.replace_rows("DEFECT_LOGS", "batch_id", "old", _logs("old", 2, days_ago=10))
    wh.replace_rows("DEFECT_LOGS", "batch_id", "pen", _logs("pen", 4, line="PENANG"))
    out = wh.query(GOLDEN)
    assert out.values.tolist() == [["spur", 3]]


def test_a_batch_is_written_to_both_tables_in_one_transaction(wh):
    assert_a_batch_is_one_transaction(wh, _logs)


def test_replace_rows_is_idempotent_and_atomic(wh):
    wh.replace_rows("DEFECT_LOGS", "batch_id", "a", _logs("a", 3))
    wh.replace_rows("DEFECT_LOGS", "batch_id", "a", _logs("a", 3))
    wh.replace_rows("DEFECT_LOGS", "batch_id", "b", _logs("b", 2))
    assert wh.query("SELECT COUNT(*) AS n FROM DEFECT_LOGS")["n"][0] == 5
    bad = _logs("a", 2)
    bad.loc[1, "inference_id"] = bad.loc[0, "inference_id"]  # primary key violation mid-insert
    with pytest.raises(Exception):
        wh.replace_rows("DEFECT_LOGS", "batch_id", "a", bad)
    assert wh.query("SELECT COUNT(*) AS n FROM DEFECT_LOGS WHERE batch_id = 'a'")["n"][0] == 3, "rolled back"


def test_upsert_replaces_by_key(wh):
    rows = pd.DataFrame({"board_id": ["1", "2"], "factory_line_id": ["SHANGHAI", "PENANG"]})
    wh.upsert("PCB_METADATA", ["board_id"], rows)
    wh.upsert("PCB_METADATA", ["board_id"], rows.assign(factory_line_id="SHENZHEN"))
    out = wh.query("SELECT board_id, factory_line_id FROM PCB_METADATA ORDER BY board_id")
    assert out.values.tolist() == [["1", "SHENZHEN"], ["2", "SHENZHEN"]]


def test_unsafe_identifiers_refused(wh):
    with pytest.raises(ValueError, match="unsafe"):
        wh.replace_rows("DEFECT_LOGS; DROP TABLE X", "batch_id", "a", _logs("a", 1))


def test_stage_round_trip_and_traversal(tmp_path):
    st = LocalStage(tmp_path / "stage")
    src = tmp_path / "a.txt"
    src.write_text("hello")
    assert st.put_file(src, "dir/a.txt") == "dir/a.txt"
    assert [f.path for f in st.list("dir")] == ["dir/a.txt"]
    assert st.get_file("dir/a.txt", tmp_path / "out" / "a.txt").read_text() == "hello"
    for bad in ("../escape.txt", "/etc/passwd", "dir/../../x", ""):
        with pytest.raises(StagePathError):
            st.put_file(src, bad)
    assert not (tmp_path / "escape.txt").exists()
    assert st.remove_prefix("dir") == 1 and st.list() == []


def test_stage_refuses_symbolic_links_and_counts_only_what_it_removed(tmp_path):
    st = LocalStage(tmp_path / "stage")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("not the stage's")
    (st.root / "uploads").mkdir()
    (st.root / "uploads" / "linked").symlink_to(outside, target_is_directory=True)
    (st.root / "uploads" / "board.jpg").symlink_to(outside / "keep.txt")
    src = tmp_path / "a.txt"
    src.write_text("hello")
    with pytest.raises(StagePathError, match="symbolic link"):
        st.put_file(src, "uploads/linked/a.txt")  # would have written outside the stage
    assert sorted(p.name for p in outside.iterdir()) == ["keep.txt"]
    with pytest.raises(StagePathError, match="symbolic link"):
        st.get_file("uploads/board.jpg", tmp_path / "got.jpg")
    with pytest.raises(StagePathError, match="symbolic link"):
        st.remove_prefix("uploads/linked/keep.txt")  # through the link: refused
    listed = [f.path for f in st.list("uploads")]
    assert listed == ["uploads/board.jpg", "uploads/linked"]  # visible (to be reported), never followed
    st.get_dir("uploads", tmp_path / "copied")  # plain files only: the links are not followed or copied
    assert not (tmp_path / "copied").exists() or not any((tmp_path / "copied").rglob("*"))
    assert st.remove_prefix("uploads/linked") == 1  # a listed link is removed itself (a landing prunes it) ...
    assert (outside / "keep.txt").read_text() == "not the stage's"  # ... never what it points to
    st.put_file(src, "uploads/real.txt")
    assert st.remove_prefix("uploads") == 2  # one link and one file, nothing behind the link
    assert (outside / "keep.txt").read_text() == "not the stage's"


def test_stage_lists_dot_files_but_not_its_own_partial_copies(tmp_path):
    st = LocalStage(tmp_path / "stage")
    (st.root / "uploads").mkdir()
    (st.root / "uploads" / ".board.jpg").write_bytes(b"x")
    (st.root / "uploads" / ".other.jpg.part").write_bytes(b"x")  # put_file's in-flight copy
    assert [f.path for f in st.list("uploads")] == ["uploads/.board.jpg"]


def _mv(v: str, m: float) -> ModelVersion:
    return ModelVersion("m", v, "run", {"map50": m}, "uri")


@pytest.mark.parametrize("cand,champ,threshold,promoted,why", [
    (0.6, None, 0.5, True, "no champion"),
    (0.4, None, 0.5, False, "below the threshold"),
    (0.7, 0.8, 0.5, False, "regresses"),
    (0.8, 0.8, 0.5, True, ">= champion"),
    (float("nan"), None, 0.0, False, "below"),
])
def test_promotion_gate(cand, champ, threshold, promoted, why):
    d = promotion_decision(_mv("2", cand), _mv("1", champ) if champ is not None else None, threshold)
    assert d.promoted is promoted and why in d.reason


def test_factory_knowledge_engines_on_the_local_backend(tmp_path, monkeypatch):
    """PCB_BACKEND=local: the manual search is the saved local index under PCB_HOME, the data engine the
    semantic-model engine, and a data question runs on the DuckDB warehouse."""
    from pcb_pipeline.backends import factory
    from pcb_pipeline.knowledge import api
    from pcb_pipeline.knowledge.corpus import Chunk
    from pcb_pipeline.knowledge.search import LocalManualSearch
    from pcb_pipeline.knowledge.questions import LocalDataAnalyst

    monkeypatch.setenv("PCB_BACKEND", "local")
    monkeypatch.setenv("PCB_HOME", str(tmp_path / "home"))
    chunk = Chunk("c1", "PCB-SOP-205_spur_removal.pdf", "PCB-SOP-205", "Spur removal", 1, "3 Repair", "Etching",
                  "spur", "Remove a spur with a scalpel under magnification.")
    built = api.build_sop_index([chunk])  # where the sop_search_service asset saves it: PCB_HOME/knowledge/sop_index
    search = factory.manual_search()
    assert isinstance(search, LocalManualSearch) and search is built
    assert api.ask_manuals("How do I remove a spur?", search=search)["citations"][0]["chunk_id"] == "c1"

    analyst = factory.data_analyst()
    assert type(analyst) is LocalDataAnalyst and analyst is api.local_analyst()
    wh = factory.warehouse()
    assert isinstance(wh, DuckDBWarehouse)
    wh.replace_rows("DEFECT_LOGS", "batch_id", "b1", _logs("b1", 3))
    out = api.ask_data("How many defects per factory line?", wh, analyst=analyst)
    assert out["rows"] == [["SHANGHAI", 3]]


def _alive(pid: int) -> bool:
    """Running (not gone, not a zombie waiting for a reaper)."""
    try:
        state = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


_SLEEPER = "import os, sys, time; open(sys.argv[1], 'w').write(str(os.getpid())); print('started', flush=True); time.sleep(120)"


def _wait_for_pid(pid_file, timeout=20.0) -> int:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pid_file.exists() and pid_file.read_text():
            return int(pid_file.read_text())
        time.sleep(0.05)
    raise AssertionError("the child never started")


def test_an_interrupted_training_takes_its_process_with_it(tmp_path):
    import sys

    from pcb_pipeline.backends.base import TrainingRequest
    from pcb_pipeline.backends.local import LocalTrainingDispatcher

    pid_file = tmp_path / "child.pid"

    class Sleeper(LocalTrainingDispatcher):
        def command(self, request, out_dir):
            return [sys.executable, "-c", _SLEEPER, str(pid_file)]

    def interrupt(line):
        raise KeyboardInterrupt  # Ctrl-C (or Dagster terminating the step) while training runs

    d = Sleeper(LocalStage(tmp_path / "stage"), tmp_path / "work")
    with pytest.raises(KeyboardInterrupt):
        d.train(TrainingRequest(tmp_path, "smoke", "r1"), log=interrupt)
    assert not _alive(_wait_for_pid(pid_file))


@pytest.mark.skipif(not __import__("sys").platform.startswith("linux"), reason="parent-death signal is Linux-only")
def test_a_killed_pipeline_process_leaves_no_training_process_behind(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    pid_file = tmp_path / "child.pid"
    parent = subprocess.Popen([sys.executable, "-c", f"""
import sys
from pathlib import Path
from pcb_pipeline.backends.base import TrainingRequest
from pcb_pipeline.backends.local import LocalStage, LocalTrainingDispatcher
class Sleeper(LocalTrainingDispatcher):
    def command(self, request, out_dir):
        return [sys.executable, "-c", {_SLEEPER!r}, {str(pid_file)!r}]
Sleeper(LocalStage(Path({str(tmp_path / 'stage')!r})), Path({str(tmp_path / 'work')!r})).train(
    TrainingRequest(Path('.'), 'smoke', 'r1'), log=print)
"""])
    child = _wait_for_pid(pid_file)
    assert _alive(child)
    parent.send_signal(signal.SIGKILL)  # no handler can run: only the kernel's parent-death signal helps
    parent.wait()
    deadline = time.monotonic() + 15
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(child), ("the training process outlived the killed pipeline process; its status: "
                               + (open(f"/proc/{child}/status").read() if _alive(child) else ""))
