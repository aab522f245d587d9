"""PCB_BACKEND=snowflake on fakesnow: the Definitions load, and the graph materialises end to end.

Stage and warehouse are the real Snowflake resources talking SQL to fakesnow through dagster_snowflake's
SnowflakeResource. The two things no fakesnow can host are played by stand-ins bound to the real library signatures:
the ML Job (its output is the session's smoke run of the very payload the dispatcher builds) and the Model Registry
API. Everything else, including streaming job logs into the Dagster run, fetching weights from the job stage,
the promotion gate and inference with the champion, runs as it would against an account. The knowledge assets on
Snowflake (search_index = Cortex Search) are materialised in test_sf_search_index.py.
"""
from __future__ import annotations

import importlib
import re
from contextlib import nullcontext

import dagster as dg
import pytest
from fakesnow_shim import Record, connect_factory
from sf_fakes import FakeJob, FakeJobs, FakeRegistry

from pcb_pipeline.backends.snowflake.stage import SnowflakeStage
from pcb_pipeline.defs.assets import GOLDEN_QUERY, assets, defect_logs
from pcb_pipeline.defs.checks import checks
from pcb_pipeline.defs.jobs import jobs
from pcb_pipeline.defs.snowflake_resources import (SnowflakeRegistryResource, SnowflakeSearchIndexResource,
                                                   SnowflakeStageResource, SnowflakeTrainingResource,
                                                   SnowflakeWarehouseResource, snowflake_resources)
from pcb_pipeline.demo import demo_run_config

EMULATED = re.compile(r"^(GET @|REMOVE @|LIST @\S+/|PUT '[^']*\*')")


def test_definitions_load_with_snowflake_resources(fake_account, monkeypatch):
    import pcb_pipeline.definitions as definitions

    try:
        module = importlib.reload(definitions)
        res = module.defs.resources
        from pcb_pipeline.defs.resources import local_resources

        assert set(res) == set(local_resources())
        assert {k: type(res[k]) for k in ("stage", "warehouse", "trainer", "registry", "search_index")} == {
            "stage": SnowflakeStageResource, "warehouse": SnowflakeWarehouseResource,
            "trainer": SnowflakeTrainingResource, "registry": SnowflakeRegistryResource,
            "search_index": SnowflakeSearchIndexResource}
        assert module.defs.resolve_job_def("pcb_pipeline_job") is not None
        monkeypatch.delenv("SNOWFLAKE_ACCOUNT")
        with pytest.raises(Exception, match="SNOWFLAKE_ACCOUNT"):
            importlib.reload(definitions)  # refuses to load: nothing runs with half a configuration
    finally:
        monkeypatch.setenv("PCB_BACKEND", "local")
        importlib.reload(definitions)


