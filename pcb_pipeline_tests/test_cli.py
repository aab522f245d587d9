"""The `pcb-pipeline` CLI against the warehouse and champion produced by the shared pipeline run."""
from __future__ import annotations

import json

import pytest

from pcb_pipeline.cli import main
from pcb_pipeline.defs.assets import GOLDEN_QUERY

pytestmark = pytest.mark.slow


def test_sql_runs_the_golden_query_as_written(trained_pipeline, capsys):
    from pcb_pipeline.backends.factory import warehouse

    assert main(["sql", GOLDEN_QUERY, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    expected = warehouse().query(GOLDEN_QUERY)
    assert out["columns"][0].lower() == "detected_class"
    assert sorted(map(tuple, out["rows"])) == sorted(map(tuple, expected.values.tolist()))
    assert sum(r[1] for r in out["rows"]) > 0


@pytest.mark.parametrize("sql", ["DELETE FROM DEFECT_LOGS", "SELECT 1; DROP TABLE DEFECT_LOGS"])
def test_sql_refuses_writes_and_loses_nothing(trained_pipeline, capsys, sql):
    from pcb_pipeline.backends.factory import warehouse

    before = warehouse().query("SELECT COUNT(*) AS n FROM DEFECT_LOGS")["n"][0]
    assert main(["sql", sql]) == 2
    assert "error" in capsys.readouterr().err
    assert warehouse().query("SELECT COUNT(*) AS n FROM DEFECT_LOGS")["n"][0] == before


def test_predict_uses_the_champion_and_reports_bad_files(trained_pipeline, tmp_path, capsys):
    from pcb_pipeline import settings

    board = next((settings.paths().stage / "datasets" / "yolo" / "images" / "val").glob("*.jpg"))
    bad = tmp_path / "not_an_image.jpg"
    bad.write_bytes(b"this is text")
    assert main(["predict", str(board), str(bad), "--json", "--conf", "0.001"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["backend"] == "onnxruntime"
    good, broken = out["results"]
    assert good["detections"] and {"class_name", "confidence", "x1", "y2"} <= set(good["detections"][0])
    assert "not an image" in broken["error"]


def test_evaluate_prints_metrics_json(trained_pipeline, synthetic_root, capsys):
    assert main(["evaluate", "--deeppcb-root", str(synthetic_root), "--split", "trainval.txt", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert {"map50", "map50_95", "precision", "recall", "per_class"} <= set(report)
    assert report["images"] == 24 and 0.0 <= report["map50"] <= 1.0
    assert set(report["per_class"]) <= {"open", "short", "mousebite", "spur", "copper", "pin-hole"}


def test_ask_data_answers_the_golden_question(trained_pipeline, capsys):
    from pcb_pipeline.backends.factory import warehouse

    q = "show me the breakdown of defect types for the Shanghai line last week"
    assert main(["ask", "--data", q, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {"sql", "columns", "rows", "interpretation"} <= set(out)
    expected = warehouse().query(GOLDEN_QUERY)
    assert sorted(map(tuple, out["rows"])) == sorted(map(tuple, expected.values.tolist()))


def test_ask_manuals_cites_the_mousebite_procedure(capsys):
    q = "What are the causes of 'mousebite' defects and is it acceptable under Class 2 requirements?"
    assert main(["ask", "--manuals", q, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["answer"] and out["citations"]
    assert all({"document", "page", "defect_category", "text"} <= set(c) for c in out["citations"])
    assert any("mousebite" in c["document"].lower() for c in out["citations"])


def test_ask_rejects_injection_and_empty_questions(trained_pipeline, capsys):
    from pcb_pipeline.backends.factory import warehouse

    before = warehouse().query("SELECT COUNT(*) AS n FROM DEFECT_LOGS")["n"][0]
    rc = main(["ask", "--data", "SELECT * FROM DEFECT_LOGS; DROP TABLE DEFECT_LOGS", "--json"])
    assert rc != 0
    assert main(["ask", "--manuals", "   "]) == 2
    assert warehouse().query("SELECT COUNT(*) AS n FROM DEFECT_LOGS")["n"][0] == before


def test_demo_input_mode_reaches_the_dataset_config(monkeypatch):
    """`pcb-pipeline demo --input-mode reference` runs the job with a reference-mode dataset (the config validates
    against the real job); an unknown mode is refused by the parser."""
    import dagster as dg

    from pcb_pipeline import demo
    from pcb_pipeline.definitions import build_defs

    seen = {}
    monkeypatch.setattr(demo, "run_demo", lambda **kw: seen.update(kw) or 0)
    assert main(["demo", "--profile", "smoke", "--input-mode", "reference"]) == 0
    assert seen["input_mode"] == "reference"
    cfg = demo.demo_run_config(profile="smoke", input_mode=seen["input_mode"])
    assert cfg["ops"]["yolo_dataset"]["config"] == {"input_mode": "reference"}
    job = build_defs().resolve_job_def("pcb_pipeline_job")
    assert dg.validate_run_config(job, cfg)
    with pytest.raises(SystemExit):
        main(["demo", "--input-mode", "stereo"])


def test_demo_trains_the_two_stage_inspector_on_real_boards_with_templates():
    from pcb_pipeline.demo import default_profile
    from pcb_pipeline.vision.profiles import resolve_profile

    assert default_profile("../shared/deeppcb", "reference") == "verifier"
    assert resolve_profile("verifier")["kind"] == "verifier"
    assert default_profile(None, "reference") == "demo"  # synthetic boards: the YOLOv12
    assert default_profile("../shared/deeppcb", "test") == "demo"  # boards alone: no template to compare with


def test_demo_gate_message_is_one_sentence_with_the_way_on():
    from pcb_pipeline.demo import gate_block_message

    msg = gate_block_message({"promoted": False, "promotion_reason": "mAP50 0.1420 is below the threshold 0.5000",
                              "map50": 0.142, "model_name": "pcb_defect_detector", "version": 3}, 0.5)
    assert msg.count(". ") == 0 and msg.endswith(".")
    assert "mAP50 0.1420" in msg and "threshold 0.50" in msg and "pcb_defect_detector v3" in msg
    assert "--set epochs=40" in msg and "--min-map50 0.13" in msg and "--profile full" in msg


def test_demo_help_says_it_always_runs_the_embedded_default(capsys):
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "embedded local default" in text and "whatever PCB_BACKEND says" in text


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_failures_are_one_sentence_and_debug_shows_the_traceback(trained_pipeline, tmp_path, capsys):
    assert main(["sql", "SELECT no_such_column FROM DEFECT_LOGS"]) == 1
    line = _one_line_error(capsys)
    assert "no_such_column" in line and "--debug" in line
    with pytest.raises(Exception, match="no_such_column"):
        main(["sql", "SELECT no_such_column FROM DEFECT_LOGS", "--debug"])
    capsys.readouterr()
    assert main(["predict", str(tmp_path / "b.jpg"), "--weights", str(tmp_path / "missing.onnx")]) == 1
    assert "missing.onnx" in _one_line_error(capsys)
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model at all")
    assert main(["predict", str(tmp_path / "b.jpg"), "--weights", str(junk)]) == 1
    assert _one_line_error(capsys).startswith("error:")


def test_a_writer_holding_the_warehouse_gets_a_plain_sentence_and_readers_still_read(trained_pipeline, capsys):
    import subprocess
    import sys

    from pcb_pipeline import settings

    holder = subprocess.Popen(  # the pipeline writing: a read-write connection held by another process
        [sys.executable, "-c", "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); print('ready', flush=True); "
                               "time.sleep(60)", str(settings.paths().warehouse)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ready"
        assert main(["sql", "SELECT COUNT(*) AS n FROM DEFECT_LOGS"]) == 1
        assert "the warehouse is busy" in _one_line_error(capsys)
    finally:
        holder.kill()
        holder.wait()
    assert main(["sql", "SELECT COUNT(*) AS n FROM DEFECT_LOGS", "--json"]) == 0
