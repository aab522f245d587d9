"""The whole graph on a tiny synthetic set: real Dagster run, real DuckDB, real MLflow store, real training."""
from __future__ import annotations

import dagster as dg
import mlflow
import pytest

from pcb_pipeline import settings
from pcb_pipeline.backends.factory import registry, warehouse
from pcb_pipeline.defs.assets import GOLDEN_QUERY, assets
from pcb_pipeline.defs.checks import checks
from pcb_pipeline.defs.jobs import jobs
from pcb_pipeline.defs.resources import local_resources
from pcb_pipeline.demo import demo_run_config

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pipeline_run():
    defs = dg.Definitions(assets=assets, asset_checks=checks, jobs=jobs, resources=local_resources(min_map50=0.0))
    job = defs.resolve_job_def("pcb_pipeline_job")
    cfg = demo_run_config(profile="smoke", synthetic_groups=3, synthetic_images_per_group=6,
                          confidence=0.001)  # after one epoch only low-confidence boxes exist
    with dg.instance_for_test() as instance:
        first = job.execute_in_process(run_config=cfg, instance=instance)
        rows_after_first = warehouse().query("SELECT COUNT(*) AS n FROM DEFECT_LOGS")["n"][0]
        second = job.execute_in_process(run_config=cfg, instance=instance)
        yield first, second, rows_after_first


def test_every_asset_materialises_and_checks_pass(pipeline_run):
    first, _, _ = pipeline_run
    assert first.success
    materialised = {e.asset_key.path[-1] for e in first.get_asset_materialization_events()}
    assert materialised == {"raw_pcb_images", "pcb_metadata", "yolo_dataset", "trained_detector",
                            "registered_model", "defect_logs"}
    checks_ = {e.event_specific_data.check_name: e.event_specific_data.passed
               for e in first.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"}
    assert checks_ == {"labels_valid": True, "no_split_leakage": True, "every_image_labelled": True}


def test_defect_logs_rows_and_rerun_replaces(pipeline_run):
    _, second, rows_after_first = pipeline_run
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


def test_mlflow_run_with_metrics_and_registered_champion(pipeline_run):
    reg = registry()
    champ = reg.champion()
    assert champ is not None and champ.version == "2"  # second run promoted: equal mAP does not regress
    run = mlflow.MlflowClient(settings.paths().mlflow_uri).get_run(champ.run_id)
    assert "final_map50" in run.data.metrics and run.data.params["profile"] == "smoke"
    history = mlflow.MlflowClient(settings.paths().mlflow_uri).get_metric_history(champ.run_id, "train/box_loss")
    assert len(history) >= 1
    assert (settings.paths().stage / "models" / champ.run_id / "best.pt").is_file()
    assert list((settings.paths().stage / "predictions" / "heldout").glob("*_pred.jpg"))
