"""The upload sensor: real stage directory, real Dagster instance, `build_sensor_context`, daemon-style launching.

No inference runs here (see test_automation_pipeline.py): a tick's run requests are "launched" the way the daemon
does it (dynamic partitions added, one run per run key) so that what the sensor would cause is what is asserted.
"""
from __future__ import annotations

import importlib.util
import json
import os
import time
from pathlib import Path

import dagster as dg
import pytest

import test_automation_support as support
from pcb_pipeline.defs.assets import upload_defect_logs
from pcb_pipeline.defs.jobs import upload_inference_job
from pcb_pipeline.defs.resources import RegistryResource, StageResource, WarehouseResource
from pcb_pipeline.defs.sensors import (CONTENT_TAG, PATH_TAG, RUN_KEY_TAG, TEMPLATE_TAG, UPLOAD_SENSOR_NAME,
                                       DagsterUploadHistory, build_upload_sensor)
from pcb_pipeline.defs.upload_planner import UploadCursor, UploadSensorSettings, plan_uploads

REPO = Path(__file__).resolve().parents[2]
OLD = time.time() - 600  # back-dated uploads are settled at once


class StubRegistry(RegistryResource):
    """A registry whose champion exists or not, without MLflow."""

    has_champion: bool = True

    def get(self):
        has = self.has_champion

        class _Reg:
            def champion(self):
                return object() if has else None

        return _Reg()


class Daemon:
    """Evaluates the sensor like the sensor daemon and launches (records) runs with its run-key guarantee."""

    def __init__(self, instance, stage_root: Path, settings: UploadSensorSettings, has_champion: bool = True):
        self.instance = instance
        self.settings = settings
        self.sensor = build_upload_sensor(settings)
        self.resources = {"stage": StageResource(root=str(stage_root)),
                          "registry": StubRegistry(tracking_uri="sqlite://", has_champion=has_champion)}
        self.repo = dg.Definitions(assets=[upload_defect_logs], jobs=[upload_inference_job], sensors=[self.sensor],
                                   resources={**self.resources,
                                              "warehouse": WarehouseResource(path=str(stage_root / "x.duckdb"))}
                                   ).get_repository_def()
        self.cursor: str | None = None
        self.launched: list[dg.RunRequest] = []

    def tick(self, keep_cursor: bool = True):
        ctx = dg.build_sensor_context(instance=self.instance, cursor=self.cursor, resources=self.resources,
                                      sensor_name=UPLOAD_SENSOR_NAME, repository_def=self.repo,
                                      instance_ref=self.instance.get_ref())
        data = self.sensor.evaluate_tick(ctx)  # resolves the run requests' partitions against the instance
        for req in data.dynamic_partitions_requests or []:
            self.instance.add_dynamic_partitions(req.partitions_def_name, list(req.partition_keys))
        new = []
        for rr in data.run_requests or []:
            if self.instance.get_runs(filters=dg.RunsFilter(tags={RUN_KEY_TAG: rr.run_key})):
                continue
            self.instance.add_run(dg.DagsterRun(job_name=upload_inference_job.name,
                                                tags={**rr.tags, RUN_KEY_TAG: rr.run_key}))
            new.append(rr)
        self.launched += new
        if keep_cursor and data.cursor is not None:
            self.cursor = data.cursor
        return new, data


@pytest.fixture
def world(tmp_path):
    return support.World(tmp_path)


@pytest.fixture
def instance():
    with dg.instance_for_test() as inst:
        yield inst


SETTLED = UploadSensorSettings(settle_s=0.0, stable_s=0.0, lookback_s=3600, interval_s=1)


