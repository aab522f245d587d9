"""Sensors: new uploads -> dynamic partitions of upload_defect_logs, and a run-failure reporter.

Upload sensor (`upload_sensor`, code location pcb_uploads)
-----------------------------------------------------------
Each tick lists the stage's `uploads/` folder (a directory locally, LIST on a Snowflake stage) and lets the upload
planner (defs/upload_planner.py, where the rules are written down) decide which files run: one run per new
(path, content), run key `<path>@<md5>[+template@<md5>]`, never twice. Waiting, rejected and duplicate files are
reported in the tick's skip reason and the sensor's log.

The durable state is Dagster's: the dynamic partitions and the runs' tags (`dagster/run_key`, `pcb/content_md5`,
`pcb/template_file`); the cursor only avoids re-reading files. Uploads wait (the cursor does not move) while there is
no champion model.

Settings (environment, read when the code location loads): PCB_UPLOAD_SETTLE_S (2), PCB_UPLOAD_STABLE_S (30),
PCB_UPLOAD_LOOKBACK_S (600), PCB_UPLOAD_MAX_RUNS_PER_TICK (100), PCB_UPLOAD_SENSOR_INTERVAL_S (15),
PCB_UPLOAD_SENSOR (running | stopped).

Run-failure sensor (`run_failure_reporter`, code location pcb_pipeline, watches every location)
---------------------------------------------------------------------------------------------
Appends one JSON line per failed run to PCB_FAILURE_LOG (default PCB_HOME/alerts/run_failures.jsonl): run, job,
partition, trigger, each failed step with its asset and reason, and the assets the run did not materialise; the
same record goes to the sensor's log in the Dagster UI.
"""

import json
import os
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Callable

import dagster as dg

from pcb_pipeline import settings
from pcb_pipeline.core.stage_layout import UPLOAD_PREFIX
from pcb_pipeline.defs.assets import UPLOAD_PARTITIONS
from pcb_pipeline.defs.jobs import upload_inference_job
from pcb_pipeline.defs.resources import RegistryProvider, StageProvider
from pcb_pipeline.defs.upload_planner import (UploadCursor, UploadPlan, UploadReport, UploadRequest,
                                              UploadSensorSettings, plan_uploads)

UPLOAD_SENSOR_NAME = "upload_sensor"
RUN_KEY_TAG = "dagster/run_key"
PARTITION_TAG = "dagster/partition"
CONTENT_TAG = "pcb/content_md5"
PATH_TAG = "pcb/upload_path"
TEMPLATE_TAG = "pcb/template_md5"
TEMPLATE_FILE_TAG = "pcb/template_file"  # file_version of the template a run read


# ------------------------------------------------------------------------------------------------ upload history
class DagsterUploadHistory:
    """The planner's UploadHistory, read from a Dagster instance: partitions and the runs' tags."""

    def __init__(self, instance, partitions_name: str = UPLOAD_PARTITIONS.name):
        self.instance = instance
        self.partitions_name = partitions_name
        self._known: set[str] | None = None

    def known_keys(self) -> set[str]:
        if self._known is None:
            self._known = set(self.instance.get_dynamic_partitions(self.partitions_name))
        return self._known

    def existing_run_keys(self, run_keys: list[str]) -> set[str]:
        return self._tag_values(RUN_KEY_TAG, run_keys)

    def content_owners(self, md5s: list[str]) -> dict[str, str]:
        """md5 -> the upload path of the first run that inferred it."""
        if not md5s:
            return {}
        runs = self.instance.get_runs(filters=dg.RunsFilter(tags={CONTENT_TAG: list(md5s)}))
        return {r.tags[CONTENT_TAG]: r.tags.get(PATH_TAG, "?") for r in runs}  # newest first: the oldest stays

    def template_files_read(self, versions: list[str]) -> set[str]:
        """Which template file versions (``file_version``) some run already read (tag pcb/template_file)."""
        return self._tag_values(TEMPLATE_FILE_TAG, versions)

    def _tag_values(self, tag: str, values: list[str]) -> set[str]:
        """Those of `values` that some run carries as its `tag`."""
        if not values:
            return set()
        runs = self.instance.get_runs(filters=dg.RunsFilter(tags={tag: list(values)}))
        return {r.tags[tag] for r in runs if tag in r.tags}


