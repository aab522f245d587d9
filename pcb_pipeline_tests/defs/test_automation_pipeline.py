"""Automation and reliability with real Dagster runs, a real DuckDB warehouse and a real MLflow registry.

Everything happens in isolated worlds (test_automation_support.World), never in the session's PCB_HOME. Models are
the tiny untrained checkpoint; training is the FakeTrainer (metrics chosen by the test, or a failure), so no test here
trains.
"""
from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import dagster as dg
import pytest
import yaml

import test_automation_support as support
from pcb_pipeline.defs.assets import UPLOAD_PARTITIONS, assets, defect_logs, raw_pcb_images, upload_defect_logs
from pcb_pipeline.defs.checks import checks
from pcb_pipeline.defs.jobs import build_nightly_retrain_job, freshness_checks_job, pcb_pipeline_job, upload_jobs
from pcb_pipeline.defs.quality_checks import (defect_log_problems, defect_logs_table_checks, gate_problems,
                                              quality_checks, sql_literal, upload_checks)
from pcb_pipeline.defs.schedules import (ScheduleConfigError, build_nightly_retrain_schedule,
                                         retrain_settings)
from pcb_pipeline.defs.sensors import failure_log_path, run_failure_reporter

REPO = Path(__file__).resolve().parents[2]
TINY = {"ops": {"upload_defect_logs": {"config": {"confidence": support.TINY_CONF}}}}
NO_WAIT_RETRY = dg.RetryPolicy(max_retries=1, delay=0.05, backoff=dg.Backoff.EXPONENTIAL)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A world whose champion is the tiny model (v1), with a few uploads and held-out boards on its stage."""
    w = support.make_world(tmp_path_factory.mktemp("automation_world"))
    support.register_champion(w, map50=0.9)
    for i in range(3):
        w.upload(f"u{i}.jpg", support.jpeg_bytes(i, 160))
        local = w.home / "tmp_val" / f"2000{i}.jpg"
        local.parent.mkdir(parents=True, exist_ok=True)
        local.write_bytes(support.jpeg_bytes(50 + i, 160))
        w.stage().put_file(local, f"datasets/yolo/images/val/2000{i}.jpg")
    yield w
    support.restore_session_mlflow()


def upload_defs(w: support.World) -> dg.Definitions:
    return dg.Definitions(assets=[upload_defect_logs], asset_checks=upload_checks, jobs=upload_jobs,
                          resources=w.resources())


def main_defs(w: support.World, trainer=None, min_map50: float = 0.5, retry=NO_WAIT_RETRY) -> dg.Definitions:
    return dg.Definitions(assets=assets, asset_checks=checks + quality_checks,
                          jobs=[pcb_pipeline_job, build_nightly_retrain_job(retry), freshness_checks_job],
                          resources=w.resources(min_map50=min_map50, trainer=trainer))


def check_results(result) -> dict[str, bool]:
    return {e.event_specific_data.check_name: e.event_specific_data.passed for e in result.all_events
            if e.event_type_value == "ASSET_CHECK_EVALUATION"}


def table_state(w: support.World, batch: str | None = None) -> dict:
    where = "" if batch is None else f" WHERE batch_id = '{batch}'"
    wh = w.warehouse()
    return {t: sorted(wh.query(f"SELECT * FROM {t}{where}").astype(str).values.tolist())
            for t in ("DEFECT_LOGS", "BOARD_INSPECTIONS")}


# ------------------------------------------------------------------------------------------------ inference
def test_upload_partition_lands_checks_pass_and_a_rerun_is_identical(world):
    defs = upload_defs(world)
    job = defs.resolve_job_def("upload_inference_job")
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(UPLOAD_PARTITIONS.name, ["u0.jpg", "u1.jpg"])
        first = job.execute_in_process(instance=instance, partition_key="u0.jpg", run_config=TINY)
        after_first = table_state(world)
        second = job.execute_in_process(instance=instance, partition_key="u0.jpg", run_config=TINY)
        other = job.execute_in_process(instance=instance, partition_key="u1.jpg", run_config=TINY)
    assert first.success and second.success and other.success
    assert check_results(first) == {"unique_inference_ids": True, "confidence_in_range": True,
                                    "boxes_inside_image": True, "valid_classes": True}
    batch = table_state(world, "uploads/u0.jpg")
    assert len(batch["BOARD_INSPECTIONS"]) == 1 and len(batch["DEFECT_LOGS"]) > 0
    assert {k: [r for r in v if "uploads/u0.jpg" in r] for k, v in after_first.items()} == batch, \
        "re-running a partition must leave identical rows (ids, timestamps, scores)"
    md = first.asset_materializations_for_node("upload_defect_logs")[0].metadata
    assert md["upload"].value == "uploads/u0.jpg" and md["model_version"].value == "pcb_defect_detector/1"
    assert (world.stage_root / "predictions" / "uploads" / "u0_pred.jpg").is_file()


def test_heldout_defect_logs_rerun_is_identical(world):
    cfg = {"ops": {"defect_logs": {"config": {"confidence": support.TINY_CONF}}}}
    with dg.instance_for_test() as instance:
        first = dg.materialize([defect_logs, defect_logs_table_checks], instance=instance,
                               resources=world.resources(), run_config=cfg)
        after_first = table_state(world)
        second = dg.materialize([defect_logs, defect_logs_table_checks], instance=instance,
                                resources=world.resources(), run_config=cfg)
    assert first.success and second.success
    assert all(check_results(second).values())
    assert table_state(world) == after_first
    assert len(table_state(world, "heldout")["BOARD_INSPECTIONS"]) == 3


# One partition run in its own process, on the world's PCB_HOME and Dagster instance (what the run launcher does).
PARTITION_RUNNER = """
import sys
import dagster as dg
from pcb_pipeline import settings
settings.configure()
from pcb_pipeline.defs.assets import upload_defect_logs
from pcb_pipeline.defs.quality_checks import upload_checks
from pcb_pipeline.defs.resources import local_resources
result = dg.materialize([upload_defect_logs, *upload_checks], partition_key=sys.argv[1],
                        instance=dg.DagsterInstance.get(), resources=local_resources(),
                        run_config={"ops": {"upload_defect_logs": {"config": {"confidence": 0.0001}}}})
