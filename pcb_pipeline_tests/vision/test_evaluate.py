"""`pcb-pipeline evaluate`: ultralytics metrics, the Deep PCB protocol, the AOI baseline and the false-call KPI."""
from __future__ import annotations

import json
import math
import shutil

import pytest

from pcb_pipeline.cli import main
from pcb_pipeline.core import aoi, deeppcb
from pcb_pipeline.core.classes import CLASS_NAMES


@pytest.fixture(scope="module")
def cli_report(smoke_weights, synthetic_root, tmp_path_factory):
    """The CLI's JSON on the whole synthetic split (templates present, so the AOI runs)."""
    import io
    from contextlib import redirect_stdout

    out_file = tmp_path_factory.mktemp("eval") / "report.json"
    buf = io.StringIO()
    with redirect_stdout(buf):
        rc = main(["evaluate", "--deeppcb-root", str(synthetic_root), "--split", "trainval.txt", "--weights",
                   str(smoke_weights), "--json", "--out", str(out_file), "--target-recall", "0.5",
                   "--aoi-workers", "1"])
    assert rc == 0
    report = json.loads(buf.getvalue())
    assert json.loads(out_file.read_text()) == report
    return report


def _prob(x) -> bool:
    return x is not None and 0.0 <= x <= 1.0


def test_ultralytics_keys_are_kept(cli_report):
    r = cli_report
    assert {"map50", "map50_95", "precision", "recall", "per_class"} <= set(r)
    assert r["images"] == 24 and r["imgsz"] == 160 and r["backend"] == "onnxruntime"
    assert all(_prob(r[k]) for k in ("map50", "map50_95", "precision", "recall"))
    assert set(r["per_class"]) <= set(CLASS_NAMES)
    assert all({"ap50", "ap50_95"} == set(v) for v in r["per_class"].values())


def test_deeppcb_protocol_section(cli_report, synthetic_samples):
    d = cli_report["deeppcb_protocol"]
    assert d["iou_threshold"] == 0.33 and d["n_images"] == 24
    n_gt = sum(len(deeppcb.read_labels(s.label_file)) for s in synthetic_samples)
    assert d["n_gt"] == n_gt > 0
    assert set(d["ap"]) == set(CLASS_NAMES) and all(_prob(v) for v in d["ap"].values())
    assert math.isclose(d["map"], sum(d["ap"].values()) / len(d["ap"]))
    assert {"f", "threshold", "precision", "recall"} == set(d["best_f"]) and _prob(d["best_f"]["f"])
    assert _prob(d["class_agnostic"]["ap"])


def test_aoi_baseline_and_false_call_kpi(cli_report):
    r = cli_report
    a = r["aoi_baseline"]
    assert a is not None and a["n_images"] == 24 and a["failed"] == {}
    assert a["params"] == aoi.DEFAULT_PARAMS.to_dict()
    op = a["operating"]
    assert op["recall"] > 0.5 and _prob(op["precision"])  # a real inspector, not a strawman, on drawn defects
    assert {"class_agnostic", "typed", "matched_recall", "all_calls"} <= set(a)
    f = r["fpr_reduction"]
    assert set(f) >= {"at_aoi_operating_recall", "at_recall_0.50"}
    head = f["at_aoi_operating_recall"]
    assert head["target_recall"] == pytest.approx(op["recall"])
    assert head["aoi_false_calls_per_board"] <= op["false_calls_per_board"] + 1e-9
    for v in (head, f["at_recall_0.50"]):
        assert v["model_false_calls_per_board"] >= 0 and _prob(v["model_fpr"]) and _prob(v["aoi_fpr"])
        assert _prob(v["model_boards_with_false_call"]) and _prob(v["aoi_boards_with_false_call"])
        assert v["aoi_boards_with_false_call"] * 24 <= v["aoi_false_calls_per_board"] * 24 + 1e-9  # <= 1 call each
        if v["aoi_fpr"]:
            assert v["fpr_reduction"] == pytest.approx(1 - v["model_fpr"] / v["aoi_fpr"])
    fc = r["false_calls_per_board"]
    assert fc["aoi_at_operating_point"] == op["false_calls_per_board"]
    assert r["ms_per_board"]["model"] > 0 and r["ms_per_board"]["aoi"] > 0
    assert fc["model_at_default_conf"] >= 0 and fc["class_agnostic"] is True


