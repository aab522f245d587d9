"""The upload planner on its own: a listing, a cursor, the clock and an in-memory history in, a plan out (no Dagster
instance, no stage directory). The sensor around it is tested in test_automation_sensor.py."""
from __future__ import annotations

import hashlib
from datetime import datetime, timezone

import pytest

import test_automation_support as support
from pcb_pipeline.backends.base import StageFile
from pcb_pipeline.backends.local import StagePathError
from pcb_pipeline.core.stage_layout import MAX_UPLOAD_BYTES
from pcb_pipeline.defs.upload_planner import (UploadCursor, UploadSensorSettings, image_signature_ok, key_problem,
                                              plan_uploads)
from pcb_pipeline.settings import SettingError

NOW = 1_800_000_000.0
SETTLED = UploadSensorSettings(settle_s=0.0, stable_s=0.0, interval_s=1)


class MemoryStage:
    """Files under uploads/ in memory: stage path -> (bytes, last_modified); optionally listed with another size."""

    def __init__(self):
        self.files: dict[str, tuple[bytes, float]] = {}
        self.listed_size: dict[str, int] = {}
        self.reads: list[str] = []
        self.unreadable: dict[str, Exception] = {}

    def put(self, key: str, data: bytes, mtime: float) -> None:
        self.files[f"uploads/{key}"] = (data, mtime)

    def listing(self) -> list[StageFile]:
        return [StageFile(p, self.listed_size.get(p, len(d)), datetime.fromtimestamp(t, tz=timezone.utc))
                for p, (d, t) in sorted(self.files.items())]

    def read(self, f: StageFile) -> bytes:
        self.reads.append(f.path)
        if f.path in self.unreadable:
            raise self.unreadable[f.path]
        return self.files[f.path][0]


class MemoryHistory:
    """What already ran: each launched request's run key, content and path (the UploadHistory protocol)."""

    def __init__(self):
        self.runs: list = []

    def launch(self, plan) -> None:
        self.runs += plan.requests

    def known_keys(self) -> set[str]:
        return {r.key for r in self.runs}

    def existing_run_keys(self, run_keys: list[str]) -> set[str]:
        return set(run_keys) & {r.run_key for r in self.runs}

    def content_owners(self, md5s: list[str]) -> dict[str, str]:
        owners: dict[str, str] = {}
        for r in self.runs:
            if r.md5 in md5s:
                owners.setdefault(r.md5, r.path)
        return owners

    def template_files_read(self, versions: list[str]) -> set[str]:
        return set(versions) & {r.template_file for r in self.runs}