sys.exit(0 if result.success else 1)
"""


def test_two_partitions_at_once_while_another_process_holds_the_warehouse(world):
    """DuckDB allows one writing process. Hold its lock from a third process, start two partition runs in two more
    processes, let go once both are waiting: both must land intact, and no earlier row may change."""
    for name, seed in (("c1.jpg", 71), ("c2.jpg", 72)):
        world.upload(name, support.jpeg_bytes(seed, 160))
    inst = world.instance()
    inst.add_dynamic_partitions(UPLOAD_PARTITIONS.name, ["c1.jpg", "c2.jpg"])
    before = table_state(world)
    release = world.home / "release_lock"
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import duckdb, os, sys, time\ncon = duckdb.connect(sys.argv[1])\nprint('locked', flush=True)\n"
         "while not os.path.exists(sys.argv[2]):\n    time.sleep(0.05)\ncon.close()\n",
         str(world.warehouse_path), str(release)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    runs, outputs = [], []
    try:
        for key in ("c1.jpg", "c2.jpg"):
            p = subprocess.Popen([sys.executable, "-c", PARTITION_RUNNER, key], cwd=REPO, env=world.env(),
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            lines: list[str] = []
            threading.Thread(target=lambda p=p, lines=lines: lines.extend(p.stdout), daemon=True).start()
            runs.append(p)
            outputs.append(lines)
        deadline = time.time() + 240
        while time.time() < deadline and not all(any("warehouse locked by another process" in ln for ln in out)
                                                  for out in outputs):
            assert all(p.poll() is None for p in runs), "".join(outputs[0][-30:] + outputs[1][-30:])
            time.sleep(0.2)
        assert all(any("warehouse locked" in ln for ln in out) for out in outputs), "both runs met the lock"
    finally:
        release.write_text("go")
        holder.wait(timeout=30)
    for p, out in zip(runs, outputs):
        assert p.wait(timeout=240) == 0, "".join(out[-40:])
    after = table_state(world)
    for key in ("c1.jpg", "c2.jpg"):
        batch = table_state(world, f"uploads/{key}")
        assert len(batch["BOARD_INSPECTIONS"]) == 1 and len(batch["DEFECT_LOGS"]) > 0
    untouched = {t: [r for r in rows if "uploads/c1.jpg" not in r and "uploads/c2.jpg" not in r]
                 for t, rows in after.items()}
    assert untouched == before


# ------------------------------------------------------------------------------------------------ checks
def test_defect_log_checks_catch_each_kind_of_bad_row():
    from pcb_pipeline.backends.local import DuckDBWarehouse
    from pcb_pipeline.core.defect_logs import DEFECT_LOG_COLUMNS

    wh = DuckDBWarehouse(":memory:")  # like Snowflake: the primary key is not enforced
    wh.execute("CREATE TABLE DEFECT_LOGS (" + ", ".join(f"{c} VARCHAR" if c in (
        "inference_id", "batch_id", "board_id", "detected_class", "bounding_box_coordinates", "factory_line_id",
        "model_version", "run_id", "image_path") else f"{c} TIMESTAMP" if c == "timestamp" else f"{c} DOUBLE"
                                                for c in DEFECT_LOG_COLUMNS) + ")")

    def row(iid, batch="b", cls=2, name="mousebite", conf=0.5, box=(10, 10, 20, 20), w=640, h=640):
        vals = {"inference_id": iid, "batch_id": batch, "board_id": "x", "timestamp": "2026-01-01 00:00:00",
                "detected_class": name, "class_id": cls, "confidence_score": conf, "bounding_box_coordinates": "[]",
                "x1": box[0], "y1": box[1], "x2": box[2], "y2": box[3], "image_width": w, "image_height": h,
                "factory_line_id": "SHANGHAI", "model_version": "m/1", "run_id": "r", "image_path": "p"}
        cols = ", ".join(vals)
        lits = ", ".join("NULL" if v is None else sql_literal(v) if isinstance(v, str) else str(v)
                         for v in vals.values())
        wh.execute(f"INSERT INTO DEFECT_LOGS ({cols}) VALUES ({lits})")

    row("good")
    assert all(not v for v in defect_log_problems(wh).values())
    row("dup"), row("dup")
    row("conf", conf=1.5)
    row("nullconf", conf=None)
    row("box", box=(600, 10, 700, 20))
    row("neg", box=(-1, 10, 20, 20))
    row("cls", cls=9, name="crack")
    row("mismatch", cls=0, name="short")
    row("quoted", batch="uploads/o'brien's \\board.jpg", conf=2.0)
    p = defect_log_problems(wh)
    assert [r["inference_id"] for r in p["unique_inference_ids"]] == ["dup"]
    assert sorted(r["inference_id"] for r in p["confidence_in_range"]) == ["conf", "nullconf", "quoted"]
    assert sorted(r["inference_id"] for r in p["boxes_inside_image"]) == ["box", "neg"]
    assert sorted(r["inference_id"] for r in p["valid_classes"]) == ["cls", "mismatch"]
    scoped = defect_log_problems(wh, "uploads/o'brien's \\board.jpg")  # quotes in a batch id are data, not SQL
    assert [r["inference_id"] for r in scoped["confidence_in_range"]] == ["quoted"]
    assert not scoped["unique_inference_ids"] and not scoped["boxes_inside_image"]


def test_defect_log_checks_fail_in_dagster_on_an_injected_row_and_freshness_warns(world, monkeypatch):
    wh = world.warehouse()
    wh.execute("INSERT INTO DEFECT_LOGS (inference_id, batch_id, board_id, timestamp, detected_class, class_id, "
               "confidence_score, x1, y1, x2, y2, image_width, image_height) VALUES ('injected', 'injected', 'x', "
               "'2026-01-01 00:00:00', 'spur', 3, 1.7, 0, 0, 900, 10, 640, 640)")
    try:
        job = dg.define_asset_job("all_checks", selection=dg.AssetSelection.checks(defect_logs_table_checks,
                                                                                   *freshness_checks_job_checks()))
        defs = dg.Definitions(assets=assets, asset_checks=checks + quality_checks, jobs=[job],
                              resources=world.resources())
        with dg.instance_for_test() as instance:
            res = defs.resolve_job_def("all_checks").execute_in_process(instance=instance, raise_on_error=False)
            results = check_results(res)
            assert results["confidence_in_range"] is False and results["boxes_inside_image"] is False
            assert results["unique_inference_ids"] is True and results["valid_classes"] is True
            assert results["champion_fresh"] is True  # promoted moments ago (MLflow version time)
            inspections = int(wh.query("SELECT COUNT(*) AS n FROM BOARD_INSPECTIONS")["n"][0])
            assert results["logs_fresh"] is (inspections > 0)  # rows of the inference tests are minutes old
            assert results["retrain_recent"] is False  # registered_model never materialised in this instance
            monkeypatch.setenv("PCB_LOGS_MAX_AGE_HOURS", "0.00001")
            monkeypatch.setenv("PCB_CHAMPION_MAX_AGE_HOURS", "0.00001")
            stale = check_results(defs.resolve_job_def("all_checks").execute_in_process(instance=instance,
                                                                                          raise_on_error=False))
            assert stale["logs_fresh"] is False and stale["champion_fresh"] is False
    finally:
        wh.execute("DELETE FROM DEFECT_LOGS WHERE batch_id = 'injected'")


def freshness_checks_job_checks():
    from pcb_pipeline.defs.quality_checks import freshness_checks

    return freshness_checks


def test_gate_problems_pure():
    from pcb_pipeline.backends.base import ModelVersion

    champ = ModelVersion("m", "3", "r", {"map50": 0.8}, "")
    assert gate_problems(champ, 0.5, {"version": "4", "promoted": False, "reason": "regresses"}) == []
    assert gate_problems(None, 0.5, {"version": "1", "promoted": False, "reason": "below"})[0].startswith(
        "no champion model; the latest candidate v1 was not promoted: below")
    assert "below the threshold" in gate_problems(champ, 0.9, None)[0]
    assert "rejected" in gate_problems(champ, 0.5, {"version": "3", "promoted": False, "reason": "x"})[0]
    assert "promoted but the champion is v3" in gate_problems(champ, 0.5, {"version": "4", "promoted": True,
                                                                           "reason": "y"})[0]


# ------------------------------------------------------------------------------------------------ nightly retrain
def test_nightly_schedule_defaults_config_and_errors():
    s = retrain_settings({})
    assert (s.cron, s.timezone, s.profile, s.running) == ("0 2 * * *", "UTC", "demo", True)
    sched = build_nightly_retrain_schedule(s)
    assert sched.cron_schedule == "0 2 * * *" and sched.execution_timezone == "UTC"
    assert sched.default_status == dg.DefaultScheduleStatus.RUNNING
    custom = retrain_settings({"PCB_RETRAIN_CRON": "30 3 * * 1-5", "PCB_RETRAIN_TIMEZONE": "Asia/Shanghai",
                               "PCB_RETRAIN_PROFILE": "full", "PCB_RETRAIN_OVERRIDES": '{"epochs": 30}',
                               "PCB_RETRAIN_SCHEDULE": "stopped"})
    sched = build_nightly_retrain_schedule(custom)
    assert sched.cron_schedule == "30 3 * * 1-5" and sched.execution_timezone == "Asia/Shanghai"
    assert sched.default_status == dg.DefaultScheduleStatus.STOPPED
    when = datetime(2026, 3, 2, 3, 30, tzinfo=timezone.utc)
    req = sched.evaluate_tick(dg.build_schedule_context(scheduled_execution_time=when)).run_requests[0]
    assert req.run_config == {"ops": {"trained_detector": {"config": {"profile": "full",
                                                                      "overrides": {"epochs": "30"}}}}}
    assert req.run_key == f"nightly_retrain:{when.isoformat()}" and req.tags["pcb/trigger"] == "nightly_retrain"
    from pcb_pipeline.definitions import defs

    job = defs.resolve_job_def("nightly_retrain_job")
    assert {k.to_user_string() for k in job.asset_layer.selected_asset_keys} == {
        "yolo_dataset", "trained_detector", "registered_model"}
    assert dg.validate_run_config(job, req.run_config)
    for env, var in (({"PCB_RETRAIN_CRON": "at two"}, "PCB_RETRAIN_CRON"),
                     ({"PCB_RETRAIN_CRON": "0 25 * * *"}, "PCB_RETRAIN_CRON"),
                     ({"PCB_RETRAIN_TIMEZONE": "Mars/Olympus"}, "PCB_RETRAIN_TIMEZONE"),
                     ({"PCB_RETRAIN_PROFILE": "huge"}, "PCB_RETRAIN_PROFILE"),
                     ({"PCB_RETRAIN_OVERRIDES": "{epochs: 3"}, "PCB_RETRAIN_OVERRIDES"),
                     ({"PCB_RETRAIN_OVERRIDES": "[1, 2]"}, "PCB_RETRAIN_OVERRIDES")):
        with pytest.raises(ScheduleConfigError, match=var):
            retrain_settings(env)


@pytest.fixture(scope="module")
def retrain_world(tmp_path_factory):
    """A world with raw boards landed and a champion v1 (mAP50 0.7)."""
    w = support.make_world(tmp_path_factory.mktemp("retrain_world"))
    support.register_champion(w, map50=0.7)
    res = dg.materialize([raw_pcb_images], resources=w.resources(), run_config={"ops": {"raw_pcb_images": {
        "config": {"synthetic_groups": 3, "synthetic_images_per_group": 3}}}})
    assert res.success
    yield w
    support.restore_session_mlflow()


def _nightly(w, trainer, instance, min_map50=0.3, retry=NO_WAIT_RETRY):
    defs = main_defs(w, trainer=trainer, min_map50=min_map50, retry=retry)
    return defs.resolve_job_def("nightly_retrain_job").execute_in_process(
        instance=instance, raise_on_error=False,
        run_config={"ops": {"trained_detector": {"config": {"profile": "smoke"}}}})


def _trainer(w, **kw):
    return support.FakeTrainer(work_dir=str(w.home / "work"), tracking_uri=w.tracking_uri, home=str(w.home), **kw)


def test_nightly_worse_model_is_not_promoted_and_the_reason_is_visible(retrain_world):
    w = retrain_world
    with dg.instance_for_test() as instance:
        res = _nightly(w, _trainer(w, map50=0.4), instance)
    assert res.success
    md = res.asset_materializations_for_node("registered_model")[0].metadata
    assert md["promoted"].value is False and md["version"].value == "2"
    assert "regresses against champion v1" in md["promotion_reason"].value
    assert w.registry().champion().version == "1"
    tag = w.client().get_model_version("pcb_defect_detector", "2").tags["promotion"]
    assert tag.startswith("rejected: mAP50 0.4000 regresses")
    assert check_results(res)["model_gate"] is True  # the champion (v1) is still sound
    gate = next(e for e in res.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"
                and e.event_specific_data.check_name == "model_gate").event_specific_data.metadata
    assert gate["latest_decision"].value.startswith("rejected: mAP50 0.4000 regresses")
    support.restore_session_mlflow()


def test_nightly_transient_failure_is_retried_then_a_better_model_is_promoted(retrain_world):
    w = retrain_world
    trainer = _trainer(w, map50=0.95, fail_times=1, token="transient")
    with dg.instance_for_test() as instance:
        res = _nightly(w, trainer, instance)
    assert res.success and support.failures_so_far("transient") == 1
    assert any(e.event_type_value == "STEP_UP_FOR_RETRY" and e.step_key == "trained_detector" for e in res.all_events)
    md = res.asset_materializations_for_node("registered_model")[0].metadata
    assert md["promoted"].value is True and w.registry().champion().version == md["version"].value
    support.restore_session_mlflow()


def test_nightly_failed_training_leaves_the_champion_untouched_and_is_reported(retrain_world, tmp_path,
                                                                                monkeypatch):
    w = retrain_world
    champion_before = w.registry().champion()
    versions_before = len(w.client().search_model_versions("name='pcb_defect_detector'"))
    monkeypatch.setenv("PCB_FAILURE_LOG", str(tmp_path / "failures.jsonl"))
    with dg.instance_for_test() as instance:
        res = _nightly(w, _trainer(w, fail_times=99, token="hard"), instance)
        assert not res.success and support.failures_so_far("hard") == 2  # first try + one retry
        assert not res.asset_materializations_for_node("registered_model")
        ctx = dg.build_run_status_sensor_context(sensor_name="run_failure_reporter",
                                                 dagster_event=res.get_run_failure_event(),
                                                 dagster_instance=instance,
                                                 dagster_run=res.dagster_run).for_run_failure()
        run_failure_reporter(ctx)
    assert w.registry().champion() == champion_before
    assert len(w.client().search_model_versions("name='pcb_defect_detector'")) == \
        versions_before
    records = [json.loads(line) for line in failure_log_path().read_text().splitlines()]
    assert len(records) == 1
    rec = records[0]
    assert rec["job"] == "nightly_retrain_job" and rec["run_id"] == res.run_id
    assert rec["failed_steps"][0]["assets"] == ["trained_detector"]
    assert "GPU compute pool unavailable" in rec["reason"]
    assert {"trained_detector", "registered_model"} <= set(rec["assets_not_materialized"])
    support.restore_session_mlflow()


def test_gate_blocks_inference_in_the_same_run_when_no_model_qualifies(retrain_world):
    w = retrain_world  # a model name of its own: no champion at all
    from pcb_pipeline.backends.mlflow_registry import MLflowRegistry
    from pcb_pipeline.defs.assets import registered_model, trained_detector
    from pcb_pipeline.defs.quality_checks import model_gate

    try:
        with dg.instance_for_test() as instance:
            res = dg.materialize([trained_detector, registered_model, defect_logs, model_gate], instance=instance,
                                 resources=w.resources(min_map50=0.5, trainer=_trainer(w, map50=0.2),
                                                       model_name="gate_test_model"),
                                 raise_on_error=False)
        assert check_results(res) == {"model_gate": False}
        assert "below the threshold" in res.asset_materializations_for_node("registered_model")[0].metadata[
            "promotion_reason"].value
        started = {e.step_key for e in res.all_events if e.event_type_value == "STEP_START"}
        assert "defect_logs" not in started, "a failed blocking gate must stop inference before it starts"
        assert MLflowRegistry(w.tracking_uri, "gate_test_model").champion() is None
    finally:
        support.restore_session_mlflow()


# ------------------------------------------------------------------------------------------------ definitions
def test_both_code_locations_load_and_star_selection_stays_materialisable():
    from pcb_pipeline.definitions import defs as main
    from pcb_pipeline.upload_definitions import defs as uploads

    graph = main.resolve_asset_graph()
    keys = graph.get_all_asset_keys()
    assert all(graph.get(k).partitions_def is None for k in keys), "`--select '*'` needs no partitioned asset here"
    assert main.get_repository_def().get_implicit_job_def_for_assets(list(keys)) is not None
    assert {s.name for s in main.resolve_all_job_defs()} >= {"pcb_pipeline_job", "nightly_retrain_job",
                                                            "freshness_checks_job"}
    assert main.resolve_schedule_def("nightly_retrain").cron_schedule == retrain_settings().cron
    assert main.resolve_schedule_def("freshness_checks_schedule")
    assert main.resolve_sensor_def("run_failure_reporter")
    checks_ = {c.to_user_string() for c in graph.asset_check_keys}
    assert {"registered_model:model_gate", "registered_model:champion_fresh", "defect_logs:logs_fresh",
            "defect_logs:unique_inference_ids", "defect_logs:confidence_in_range", "defect_logs:boxes_inside_image",
            "defect_logs:valid_classes"} <= checks_
    assert next(s for s in graph.get(dg.AssetKey("registered_model")).check_keys if s.name == "model_gate")
    ugraph = uploads.resolve_asset_graph()
    node = ugraph.get(dg.AssetKey("upload_defect_logs"))
    assert isinstance(node.partitions_def, dg.DynamicPartitionsDefinition) and node.partitions_def.name == "uploads"
    assert {p.to_user_string() for p in node.parent_keys} == {"registered_model", "pcb_metadata"}
    assert uploads.resolve_sensor_def("upload_sensor") and uploads.resolve_job_def("upload_inference_job")
    ws = yaml.safe_load((REPO / "workspace.yaml").read_text())
    modules = [e["python_module"]["module_name"] for e in ws["load_from"]]
    assert modules == ["pcb_pipeline.definitions", "pcb_pipeline.upload_definitions"]


def test_retry_policies_on_inference_and_the_nightly_job():
    from pcb_pipeline.defs.jobs import nightly_retrain_job

    for a in (defect_logs, upload_defect_logs):
        policy = a.op.retry_policy
        assert policy.max_retries >= 2 and policy.backoff == dg.Backoff.EXPONENTIAL
    assert nightly_retrain_job.op_retry_policy.backoff == dg.Backoff.EXPONENTIAL
