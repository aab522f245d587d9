"""Schedules: the nightly retrain (dataset -> train -> register) and the hourly freshness checks.

Configured from the environment when the code location loads (a wrong value stops the load with an error naming the
variable):

| variable | default | meaning |
|---|---|---|
| PCB_RETRAIN_CRON | `0 2 * * *` | when the retrain runs (cron, 5 fields) |
| PCB_RETRAIN_TIMEZONE | `UTC` | IANA time zone the cron is read in, e.g. `Asia/Shanghai` |
| PCB_RETRAIN_PROFILE | `demo` | training profile (`demo` CPU, `full` GPU, `smoke` tests) |
| PCB_RETRAIN_OVERRIDES | `{}` | JSON object of ultralytics train() overrides, e.g. `{"epochs": 30}` |
| PCB_RETRAIN_SCHEDULE | `running` | `running` or `stopped`: the schedule's default state in a fresh instance |
| PCB_FRESHNESS_CRON | `0 * * * *` | when the champion/log freshness checks run |
"""

import json
import os
from dataclasses import dataclass, field
from typing import Mapping
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import dagster as dg

from pcb_pipeline.defs.jobs import freshness_checks_job, nightly_retrain_job
from pcb_pipeline.settings import env_choice
from pcb_pipeline.vision.profiles import PROFILES


class ScheduleConfigError(ValueError):
    """A wrong schedule setting; the message names the environment variable."""


@dataclass(frozen=True)
class RetrainSettings:
    cron: str = "0 2 * * *"
    timezone: str = "UTC"
    profile: str = "demo"
    overrides: dict = field(default_factory=dict)
    running: bool = True


def _valid_cron(cron: str) -> bool:
    """Five fields that Dagster itself accepts (a ScheduleDefinition refuses an invalid cron string)."""
    if len(cron.split()) != 5:
        return False
    try:
        dg.ScheduleDefinition(name="cron_probe", cron_schedule=cron, job_name="cron_probe")
    except dg.DagsterInvalidDefinitionError:
        return False
    return True


def retrain_settings(env: Mapping[str, str] | None = None) -> RetrainSettings:
    env = os.environ if env is None else env
    get = lambda name, default: (env.get(name) or "").strip() or default  # noqa: E731
    cron = get("PCB_RETRAIN_CRON", "0 2 * * *")
    if not _valid_cron(cron):
        raise ScheduleConfigError(f"PCB_RETRAIN_CRON={cron!r} is not a 5-field cron expression (e.g. '0 2 * * *')")
    tz = get("PCB_RETRAIN_TIMEZONE", "UTC")
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise ScheduleConfigError(f"PCB_RETRAIN_TIMEZONE={tz!r} is not an IANA time zone (e.g. 'UTC', "
                                  f"'Asia/Shanghai')") from None
    profile = get("PCB_RETRAIN_PROFILE", "demo")
    if profile not in PROFILES:
        raise ScheduleConfigError(f"PCB_RETRAIN_PROFILE={profile!r} is not a training profile: choose one of "
                                  f"{sorted(PROFILES)}")
    raw = get("PCB_RETRAIN_OVERRIDES", "{}")
    try:
        overrides = json.loads(raw)
    except json.JSONDecodeError as e:
        raise ScheduleConfigError(f"PCB_RETRAIN_OVERRIDES is not valid JSON ({e.msg})") from None
    if not isinstance(overrides, dict):
        raise ScheduleConfigError("PCB_RETRAIN_OVERRIDES must be a JSON object, e.g. '{\"epochs\": 30}'")
    state = env_choice(env, "PCB_RETRAIN_SCHEDULE", ("running", "stopped"), "running", error=ScheduleConfigError)
    return RetrainSettings(cron, tz, profile, {str(k): str(v) for k, v in overrides.items()}, state == "running")


def retrain_run_config(s: RetrainSettings) -> dict:
    return {"ops": {"trained_detector": {"config": {"profile": s.profile, "overrides": dict(s.overrides)}}}}


def build_nightly_retrain_schedule(s: RetrainSettings | None = None, job=nightly_retrain_job) -> dg.ScheduleDefinition:
    s = s or retrain_settings()

    @dg.schedule(name="nightly_retrain", cron_schedule=s.cron, execution_timezone=s.timezone, job=job,
                 default_status=dg.DefaultScheduleStatus.RUNNING if s.running else dg.DefaultScheduleStatus.STOPPED,
                 description=f"dataset -> train -> register at '{s.cron}' ({s.timezone}), profile {s.profile}; "
                             "a worse or failed model is never promoted")
    def nightly_retrain(context: dg.ScheduleEvaluationContext):
        when = context.scheduled_execution_time
        stamp = when.isoformat() if when else "manual"
        return dg.RunRequest(run_key=f"nightly_retrain:{stamp}", run_config=retrain_run_config(s),
                             tags={"pcb/trigger": "nightly_retrain", "pcb/scheduled_for": stamp,
                                   "pcb/profile": s.profile})

    return nightly_retrain


def build_freshness_schedule(env: Mapping[str, str] | None = None) -> dg.ScheduleDefinition:
    env = os.environ if env is None else env
    cron = (env.get("PCB_FRESHNESS_CRON") or "").strip() or "0 * * * *"
    if not _valid_cron(cron):
        raise ScheduleConfigError(f"PCB_FRESHNESS_CRON={cron!r} is not a 5-field cron expression")
    return dg.ScheduleDefinition(name="freshness_checks_schedule", job=freshness_checks_job, cron_schedule=cron,
                                 default_status=dg.DefaultScheduleStatus.RUNNING,
                                 description="champion and DEFECT_LOGS freshness checks")


nightly_retrain_schedule = build_nightly_retrain_schedule()
freshness_checks_schedule = build_freshness_schedule()

schedules = [nightly_retrain_schedule, freshness_checks_schedule]