def test_graph_materialises_on_snowflake(fake_account, smoke_job, tmp_path, monkeypatch):
    from pcb_pipeline import settings

    monkeypatch.setenv("PCB_HOME", str(tmp_path / "home"))  # scratch folders and MLflow mirror of this test only
    settings.configure()

    res = snowflake_resources()
    sf = res["stage"].snowflake
    job_stage = SnowflakeStage(connect_factory(), "ML_JOB_STAGE")
    fake_jobs = FakeJobs(FakeJob("PCB.PIPELINE.PCB_TRAIN_1", ["PENDING", "RUNNING", "DONE"],
                                 [[], ["epoch 1/1: box_loss 3.1"], ["epoch 1/1: box_loss 3.1", "exported best.onnx"]]))
    fake_jobs.on_submit = lambda payload, args: job_stage.put_dir(smoke_job["output"],
                                                                   f"{args['kwargs']['name']}/output")
    fake_registry = FakeRegistry()

    class PlayedTrainer(SnowflakeTrainingResource):  # the real dispatcher; only snowflake.ml.jobs is played
        def jobs_api(self):
            return fake_jobs

        def session_factory(self):
            return nullcontext

    class PlayedRegistry(SnowflakeRegistryResource):  # the real registry adapter; only the Registry API is played
        def registry_factory(self):
            return lambda session: fake_registry

        def session_factory(self):
            return nullcontext

    resources = {**res,
                 "trainer": PlayedTrainer(snowflake=sf, poll_interval_s=0, work_dir=str(tmp_path / "work")),
                 "registry": PlayedRegistry(snowflake=sf, min_map50=0.0)}
    defs = dg.Definitions(assets=assets, asset_checks=checks, jobs=jobs, resources=resources)
    cfg = demo_run_config(profile="smoke", synthetic_groups=3, synthetic_images_per_group=6, overrides={"conf": 0.001},
                          input_mode="test")
    infer = {"defect_logs": {"config": {"confidence": 0.001}}}  # a 1-epoch model is not confident about anything
    cfg["ops"].update(infer)
    from pcb_pipeline.backends import factory  # the Snowflake branches used outside Dagster (CLI, app)

    wh = factory.warehouse()
    with dg.instance_for_test() as instance:
        first = defs.resolve_job_def("pcb_pipeline_job").execute_in_process(run_config=cfg, instance=instance)
        assert first.success
        materialised = {e.asset_key.path[-1] for e in first.get_asset_materialization_events()}
        assert materialised == {"raw_pcb_images", "pcb_metadata", "yolo_dataset", "trained_detector",
                                "registered_model", "defect_logs"}
        evaluations = [e.event_specific_data for e in first.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"]
        checks_ = {ev.check_name: ev.passed for ev in evaluations}
        assert checks_ == {"labels_valid": True, "no_split_leakage": True, "every_image_labelled": True}
        messages = [r.user_message for r in instance.all_logs(first.run_id)]
        assert "epoch 1/1: box_loss 3.1" in messages and "exported best.onnx" in messages, "job logs in the run log"
        rows_after_first = wh.query("SELECT COUNT(*) AS n FROM DEFECT_LOGS")["n"][0]

        second = dg.materialize([*assets], selection=[defect_logs], resources=resources, instance=instance,
                                run_config={"ops": infer})
        assert second.success

    assert wh.query("SELECT COUNT(*) AS n FROM PCB_METADATA")["n"][0] == 18
    logs = wh.query("SELECT * FROM DEFECT_LOGS")
    assert len(logs) == rows_after_first > 0, "the second run replaced its batch instead of adding to it"
    assert logs["inference_id"].is_unique and logs["image_path"].str.startswith("datasets/yolo/images/val/").all()
    assert logs["model_version"].str.startswith("PCB_DEFECT_DETECTOR/RUN_").all()
    assert wh.query("SELECT COUNT(*) AS n FROM BOARD_INSPECTIONS")["n"][0] == 6
    golden = wh.query(GOLDEN_QUERY)
    expected = logs[logs.factory_line_id == "SHANGHAI"].groupby("detected_class").size().to_dict()
    assert dict(zip(golden.iloc[:, 0], golden.iloc[:, 1])) == expected

    # the model went through the registry adapter with the GPU options, and became the champion
    call = fake_registry.log_model_calls[0]
    assert call["options"] == {"cuda_version": "12.4"} and call["target_platforms"] == ["SNOWPARK_CONTAINER_SERVICES"]
    assert fake_registry.get_model("PCB_DEFECT_DETECTOR").aliases["CHAMPION"].startswith("RUN_")
    stage = factory.stage()
    run_id = fake_registry.log_model_calls[0]["metrics"]["run_id"]
    assert {f.path.rsplit("/", 1)[1] for f in stage.list(f"models/{run_id}")} == {"best.pt", "best.onnx",
                                                                                  "metrics.json"}
    assert stage.list("predictions/heldout")

    # every statement went to fakesnow, except the four stage forms the shim emulates (and says so)
    records: list[Record] = fake_account.records
    assert {r.how for r in records} == {"fakesnow", "emulated", "write_pandas"}
    assert all(EMULATED.match(r.statement) for r in records if r.how == "emulated")
    kinds = {r.statement.split()[0].upper() for r in records if r.how == "fakesnow"}
    assert {"PUT", "LIST", "DESCRIBE", "CREATE", "BEGIN", "DELETE", "INSERT", "COMMIT", "MERGE", "DROP",
            "SELECT"} <= kinds