def test_the_dashboard_reads_the_report(cli_report):
    from pcb_pipeline.app.data import parse_false_call_report

    figs = parse_false_call_report(cli_report, "models/evaluation.json")
    assert figs is not None and figs.measured
    head = cli_report["fpr_reduction"]["at_aoi_operating_recall"]
    assert figs.baseline_fpr == head["aoi_fpr"] and figs.model_fpr == head["model_fpr"]
    assert figs.target_recall == pytest.approx(head["target_recall"])


def test_aoi_figures_equal_score_aoi(synthetic_samples):
    """evaluate runs the inspector once and scores its rows; the figures must equal core.aoi.score_aoi's."""
    from pcb_pipeline.vision.evaluate import aoi_report, aoi_rows, ground_truth

    sub = synthetic_samples[::3]
    res = aoi_rows(sub, aoi.DEFAULT_PARAMS, workers=1)
    ours = aoi_report(sub, [r[0] for r in res], [r[1] for r in res], [ground_truth(s) for s in sub],
                      aoi.DEFAULT_PARAMS, 0.9)
    assert json.dumps(ours, sort_keys=True) == json.dumps(aoi.score_aoi(sub, aoi.DEFAULT_PARAMS), sort_keys=True)


def test_val_groups_evaluates_only_the_held_out_groups(smoke_weights, synthetic_root):
    from pcb_pipeline.vision.evaluate import evaluate_split

    split = synthetic_root / "PCBData" / "trainval.txt"
    train, val = deeppcb.group_split(deeppcb.read_split(split))
    r = evaluate_split(smoke_weights, split, val_groups=True, aoi=False, ultralytics_val=False)
    assert r["images"] == len(val) and r["groups"] == sorted({s.group for s in val})
    assert not set(r["groups"]) & {s.group for s in train}
    assert r["deeppcb_protocol"]["n_images"] == len(val)
    assert r["aoi_baseline"] is None and "disabled" in r["aoi_skipped"]


def test_without_templates_the_aoi_is_skipped_with_a_reason(smoke_weights, synthetic_root, tmp_path):
    from pcb_pipeline.vision.evaluate import evaluate_split

    root = tmp_path / "no_templates"
    shutil.copytree(synthetic_root, root)
    for t in root.rglob("*_temp.jpg"):
        t.unlink()
    r = evaluate_split(smoke_weights, root / "PCBData" / "trainval.txt", ultralytics_val=False)
    assert r["aoi_baseline"] is None and r["fpr_reduction"] is None and "template" in r["aoi_skipped"]
    assert r["false_calls_per_board"]["aoi_at_operating_point"] is None


def test_cli_errors(synthetic_root, smoke_weights, tmp_path, capsys):
    assert main(["evaluate", "--deeppcb-root", str(synthetic_root), "--split", "nope.txt", "--weights",
                 str(smoke_weights)]) == 2
    assert "split file not found" in capsys.readouterr().err
    assert main(["evaluate", "--deeppcb-root", str(synthetic_root), "--split", "trainval.txt", "--weights",
                 str(tmp_path / "missing.pt")]) == 2
    assert "weights not found" in capsys.readouterr().err


def test_publish_puts_the_report_where_the_dashboard_reads_it(smoke_weights, synthetic_root, monkeypatch, capsys):
    """--publish (champion only): models/<run_id>/evaluation.json on the stage; the dashboard's loader finds it."""
    from types import SimpleNamespace

    from pcb_pipeline.app.data import load_false_call_figures
    from pcb_pipeline.backends import factory

    champion = SimpleNamespace(run_id="run-abc", name="pcb_defect_detector", version="1")
    fake = SimpleNamespace(champion=lambda: champion, download_weights=lambda version, dest: smoke_weights)
    monkeypatch.setattr(factory, "registry", lambda: fake)
    args = ["evaluate", "--deeppcb-root", str(synthetic_root), "--split", "trainval.txt", "--val-groups",
            "--aoi-workers", "1"]
    assert main(args + ["--publish", "--weights", str(smoke_weights)]) == 2  # other weights: not the champion's
    assert "--publish" in capsys.readouterr().err
    assert main(args + ["--publish"]) == 0
    out = capsys.readouterr().out
    assert "legacy AOI" in out and "fpr_reduction" in out  # the human-readable summary
    stage = factory.stage()
    assert [f.path for f in stage.list("models/run-abc/")] == ["models/run-abc/evaluation.json"]
    figs = load_false_call_figures(stage, "run-abc")
    assert figs is not None and figs.measured and figs.source == "models/run-abc/evaluation.json"