def tick(stage: MemoryStage, history: MemoryHistory, cursor: UploadCursor, now: float = NOW,
         s: UploadSensorSettings = SETTLED):
    plan = plan_uploads(stage.listing(), cursor, now, s, history, stage.read)
    history.launch(plan)
    return plan


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def test_a_truncated_image_that_looks_settled_is_not_run_until_the_writer_finishes():
    """The flake of test_stress_1000_uploads_in_bursts_with_restarts (1004 runs for 1000 uploads): a non-atomic
    writer's first half, unchanged for longer than stable_s when a tick first lists it (the writer paused, or a loaded
    machine ticked late), passed every check (its JPEG header is there) and ran; the finished file ran again."""
    s = UploadSensorSettings()  # settle 2 s, stable 30 s
    stage, history = MemoryStage(), MemoryHistory()
    whole = support.jpeg_bytes(1)
    stage.put("slow.jpg", whole[: len(whole) // 2], NOW - 60)
    first = tick(stage, history, UploadCursor(), NOW, s)
    assert first.requests == []
    assert [(r.path, r.status) for r in first.reports] == [("uploads/slow.jpg", "rejected")]
    assert "cannot decode" in first.reports[0].reason
    assert tick(stage, history, first.cursor, NOW + 1, s).reports == [], "reported once, until the file changes"
    stage.put("slow.jpg", whole, NOW + 10)  # the writer finishes
    done = tick(stage, history, first.cursor, NOW + 50, s)
    assert [r.run_key for r in history.runs] == [f"slow.jpg@{md5(whole)}"]
    assert tick(stage, history, done.cursor, NOW + 51, s).requests == []


def test_each_filtered_upload_is_reported_not_silently_skipped():
    stage, history = MemoryStage(), MemoryHistory()
    for key in (".hidden.jpg", "big.jpg", "notes.txt", "a...b.jpg", "linked.jpg", "ok.jpg"):
        stage.put(key, support.jpeg_bytes(len(key)), NOW - 60)
    stage.listed_size["uploads/big.jpg"] = MAX_UPLOAD_BYTES + 1
    stage.unreadable["uploads/linked.jpg"] = StagePathError("stage path 'uploads/linked.jpg' passes through a "
                                                             "symbolic link")
    plan = tick(stage, history, UploadCursor())
    reasons = {r.path.removeprefix("uploads/"): r.reason for r in plan.reports if r.status == "rejected"}
    assert reasons.keys() == {".hidden.jpg", "big.jpg", "notes.txt", "a...b.jpg", "linked.jpg"}
    assert reasons[".hidden.jpg"].startswith("temporary file name")
    assert reasons["big.jpg"].startswith(f"too large: {MAX_UPLOAD_BYTES + 1:,} bytes")
    assert reasons["notes.txt"].startswith("not an image: suffix '.txt'")
    assert "partition key" in reasons["a...b.jpg"] and "symbolic link" in reasons["linked.jpg"]
    assert [r.key for r in plan.requests] == ["ok.jpg"]
    assert sorted(stage.reads) == ["uploads/linked.jpg", "uploads/ok.jpg"], "names and sizes alone need no read"
    assert {k for k, v in plan.cursor.seen.items() if v[2] == "r"} == reasons.keys()


def test_the_same_content_under_two_names_in_one_tick_runs_once():
    stage, history = MemoryStage(), MemoryHistory()
    stage.put("first.jpg", support.jpeg_bytes(5), NOW - 60)
    stage.put("second.jpg", support.jpeg_bytes(5), NOW - 59)
    plan = tick(stage, history, UploadCursor())
    assert [r.key for r in plan.requests] == ["first.jpg"]
    assert [(r.path, r.status, r.reason) for r in plan.reports] == [
        ("uploads/second.jpg", "duplicate", "same content as uploads/first.jpg: not inferred twice")]


def test_partition_keys_and_signatures():
    assert key_problem("ok/name.jpg") is None
    assert "escapes" in key_problem("../secrets.jpg")
    assert "partition key" in key_problem("a...b.jpg") and "partition key" in key_problem("tab\tname.jpg")
    assert image_signature_ok(support.jpeg_bytes(1)[:16]) and image_signature_ok(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR")
    assert not image_signature_ok(b"%PDF-1.7 ......") and not image_signature_ok(b"")


def test_sensor_settings_from_env_name_the_variable():
    s = UploadSensorSettings.from_env({"PCB_UPLOAD_SETTLE_S": "5", "PCB_UPLOAD_MAX_RUNS_PER_TICK": "20",
                                       "PCB_UPLOAD_STABLE_S": " "})
    assert s.settle_s == 5 and s.max_runs_per_tick == 20 and s.stable_s == 30 and s.running
    with pytest.raises(SettingError, match=r"^PCB_UPLOAD_SETTLE_S='soon' must be a number of seconds$"):
        UploadSensorSettings.from_env({"PCB_UPLOAD_SETTLE_S": "soon"})
    with pytest.raises(SettingError, match=r"^PCB_UPLOAD_LOOKBACK_S='-1' must be >= 0.0$"):
        UploadSensorSettings.from_env({"PCB_UPLOAD_LOOKBACK_S": "-1"})
    with pytest.raises(SettingError, match=r"^PCB_UPLOAD_MAX_RUNS_PER_TICK='0' must be >= 1$"):
        UploadSensorSettings.from_env({"PCB_UPLOAD_MAX_RUNS_PER_TICK": "0"})
    with pytest.raises(SettingError, match=r"^PCB_UPLOAD_SENSOR_INTERVAL_S='1.5' must be a whole number$"):
        UploadSensorSettings.from_env({"PCB_UPLOAD_SENSOR_INTERVAL_S": "1.5"})
    with pytest.raises(SettingError, match="PCB_UPLOAD_SENSOR='maybe' must be 'running' or 'stopped'"):
        UploadSensorSettings.from_env({"PCB_UPLOAD_SENSOR": "maybe"})
    assert not UploadSensorSettings.from_env({"PCB_UPLOAD_SENSOR": " Stopped "}).running