# ------------------------------------------------------------------------------------------------ upload sensor
def stage_reader(st) -> Callable[[object], bytes]:
    """Read a listed file's bytes: straight from disk for the local stage, else through GET into a temp folder."""
    from pcb_pipeline.backends.local import LocalStage

    if isinstance(st, LocalStage):
        return lambda f: st.path(f.path).read_bytes()

    def download(f) -> bytes:
        with tempfile.TemporaryDirectory(prefix="upload-sensor-") as tmp:
            return Path(st.get_file(f.path, Path(tmp) / PurePosixPath(f.path).name)).read_bytes()

    return download


def stored_cursor(context: dg.SensorEvaluationContext) -> UploadCursor:
    """The cursor of the last tick; an unreadable one starts afresh (runs and partitions prevent repeats)."""
    try:
        return UploadCursor.loads(context.cursor)
    except (ValueError, KeyError, TypeError) as e:
        context.log.warning(f"unreadable cursor ({e}); starting afresh (runs and partitions prevent repeats)")
        return UploadCursor()


def log_reports(log, reports: list[UploadReport]) -> None:
    for r in reports:
        if r.status in ("rejected", "duplicate", "error"):
            log.warning(f"skipped {r.path}: {r.reason}")
        elif r.status == "waiting":
            log.info(f"waiting for {r.path}: {r.reason}")
        elif r.status == "template":
            log.info(f"{r.path}: {r.reason}")


def champion_missing(plan: UploadPlan, registry: RegistryProvider) -> str | None:
    """Why the planned runs must wait for a champion model (None: they need not)."""
    if not plan.requests:
        return None
    try:
        champion = registry.get().champion()
    except Exception as e:  # noqa: BLE001
        return f"{len(plan.requests)} upload(s) ready; registry unavailable ({e}): waiting"
    if champion is None:
        return (f"{len(plan.requests)} upload(s) ready but there is no champion model yet: they run once "
                "registered_model promotes one")
    return None


def upload_run_request(r: UploadRequest) -> dg.RunRequest:
    template_tags = {TEMPLATE_TAG: r.template_md5, TEMPLATE_FILE_TAG: r.template_file} if r.template_md5 else {}
    return dg.RunRequest(run_key=r.run_key, partition_key=r.key,
                         tags={CONTENT_TAG: r.md5, PATH_TAG: r.path, **template_tags})


def sensor_result(plan: UploadPlan) -> dg.SensorResult:
    """The plan as Dagster takes it: new partitions, their runs, the next cursor (and why nothing runs)."""
    run_requests = [upload_run_request(r) for r in plan.requests]
    partitions = [UPLOAD_PARTITIONS.build_add_request([r.key for r in plan.requests])] if plan.requests else None
    return dg.SensorResult(run_requests=run_requests, dynamic_partitions_requests=partitions,
                           cursor=plan.cursor.dumps(), skip_reason=None if run_requests else plan.summary())


def build_upload_sensor(s: UploadSensorSettings | None = None, name: str = UPLOAD_SENSOR_NAME,
                        job=upload_inference_job) -> dg.SensorDefinition:
    s = s or UploadSensorSettings.from_env()

    @dg.sensor(name=name, job=job, minimum_interval_seconds=s.interval_s,
               default_status=dg.DefaultSensorStatus.RUNNING if s.running else dg.DefaultSensorStatus.STOPPED,
               description=f"new images under the stage's {UPLOAD_PREFIX}/ folder -> one upload_defect_logs "
                           "partition each (run key = path@md5[+template@md5]: never twice)")
    def upload_sensor(context: dg.SensorEvaluationContext, stage: StageProvider, registry: RegistryProvider):
        cursor = stored_cursor(context)
        try:
            st = stage.get()
            files = st.list(UPLOAD_PREFIX)
        except Exception as e:  # noqa: BLE001 - a stage outage is a skipped tick, not a crashed sensor
            return dg.SkipReason(f"cannot list the stage's {UPLOAD_PREFIX}/ folder: {type(e).__name__}: {e}")
        plan = plan_uploads(files, cursor, time.time(), s, DagsterUploadHistory(context.instance), stage_reader(st))
        log_reports(context.log, plan.reports)
        wait = champion_missing(plan, registry) if s.wait_for_champion else None
        return dg.SkipReason(wait) if wait else sensor_result(plan)

    return upload_sensor