def test_new_upload_becomes_one_partition_and_one_run(world, instance):
    d = Daemon(instance, world.stage_root, SETTLED)
    world.upload("a.jpg", support.jpeg_bytes(1), OLD)
    world.upload("line3/b.png", _png(), OLD)
    new, data = d.tick()
    assert sorted(r.partition_key for r in new) == ["a.jpg", "line3/b.png"]
    assert set(instance.get_dynamic_partitions("uploads")) == {"a.jpg", "line3/b.png"}
    a = next(r for r in new if r.partition_key == "a.jpg")
    import hashlib

    md5 = hashlib.md5(support.jpeg_bytes(1)).hexdigest()
    assert a.run_key == f"a.jpg@{md5}" and a.tags[CONTENT_TAG] == md5 and a.tags[PATH_TAG] == "uploads/a.jpg"
    again, data = d.tick()
    assert again == [] and data.skip_message.startswith("0 run(s) requested")


def test_files_still_being_written_wait_and_run_once_complete(world, instance):
    d = Daemon(instance, world.stage_root, UploadSensorSettings(settle_s=0.3, stable_s=1.0, interval_s=1))
    data = support.jpeg_bytes(2)
    target = world.stage_root / "uploads" / "slow.jpg"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data[: len(data) // 2])  # a non-atomic writer, half way
    (world.stage_root / "uploads" / "chunk.jpg.part").write_bytes(data)  # a writer using a visible temp name
    new, tick1 = d.tick()
    assert new == []
    assert "slow.jpg: still being written" in tick1.skip_message
    assert "chunk.jpg.part: temporary file name" in tick1.skip_message
    with open(target, "ab") as fh:  # the writer finishes
        fh.write(data[len(data) // 2:])
    time.sleep(0.35)
    new, tick2 = d.tick()  # settled, but first seen with this size: one more tick to be sure it is stable
    assert new == [] and "slow.jpg: " in tick2.skip_message
    new, _ = d.tick()
    import hashlib

    assert [r.run_key for r in new] == [f"slow.jpg@{hashlib.md5(data).hexdigest()}"], "complete content only"
    os.replace(world.stage_root / "uploads" / "chunk.jpg.part", world.stage_root / "uploads" / "chunk.jpg")
    os.utime(world.stage_root / "uploads" / "chunk.jpg", (OLD, OLD))
    new, _ = d.tick()
    assert [r.partition_key for r in new] == []  # same bytes as slow.jpg: a duplicate, reported not run
    assert len(d.launched) == 1


def test_a_non_atomic_writer_that_pauses_runs_once_with_the_whole_file(world, instance):
    """Half a JPEG, unchanged for longer than stable_s (a writer that paused, a tick that came late), is not run:
    the finished file is, once (bench/sensor_stress.py once launched 1004 runs for 1000 uploads this way)."""
    import hashlib

    d = Daemon(instance, world.stage_root, SETTLED)
    whole = support.jpeg_bytes(9)
    target = world.stage_root / "uploads" / "paused.jpg"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(whole[: len(whole) // 2])
    os.utime(target, (OLD, OLD))
    new, data = d.tick()
    assert new == [] and "uploads/paused.jpg: the inference cannot decode it" in data.skip_message
    with open(target, "ab") as fh:  # the writer resumes and finishes
        fh.write(whole[len(whole) // 2:])
    assert [r.run_key for r in d.tick()[0]] == [f"paused.jpg@{hashlib.md5(whole).hexdigest()}"]
    assert d.tick()[0] == [] and len(d.launched) == 1


def test_bad_files_are_skipped_reported_once_and_never_crash(world, instance):
    d = Daemon(instance, world.stage_root, SETTLED)
    world.upload("empty.jpg", b"", OLD)
    world.upload("notes.txt", b"hello", OLD)
    world.upload("fake.jpg", b"<html>not a jpeg</html>", OLD)
    world.upload("noext", support.jpeg_bytes(3), OLD)
    world.upload("ok.jpg", support.jpeg_bytes(4), OLD)
    new, data = d.tick()
    assert [r.partition_key for r in new] == ["ok.jpg"]
    cursor = UploadCursor.loads(d.cursor)
    assert {k for k, v in cursor.seen.items() if v[2] == "r"} == {"empty.jpg", "notes.txt", "fake.jpg", "noext"}
    new, data = d.tick()
    assert new == [] and "rejected" not in data.skip_message  # reported once, not every tick


def test_dot_files_and_symbolic_links_are_reported_not_ignored_or_followed(world, instance, tmp_path):
    d = Daemon(instance, world.stage_root, SETTLED)
    world.upload(".hidden.jpg", support.jpeg_bytes(7), OLD)
    outside = tmp_path / "secret.jpg"
    outside.write_bytes(support.jpeg_bytes(8))
    link = world.stage_root / "uploads" / "linked.jpg"
    link.symlink_to(outside)
    os.utime(link, (OLD, OLD), follow_symlinks=False)
    new, data = d.tick()
    assert new == []
    assert ".hidden.jpg: temporary file name" in data.skip_message
    assert "linked.jpg: " in data.skip_message and "symbolic link" in data.skip_message
    new, data = d.tick()
    assert new == [] and "rejected" not in data.skip_message  # reported once


def test_bad_file_reasons_are_in_the_skip_message(world, instance):
    d = Daemon(instance, world.stage_root, SETTLED)
    world.upload("empty.jpg", b"", OLD)
    world.upload("notes.txt", b"hello", OLD)
    world.upload("fake.jpg", b"GIF89a not really", OLD)
    world.upload("line2/7_temp.jpg", support.jpeg_bytes(6), OLD)  # a template: read beside 7_test.jpg, not a board
    new, data = d.tick()
    assert "line2/7_temp.jpg" not in {r.partition_key for r in new}
    msg = data.skip_message
    assert "uploads/line2/7_temp.jpg: a template" in msg
    assert "uploads/empty.jpg: zero-byte file" in msg
    assert "uploads/notes.txt: not an image: suffix '.txt'" in msg
    assert "uploads/fake.jpg: not an image: the content is not JPEG" in msg


def test_duplicates_and_reuploads(world, instance):
    d = Daemon(instance, world.stage_root, SETTLED)
    world.upload("a.jpg", support.jpeg_bytes(5), OLD)
    assert len(d.tick()[0]) == 1
    world.upload("a.jpg", support.jpeg_bytes(5), OLD + 10)  # same bytes again, same name: touched only
    world.upload("copy_of_a.jpg", support.jpeg_bytes(5), OLD + 10)  # same bytes, another name
    new, data = d.tick()
    assert new == [] and "copy_of_a.jpg: same content as uploads/a.jpg" in data.skip_message
    world.upload("a.jpg", support.jpeg_bytes(6), OLD + 20)  # a new version of a.jpg: runs again
    new, _ = d.tick()
    assert [r.partition_key for r in new] == ["a.jpg"] and new[0].run_key.endswith(
        __import__("hashlib").md5(support.jpeg_bytes(6)).hexdigest())
    assert len(instance.get_dynamic_partitions("uploads")) == 1


def test_a_template_that_lands_after_its_board_re_runs_the_board(world, instance):
    import hashlib

    def md5(b: bytes) -> str:
        return hashlib.md5(b).hexdigest()

    board, template, template_v2 = support.jpeg_bytes(40), support.jpeg_bytes(41), support.jpeg_bytes(42)
    d = Daemon(instance, world.stage_root, SETTLED)
    world.upload("line1/9_test.jpg", board, OLD)
    new, data = d.tick()
    assert [r.run_key for r in new] == [f"line1/9_test.jpg@{md5(board)}"]  # no template yet
    world.upload("line1/8_temp.jpg", support.jpeg_bytes(43), OLD + 5)  # another board's template: no board for it
    new, data = d.tick()
    assert new == [] and "uploads/line1/8_temp.jpg: a template" in data.skip_message
    assert "re-inspecting" not in data.skip_message
    world.upload("line1/9_temp.jpg", template, OLD + 10)  # the golden board arrives later
    new, data = d.tick()
    assert [(r.partition_key, r.run_key, r.tags[TEMPLATE_TAG]) for r in new] == [
        ("line1/9_test.jpg", f"line1/9_test.jpg@{md5(board)}+template@{md5(template)}", md5(template))]
    assert d.tick()[0] == []  # nothing changed: nothing runs
    world.upload("line1/9_temp.jpg", template_v2, OLD + 20)  # a corrected template: the board runs again
    assert [r.run_key for r in d.tick()[0]] == [f"line1/9_test.jpg@{md5(board)}+template@{md5(template_v2)}"]
    world.upload("line2/5_temp.jpg", template, OLD + 30)  # template first, as documented: one run, with it
    world.upload("line2/5_test.jpg", support.jpeg_bytes(44), OLD + 31)
    new, _ = d.tick()
    assert [r.run_key for r in new] == [f"line2/5_test.jpg@{md5(support.jpeg_bytes(44))}+template@{md5(template)}"]
    assert set(instance.get_dynamic_partitions("uploads")) == {"line1/9_test.jpg", "line2/5_test.jpg"}
    d.cursor = None  # a reset cursor re-reads everything and asks for nothing again
    assert d.tick()[0] == [] and len(d.launched) == 4


def test_templates_behind_the_window_are_not_read_again(world, instance):
    """Their cursor entries are pruned like accepted files; the runs' pcb/template_file tags say they were read."""
    s = UploadSensorSettings(settle_s=0.0, stable_s=0.0, lookback_s=60, interval_s=1, max_rejected_remembered=1)
    d = Daemon(instance, world.stage_root, s)
    for i in range(3):
        world.upload(f"old/{i}_test.jpg", support.jpeg_bytes(50 + i), OLD)
        world.upload(f"old/{i}_temp.jpg", support.jpeg_bytes(60 + i), OLD + 1)
    assert all("+template@" in r.run_key for r in d.tick()[0]) and len(d.launched) == 3
    world.upload("new.jpg", support.jpeg_bytes(70), time.time() - 5)  # moves the window past the old pairs
    assert [r.partition_key for r in d.tick()[0]] == ["new.jpg"]
    cursor = UploadCursor.loads(d.cursor)
    assert not [k for k in cursor.seen if "old/" in k], "pruned from the cursor"
    reads = []
    stage = world.stage()

    def reader(f):
        reads.append(f.path)
        return stage.path(f.path).read_bytes()

    plan = plan_uploads(stage.list("uploads"), cursor, time.time(), s, DagsterUploadHistory(instance), reader)
    assert plan.requests == [] and reads == []


def test_a_board_unreadable_when_its_template_lands_is_retried(world, instance, monkeypatch):
    from pcb_pipeline.defs import sensors

    d = Daemon(instance, world.stage_root, SETTLED)
    world.upload("r/1_test.jpg", support.jpeg_bytes(80), OLD)
    assert len(d.tick()[0]) == 1
    world.upload("r/1_temp.jpg", support.jpeg_bytes(81), OLD + 10)
    stage_reader = sensors.stage_reader
    failing = {"uploads/r/1_test.jpg"}

    def flaky(st):
        read = stage_reader(st)

        def reader(f):
            if f.path in failing:
                failing.discard(f.path)
                raise OSError("stage GET failed")
            return read(f)
        return reader

    monkeypatch.setattr(sensors, "stage_reader", flaky)
    new, data = d.tick()
    assert new == [] and "1_test.jpg: could not be read for its new template" in data.skip_message
    assert [r.run_key.split("+")[1] for r in d.tick()[0]] == [
        f"template@{__import__('hashlib').md5(support.jpeg_bytes(81)).hexdigest()}"]


def test_the_same_board_bytes_beside_a_template_are_not_a_duplicate(world, instance):
    d = Daemon(instance, world.stage_root, SETTLED)
    world.upload("x.jpg", support.jpeg_bytes(90), OLD)
    assert len(d.tick()[0]) == 1
    world.upload("sha_x_temp.jpg", support.jpeg_bytes(91), OLD + 5)  # e.g. the Vision Lab saving it as a pair
    world.upload("sha_x_test.jpg", support.jpeg_bytes(90), OLD + 6)
    assert [r.partition_key for r in d.tick()[0]] == ["sha_x_test.jpg"]


def test_restart_stale_cursor_reset_and_corrupt_cursor_never_repeat_a_run(world, instance):
    d = Daemon(instance, world.stage_root, SETTLED)
    for i in range(5):
        world.upload(f"r{i}.jpg", support.jpeg_bytes(10 + i), OLD)
    new, _ = d.tick(keep_cursor=False)  # crash after launching, before the cursor was stored
    assert len(new) == 5
    for cursor in (None, "{not json", json.dumps({"v": 99})):
        d.cursor = cursor  # stale / reset / corrupt cursor
        d.sensor = build_upload_sensor(SETTLED)  # restarted daemon
        new, data = d.tick()
        assert new == [] and not data.run_requests, "the sensor must not even ask again"
    world.upload("r5.jpg", support.jpeg_bytes(99), OLD)
    assert [r.partition_key for r in d.tick()[0]] == ["r5.jpg"]
    assert len(d.launched) == 6


def test_late_arrival_older_than_the_lookback_window_is_not_missed(world, instance):
    s = UploadSensorSettings(settle_s=0.0, stable_s=0.0, lookback_s=60, interval_s=1)
    d = Daemon(instance, world.stage_root, s)
    world.upload("now.jpg", support.jpeg_bytes(20), time.time() - 5)
    assert len(d.tick()[0]) == 1
    world.upload("copied_with_old_mtime.jpg", support.jpeg_bytes(21), time.time() - 86400)  # e.g. rsync -a
    assert [r.partition_key for r in d.tick()[0]] == ["copied_with_old_mtime.jpg"]


def test_bursts_are_drained_oldest_first_without_loss(world, instance):
    s = UploadSensorSettings(settle_s=0.0, stable_s=0.0, max_runs_per_tick=7, interval_s=1)
    d = Daemon(instance, world.stage_root, s)
    for i in range(20):
        world.upload(f"burst_{i:02d}.jpg", support.jpeg_bytes(100 + i), OLD + i)
    sizes = [len(d.tick()[0]) for _ in range(4)]
    assert sizes == [7, 7, 6, 0]
    assert [r.partition_key for r in d.launched] == [f"burst_{i:02d}.jpg" for i in range(20)]


def test_uploads_wait_while_there_is_no_champion(world, instance):
    d = Daemon(instance, world.stage_root, SETTLED, has_champion=False)
    world.upload("early.jpg", support.jpeg_bytes(30), OLD)
    new, data = d.tick()
    assert new == [] and "no champion model yet" in data.skip_message and d.cursor is None
    d.resources["registry"] = StubRegistry(tracking_uri="sqlite://", has_champion=True)
    assert [r.partition_key for r in d.tick()[0]] == ["early.jpg"]


def test_stage_outage_is_a_skipped_tick(world, instance, tmp_path):
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("a file where the stage folder should be")
    d = Daemon(instance, world.stage_root, SETTLED)
    d.resources["stage"] = StageResource(root=str(blocker))
    new, data = d.tick()
    assert new == [] and data.skip_message.startswith("cannot list the stage's uploads/ folder")


def test_stress_1000_uploads_in_bursts_with_restarts(tmp_path):
    """bench/sensor_stress.py, the recorded benchmark, run as a test: nothing missed, nothing run twice."""
    spec = importlib.util.spec_from_file_location("sensor_stress", REPO / "bench" / "sensor_stress.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    r = bench.run_stress(tmp_path, uploads=1000, seed=1)
    assert r["expected_runs"] == 1000 and r["launched_runs"] == 1000
    assert (r["missed"], r["duplicated"], r["unexpected"], r["hazards_launched"]) == (0, 0, 0, 0), r["examples"]
    assert r["hazards_not_marked_rejected_in_cursor"] == 0
    assert r["restarts"] >= 1 and r["crashes_with_stale_cursor"] >= 1 and r["cursor_resets"] == 1
    assert all(r["writers"][k] > 0 for k in r["writers"]), r["writers"]


def _png() -> bytes:
    import io

    import numpy as np
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.zeros((64, 64), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()
