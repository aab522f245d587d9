"""The whole graph on a tiny synthetic set: real Dagster run, real DuckDB, real MLflow store, real training."""
from __future__ import annotations

import mlflow
import pytest

from pcb_pipeline import settings
from pcb_pipeline.backends.factory import registry, warehouse
from pcb_pipeline.defs.assets import GOLDEN_QUERY

pytestmark = pytest.mark.slow


def test_every_asset_materialises_and_checks_pass(trained_pipeline):
    first, _, _ = trained_pipeline
    assert first.success
    materialised = {e.asset_key.path[-1] for e in first.get_asset_materialization_events()}
    assert materialised >= {"raw_pcb_images", "pcb_metadata", "yolo_dataset", "trained_detector",
                            "registered_model", "defect_logs"}
    checks_ = {e.event_specific_data.check_name: e.event_specific_data.passed
               for e in first.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"}
    assert {"labels_valid", "no_split_leakage", "every_image_labelled"} <= set(checks_)
    assert all(checks_.values()), checks_


def test_defect_logs_rows_and_rerun_replaces(trained_pipeline):
    _, second, rows_after_first = trained_pipeline
    assert second.success
    wh = warehouse()
    logs = wh.query("SELECT * FROM DEFECT_LOGS")
    assert len(logs) == rows_after_first > 0, "re-running the batch must replace its rows, not add to them"
    assert logs["inference_id"].is_unique
    assert set(logs["factory_line_id"]) <= {"SHANGHAI", "SHENZHEN", "PENANG", "GUADALAJARA"}
    assert logs["model_version"].str.startswith("pcb_defect_detector/").all()
    assert logs["run_id"].str.len().gt(0).all() and logs["image_path"].str.startswith("datasets/yolo/images/val/").all()
    inspections = wh.query("SELECT COUNT(*) AS n FROM BOARD_INSPECTIONS")["n"][0]
    assert inspections == 6  # one held-out group of 6 boards, once
    golden = wh.query(GOLDEN_QUERY)
    expected = logs[logs.factory_line_id == "SHANGHAI"].groupby("detected_class").size().to_dict()
    assert dict(zip(golden.iloc[:, 0], golden.iloc[:, 1])) == expected


def test_mlflow_run_with_metrics_and_registered_champion(trained_pipeline):
    reg = registry()
    champ = reg.champion()
    assert champ is not None and champ.version == "2"  # second run promoted: equal mAP does not regress
    run = mlflow.MlflowClient(settings.paths().mlflow_uri).get_run(champ.run_id)
    assert run.info.artifact_uri.startswith(settings.paths().mlflow_artifacts.as_uri()), "artifacts stay in PCB_HOME"
    assert "final_map50" in run.data.metrics and run.data.params["profile"] == "smoke"
    history = mlflow.MlflowClient(settings.paths().mlflow_uri).get_metric_history(champ.run_id, "train/box_loss")
    assert len(history) >= 1
    assert (settings.paths().stage / "models" / champ.run_id / "best.pt").is_file()
    assert list((settings.paths().stage / "predictions" / "heldout").glob("*_pred.jpg"))