# ------------------------------------------------------------------------------------------------ run failures
def failure_log_path() -> Path:
    return Path(os.environ.get("PCB_FAILURE_LOG") or settings.paths().home / "alerts" / "run_failures.jsonl")


def _deepest_message(error) -> tuple[str, str]:
    while error is not None and getattr(error, "cause", None) is not None:
        error = error.cause
    if error is None:
        return "unknown error", ""
    return (error.message or "").strip().splitlines()[-1] if error.message else "", error.cls_name or ""


def _step_assets(instance, run) -> dict[str, list[str]]:
    """step key -> asset (or asset check) names, from the run's execution plan."""
    out: dict[str, list[str]] = {}
    try:
        plan = instance.get_execution_plan_snapshot(run.execution_plan_snapshot_id)
        for step in plan.steps:
            for o in step.outputs:
                props = getattr(o, "properties", None)
                if props is None:
                    continue
                if props.asset_key is not None:
                    out.setdefault(step.key, []).append(props.asset_key.to_user_string())
                elif getattr(props, "asset_check_key", None) is not None:
                    ck = props.asset_check_key
                    out.setdefault(step.key, []).append(f"{ck.asset_key.to_user_string()}:{ck.name}")
    except Exception:  # noqa: BLE001 - fall back to the step key below
        pass
    return out


def failure_record(context) -> dict:
    """A structured description of a failed run: which assets, which steps, why."""
    run = context.dagster_run
    instance = context.instance
    by_step = _step_assets(instance, run)
    failed = []
    for ev in context.get_step_failure_events():
        data = ev.step_failure_data
        reason, cls = _deepest_message(data.error if data else None)
        if data is not None and data.user_failure_data is not None and data.user_failure_data.description:
            reason = data.user_failure_data.description
        failed.append({"step": ev.step_key, "assets": by_step.get(ev.step_key, [ev.step_key]), "reason": reason,
                       "error_type": cls})
    planned, done = set(), set()
    try:
        for rec in instance.all_logs(run.run_id, of_type={dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED,
                                                          dg.DagsterEventType.ASSET_MATERIALIZATION}):
            ev = rec.dagster_event
            (planned if ev.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED else done).add(
                ev.asset_key.to_user_string())
    except Exception:  # noqa: BLE001
        pass
    tags = run.tags or {}
    trigger = tags.get("dagster/schedule_name") or tags.get("dagster/sensor_name") or tags.get("pcb/trigger") or \
        "manual"
    return {
        "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "run_id": run.run_id,
        "job": run.job_name,
        "partition": tags.get(PARTITION_TAG),
        "trigger": trigger,
        "failed_steps": failed,
        "assets_not_materialized": sorted(planned - done),
        "reason": failed[0]["reason"] if failed else (context.failure_event.message or "run failed"),
    }


@dg.run_failure_sensor(name="run_failure_reporter", monitor_all_code_locations=True,
                       default_status=dg.DefaultSensorStatus.RUNNING,
                       description="writes a structured record (asset, step, reason) of every failed run to "
                                   "PCB_FAILURE_LOG (default PCB_HOME/alerts/run_failures.jsonl)")
def run_failure_reporter(context: dg.RunFailureSensorContext):
    record = failure_record(context)
    path = failure_log_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record, sort_keys=True) + "\n")
    assets = sorted({a for s in record["failed_steps"] for a in s["assets"]})
    context.log.error(f"run {record['run_id']} ({record['job']}) failed in {', '.join(assets) or 'the run'}: "
                      f"{record['reason']} — recorded in {path}")


upload_sensor = build_upload_sensor()
sensors = [run_failure_reporter]  # the pcb_pipeline code location
upload_sensors = [upload_sensor]  # the pcb_uploads code location
