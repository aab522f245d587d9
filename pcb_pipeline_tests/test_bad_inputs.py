"""Bad inputs, one test each, across ingest, conversion, upload, inference, decoding, questions and configuration.

Every case asserts a clear error (type and message) and that nothing already stored was lost or changed: the tables
(DEFECT_LOGS, BOARD_INSPECTIONS, PCB_METADATA), every file on the stage (by content hash) and the champion model of a
populated, isolated world (raw boards landed, a YOLO dataset on the stage, a champion, inferred uploads).
"""
from __future__ import annotations

import io
import re
import os
import shutil
import struct
import sys
import zlib
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "defs"))
import test_automation_support as support  # noqa: E402

from pcb_pipeline.backends.local import DuckDBWarehouse, StagePathError  # noqa: E402
from pcb_pipeline.core import deeppcb, yolo_format  # noqa: E402
from pcb_pipeline.core.deeppcb import DeepPCBFormatError  # noqa: E402
from pcb_pipeline.core.images import BadImageError, decode_image  # noqa: E402
from pcb_pipeline.core.synthetic import write_synthetic_deeppcb  # noqa: E402
from pcb_pipeline.defs.assets import (UPLOAD_PARTITIONS, defect_logs, raw_pcb_images, upload_defect_logs,  # noqa: E402
                                      yolo_dataset)
from pcb_pipeline.defs.resources import RegistryResource  # noqa: E402
from pcb_pipeline.defs.sensors import (CONTENT_TAG, PATH_TAG, RUN_KEY_TAG, UploadSensorSettings,  # noqa: E402
                                       build_upload_sensor)
from pcb_pipeline.defs.resources import StageResource  # noqa: E402

TINY = {"ops": {"upload_defect_logs": {"config": {"confidence": support.TINY_CONF}}}}
OLD_MTIME = 1_700_000_000


class StepFailed(Exception):
    """A Dagster step failed; the message is the whole error chain (as the UI shows it)."""


def _chain(error) -> str:
    parts = []
    while error is not None:
        parts.append(f"{error.cls_name}: {error.message}")
        error = error.cause
    return " <- ".join(parts)


def run_or_raise(result) -> dg.ExecuteInProcessResult:
    if result.success:
        return result
    texts = []
    for ev in result.get_step_failure_events():
        data = ev.step_failure_data
        texts.append(_chain(data.error) + (f" | {data.user_failure_data.description}"
                                           if data.user_failure_data and data.user_failure_data.description else ""))
    raise StepFailed(" || ".join(texts) or "run failed")


# --------------------------------------------------------------------------------------------------- the world
@pytest.fixture(scope="module")
def instance():
    with dg.instance_for_test() as inst:
        yield inst


@pytest.fixture(scope="module")
def world(tmp_path_factory, instance):
    w = support.make_world(tmp_path_factory.mktemp("bad_inputs_world"))
    support.register_champion(w, map50=0.9)
    res = dg.materialize([raw_pcb_images, yolo_dataset], resources=w.resources(), instance=instance, run_config={
        "ops": {"raw_pcb_images": {"config": {"synthetic_groups": 2, "synthetic_images_per_group": 3}}}})
    assert res.success
    w.upload("board.jpg", support.jpeg_bytes(1, 160))
    instance.add_dynamic_partitions(UPLOAD_PARTITIONS.name, ["board.jpg"])
    res = dg.materialize([upload_defect_logs], partition_key="board.jpg", resources=w.resources(),
                         instance=instance, run_config=TINY)
    assert res.success
    import hashlib

    md5 = hashlib.md5(support.jpeg_bytes(1, 160)).hexdigest()  # as if the sensor had launched that run
    instance.add_run(dg.DagsterRun(job_name="upload_inference_job",
                                   tags={RUN_KEY_TAG: f"board.jpg@{md5}", CONTENT_TAG: md5, PATH_TAG: "uploads/board.jpg"}))
    assert len(w.warehouse().query("SELECT * FROM DEFECT_LOGS")) > 0
    yield w
    support.restore_session_mlflow()


@contextmanager
def nothing_changes(world):
    before = support.snapshot(world)
    yield
    after = support.snapshot(world)
    assert after["champion"] == before["champion"], "the champion changed"
    assert after["tables"] == before["tables"], "stored rows were lost or changed"
    assert after["files"] == before["files"], "stage files were lost or changed"


@pytest.fixture(scope="module")
def deeppcb_template(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("deeppcb_template")
    write_synthetic_deeppcb(root, groups=2, images_per_group=3, seed=3)
    return root


def _case(template: Path, tmp_path: Path) -> tuple[Path, Path, Path]:
    root = tmp_path / "deeppcb"
    shutil.copytree(template, root)
    split = root / "PCBData" / "trainval.txt"
    first = deeppcb.read_split(split)[0]
    return root, split, first.label_file


def _ingest(world, instance, root: Path):
    return run_or_raise(dg.materialize([raw_pcb_images], resources=world.resources(), instance=instance,
                                       raise_on_error=False,
                                       run_config={"ops": {"raw_pcb_images": {"config": {"deeppcb_root": str(root)}}}}))


# --------------------------------------------------------------------------------------------------- ingest
# Through the raw_pcb_images asset (labels are validated before anything is landed on the stage) ...
LABEL_CASES_ASSET = [
    ("non_numeric_field", "10 20 abc 40 1", r"non-numeric field"),
    ("unknown_type_7", "10 20 30 40 7", r"unknown Deep PCB defect type 7"),
    ("box_outside_image", "600 20 700 40 1", r"outside the 640x640 image"),
]
# ... and through the same reader directly (the asset calls exactly this).
LABEL_CASES_READER = [
    ("type_zero", "10 20 30 40 0", r"unknown Deep PCB defect type 0"),
    ("negative_coordinate", "-5 20 30 40 2", r"outside the 640x640 image"),
    ("degenerate_box", "30 20 30 40 2", r"is empty or outside"),
    ("four_fields", "10 20 30 40", r"expected 'x1 y1 x2 y2 type' \(5 fields\)"),
    ("float_type", "10 20 30 40 2.5", r"non-numeric field"),
    ("comma_separated_garbage", "10,20,30", r"expected 'x1 y1 x2 y2 type' \(5 fields\)"),
]


@pytest.mark.parametrize("label_line,pattern", [c[1:] for c in LABEL_CASES_ASSET],
                         ids=[c[0] for c in LABEL_CASES_ASSET])
def test_ingest_rejects_bad_label_and_keeps_the_landed_boards(world, instance, deeppcb_template, tmp_path,
                                                              label_line, pattern):
    root, _, label = _case(deeppcb_template, tmp_path)
    label.write_text(label.read_text() + label_line + "\n")
    with nothing_changes(world), pytest.raises(StepFailed, match=pattern) as e:
        _ingest(world, instance, root)
    assert label.name in str(e.value), "the error names the file"


@pytest.mark.parametrize("label_line,pattern", [c[1:] for c in LABEL_CASES_READER],
                         ids=[c[0] for c in LABEL_CASES_READER])
def test_label_reader_rejects_bad_lines_naming_file_and_line(world, tmp_path, label_line, pattern):
    label = tmp_path / "20085000.txt"
    label.write_text("10 10 40 40 1\n" + label_line + "\n")
    with nothing_changes(world), pytest.raises(DeepPCBFormatError, match=pattern) as e:
        deeppcb.read_labels(label)
    assert f"{label}:2" in str(e.value)


SPLIT_CASES = [
    ("path_traversal", "../../etc/passwd.jpg group90000/90000_not/90000000.txt", r"escapes the dataset folder"),
    ("listed_twice", None, r"listed twice"),
    ("one_column", "group90000/90000/90000000.jpg", r"expected '<group>/<G>/<id>.jpg"),
]


@pytest.mark.parametrize("line,pattern", [c[1:] for c in SPLIT_CASES], ids=[c[0] for c in SPLIT_CASES])
def test_ingest_rejects_bad_split_file(world, instance, deeppcb_template, tmp_path, line, pattern):
    root, split, _ = _case(deeppcb_template, tmp_path)
    lines = split.read_text().splitlines()
    split.write_text("\n".join(lines + [line if line else lines[0]]) + "\n")
    with nothing_changes(world), pytest.raises(DeepPCBFormatError, match=pattern):
        deeppcb.read_split(split)
    if line and ".." in line:  # and through the asset: nothing is landed
        with nothing_changes(world), pytest.raises(StepFailed, match=pattern):
            _ingest(world, instance, root)


def test_ingest_missing_split_file(world, instance, tmp_path):
    (tmp_path / "empty_root").mkdir()
    with nothing_changes(world), pytest.raises(StepFailed, match=r"no split file trainval.txt"):
        _ingest(world, instance, tmp_path / "empty_root")


def test_ingest_missing_label_file(world, instance, deeppcb_template, tmp_path):
    root, _, label = _case(deeppcb_template, tmp_path)
    label.unlink()
    with nothing_changes(world), pytest.raises(StepFailed, match=re.escape(label.name) + r": no such file"):
        _ingest(world, instance, root)


def _bad_image_cases(samples):
    """(id, how to break the copied dataset, what the error says): every pair is decoded, not only the first."""
    last = samples[-1]
    return [
        ("first_image_empty", lambda: samples[0].test_image.write_bytes(b""), r"the file is empty"),
        ("last_image_not_an_image", lambda: last.test_image.write_text("hello"), r"not an image"),
        ("last_template_missing", lambda: last.template_image.unlink(), r"no such file"),
        ("last_image_truncated", lambda: last.test_image.write_bytes(last.test_image.read_bytes()[:500]),
         r"corrupt or truncated"),
        ("template_of_another_size", lambda: last.template_image.write_bytes(
            __import__("cv2").imencode(".jpg", np.full((320, 320), 255, np.uint8))[1].tobytes()),
         r"640x640 but its template .* is 320x320"),
    ]


@pytest.mark.parametrize("case", range(5), ids=["first_image_empty", "last_image_not_an_image",
                                                 "last_template_missing", "last_image_truncated",
                                                 "template_of_another_size"])
def test_ingest_decodes_every_pair_before_touching_the_stage(world, instance, deeppcb_template, tmp_path, case):
    root, split, _ = _case(deeppcb_template, tmp_path)
    name, breaks, pattern = _bad_image_cases(deeppcb.read_split(split))[case]
    breaks()
    with nothing_changes(world), pytest.raises(StepFailed, match=r"previous landing is intact.*" + pattern):
        _ingest(world, instance, root)


def test_ingest_non_utf8_label_names_file_and_line(world, instance, deeppcb_template, tmp_path):
    root, _, label = _case(deeppcb_template, tmp_path)
    label.write_bytes(label.read_bytes() + b"10 10 40 40 \xff\n")
    with nothing_changes(world), pytest.raises(StepFailed, match=r"not UTF-8 text") as e:
        _ingest(world, instance, root)
    assert f"{label.name}:" in str(e.value)


def test_a_landing_replaces_the_previous_one_and_removes_what_it_no_longer_has(instance, tmp_path):
    w = support.make_world(tmp_path / "world")
    big, small = tmp_path / "big", tmp_path / "small"
    write_synthetic_deeppcb(big, groups=2, images_per_group=3, seed=5)
    write_synthetic_deeppcb(small, groups=1, images_per_group=2, seed=6)
    for root in (big, small):
        res = run_or_raise(dg.materialize([raw_pcb_images], resources=w.resources(), instance=instance,
                                          raise_on_error=False,
                                          run_config={"ops": {"raw_pcb_images": {"config": {"deeppcb_root": str(root)}}}}))
    meta = res.asset_materializations_for_node("raw_pcb_images")[0].metadata
    assert meta["files_written"].value == 3 * 2 + 1 and meta["stale_files_removed"].value == 3 * 6 + 1 - 1
    landed = sorted(f.path.split("PCBData/", 1)[1] for f in w.stage().list("raw/deeppcb"))
    expected = sorted(p.relative_to(small / "PCBData").as_posix() for p in (small / "PCBData").rglob("*") if p.is_file())
    assert landed == expected


def test_empty_label_file_is_a_valid_defect_free_board(tmp_path, deeppcb_template):
    root, split, label = _case(deeppcb_template, tmp_path)
    label.write_text("")
    assert deeppcb.read_labels(label) == []
    samples = deeppcb.read_split(split)
    summary = yolo_format.write_yolo_dataset({"train": samples[:4], "val": samples[4:]}, tmp_path / "ds")
    written = tmp_path / "ds" / "labels" / "train" / f"{samples[0].image_id}.txt"
    assert written.is_file() and written.read_text() == "" and summary.images["train"] == 4


# --------------------------------------------------------------------------------------------------- conversion
@pytest.mark.parametrize("line,pattern", [
    ("9 0.5 0.5 0.1 0.1", r"class id 9 outside 0..5"),
    ("-1 0.5 0.5 0.1 0.1", r"class id -1 outside 0..5"),
    ("1 0.98 0.5 0.1 0.1", r"not inside the unit square"),
    ("1 half 0.5 0.1 0.1", r"non-numeric field"),
    ("1 0.5 0.5 0.1", r"expected 'class cx cy w h'"),
], ids=["class_9", "class_negative", "outside_unit_square", "non_numeric", "four_fields"])
def test_conversion_rejects_bad_yolo_label(world, tmp_path, line, pattern):
    f = tmp_path / "label.txt"
    f.write_text("0 0.5 0.5 0.2 0.2\n" + line + "\n")
    with nothing_changes(world), pytest.raises(yolo_format.YoloLabelError, match=pattern):
        yolo_format.parse_yolo_label_file(f)


def test_conversion_missing_image_leaves_the_previous_dataset_intact(world, deeppcb_template, tmp_path):
    root, split, _ = _case(deeppcb_template, tmp_path)
    samples = deeppcb.read_split(split)
    out = tmp_path / "dataset"
    yolo_format.write_yolo_dataset({"train": samples[:3], "val": samples[3:]}, out)
    before = sorted(p.relative_to(out).as_posix() for p in out.rglob("*"))
    samples[1].test_image.unlink()
    with nothing_changes(world), pytest.raises(FileNotFoundError, match=r"image listed in split 'train' is missing"):
        yolo_format.write_yolo_dataset({"train": samples[:3], "val": samples[3:]}, out)
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == before


def test_conversion_asset_on_a_corrupted_stage_label_keeps_the_dataset_on_the_stage(world, instance):
    st = world.stage()
    label = next(f.path for f in st.list("raw/deeppcb/PCBData") if f.path.endswith(".txt")
                 and "_not/" in f.path)
    original = st.path(label).read_bytes()
    st.path(label).write_bytes(original + b"1 2 3 4 9\n")
    try:
        with nothing_changes(world), pytest.raises(StepFailed, match=r"unknown Deep PCB defect type 9"):
            run_or_raise(dg.materialize([yolo_dataset], resources=world.resources(), instance=instance,
                                        raise_on_error=False))
    finally:
        st.path(label).write_bytes(original)


# --------------------------------------------------------------------------------------------------- uploads
def _sensor_tick(world, instance):
    sensor = build_upload_sensor(UploadSensorSettings(settle_s=0, stable_s=0, interval_s=1))
    ctx = dg.build_sensor_context(instance=instance, resources={
        "stage": StageResource(root=str(world.stage_root)),
        "registry": RegistryResource(tracking_uri=world.tracking_uri)})
    result = sensor(ctx)
    support.restore_session_mlflow()
    return result


@pytest.mark.parametrize("name,data,pattern", [
    ("empty_scan.jpg", b"", r"uploads/empty_scan.jpg: zero-byte file"),
    ("installer.exe", b"MZ\x90\x00binary", r"uploads/installer.exe: not an image: suffix '.exe'"),
    ("report.jpg", b"%PDF-1.7 a pdf saved as jpg", r"uploads/report.jpg: not an image: the content is not JPEG"),
    ("scan.jpg.part", b"\xff\xd8\xff\xe0 half", r"uploads/scan.jpg.part: temporary file name"),
    ("copy_of_board.jpg", None, r"uploads/copy_of_board.jpg: same content as uploads/board.jpg"),
    ("a...b.jpg", None, r"cannot be a partition key"),
], ids=["zero_byte", "exe", "pdf_named_jpg", "still_being_written", "duplicate_content", "dots_in_name"])
def test_upload_sensor_skips_and_reports_bad_uploads(world, instance, name, data, pattern):
    if data is None:
        data = support.jpeg_bytes(1, 160) if name.startswith("copy") else support.jpeg_bytes(77, 64)
    path = world.upload(name, data, OLD_MTIME)
    try:
        with nothing_changes(world):
            result = _sensor_tick(world, instance)
        assert not result.run_requests, "a bad upload must not launch inference"
        assert result.skip_reason is not None and pattern_in(pattern, result.skip_reason.skip_message)
    finally:
        world.stage().path(path).unlink()


def pattern_in(pattern: str, text: str) -> bool:
    import re

    assert re.search(pattern, text), f"{pattern!r} not in {text!r}"
    return True


def test_upload_same_bytes_again_is_not_inferred_twice(world, instance):
    world.upload("board.jpg", support.jpeg_bytes(1, 160), OLD_MTIME + 5)  # re-upload, same bytes
    with nothing_changes(world):
        result = _sensor_tick(world, instance)
    assert not result.run_requests


@pytest.mark.parametrize("key,pattern", [
    ("../warehouse.duckdb", r"escapes the uploads/ folder"),
    ("../../etc/passwd", r"escapes the uploads/ folder"),
    ("ghost.jpg", r"uploads/ghost.jpg: the upload is no longer on the stage"),
    ("notes.txt", r"uploads/notes.txt: not an image file name"),
], ids=["traversal_to_warehouse", "traversal_to_etc", "missing_file", "not_an_image_name"])
def test_upload_partition_with_a_bad_key_fails_clearly(world, instance, key, pattern):
    instance.add_dynamic_partitions(UPLOAD_PARTITIONS.name, [key])
    with nothing_changes(world), pytest.raises(StepFailed, match=pattern):
        run_or_raise(dg.materialize([upload_defect_logs], partition_key=key, resources=world.resources(),
                                    instance=instance, raise_on_error=False, run_config=TINY))


def test_stage_put_refuses_path_traversal(world, tmp_path):
    f = tmp_path / "evil.jpg"
    f.write_bytes(support.jpeg_bytes(5))
    with nothing_changes(world), pytest.raises(StagePathError, match=r"must be relative and stay inside the stage"):
        world.stage().put_file(f, "uploads/../../evil.jpg")
    assert not (world.home / "evil.jpg").exists() and not (world.stage_root.parent.parent / "evil.jpg").exists()


def test_app_upload_name_cannot_traverse(world):
    from pcb_pipeline.app.vision import safe_upload_name

    with nothing_changes(world):
        name = safe_upload_name("../../../etc/passwd.jpg", b"data")
    assert "/" not in name and ".." not in name and name.endswith("_passwd.jpg")


# --------------------------------------------------------------------------------------------------- inference
def test_truncated_new_version_of_an_upload_fails_and_keeps_its_earlier_rows(world, instance):
    good = support.jpeg_bytes(1, 160)
    world.upload("board.jpg", good[: len(good) // 2])  # the sensor rejects it; a run asked for by hand must fail
    try:
        with nothing_changes(world), pytest.raises(StepFailed, match=r"unreadable upload: uploads/board.jpg: "
                                                                        r"corrupt or truncated image"):
            run_or_raise(dg.materialize([upload_defect_logs], partition_key="board.jpg", resources=world.resources(),
                                        instance=instance, raise_on_error=False, run_config=TINY))
    finally:
        world.upload("board.jpg", good)


class EmptyRegistry(RegistryResource):
    """A registry with no champion (no MLflow store needed)."""

    def get(self):
        class _Empty:
            def champion(self):
                return None

        return _Empty()


def test_inference_without_a_champion_fails_clearly(world, instance):
    with nothing_changes(world), pytest.raises(StepFailed, match=r"no champion model in registry "
                                                                    r"'pcb_defect_detector'"):
        run_or_raise(dg.materialize([upload_defect_logs], partition_key="board.jpg", instance=instance,
                                    resources={**world.resources(), "registry": EmptyRegistry(tracking_uri="-")},
                                    raise_on_error=False, run_config=TINY))


def test_heldout_inference_with_no_images_fails_clearly(world, instance):
    with nothing_changes(world), pytest.raises(StepFailed, match=r"no images under stage prefix 'nowhere/'"):
        run_or_raise(dg.materialize([defect_logs], resources=world.resources(), instance=instance,
                                    raise_on_error=False,
                                    run_config={"ops": {"defect_logs": {"config": {"image_prefix": "nowhere/"}}}}))


def test_batch_inference_reports_unreadable_images_and_goes_on(world, tmp_path):
    from pcb_pipeline.vision.batch import run_batch

    good = tmp_path / "good.jpg"
    good.write_bytes(support.jpeg_bytes(3, 96))
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("not an image")

    class Detector:
        def predict(self, images):
            return [["det"] for _ in images]

    with nothing_changes(world):
        out = list(run_batch(Detector(), {n: tmp_path / n for n in ("empty.jpg", "good.jpg", "text.jpg")}))
    assert [o[0] for o in out] == ["empty.jpg", "good.jpg", "text.jpg"]
    assert "the file is empty" in out[0][3] and out[1][2] == ["det"] and "not an image" in out[2][3]


def test_detector_with_missing_weights(world, tmp_path):
    from pcb_pipeline.vision.detector import Detector

    with nothing_changes(world), pytest.raises(FileNotFoundError, match=r"model weights not found"):
        Detector(tmp_path / "missing.pt")


# --------------------------------------------------------------------------------------------------- decoding
def _png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height pixels (a decompression bomb's calling card)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


def _png(width: int, height: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.zeros((height, width), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


DECODE_CASES = [
    ("empty", b"", r"the file is empty"),
    ("truncated_jpeg", support.jpeg_bytes(9, 160)[:700], r"corrupt or truncated image"),
    ("jpeg_header_then_garbage", b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4, r"corrupt or truncated|not an image"),
    ("pdf", b"%PDF-1.7\n1 0 obj << >> endobj", r"not an image"),
    ("too_small", _png(8, 8), r"8x8 is too small"),
    ("too_many_pixels", _png_claiming(9000, 9000), r"too large"),
]


@pytest.mark.parametrize("data,pattern", [c[1:] for c in DECODE_CASES], ids=[c[0] for c in DECODE_CASES])
def test_decoding_bad_image_bytes(world, data, pattern):
    with nothing_changes(world), pytest.raises(BadImageError, match=pattern):
        decode_image(data, "upload.jpg")


def test_app_decoding_of_a_missing_upload(world):
    from pcb_pipeline.app.vision import load_image

    with nothing_changes(world), pytest.raises(BadImageError, match=r"the file is empty"):
        load_image(None, "../../secret.png")


# --------------------------------------------------------------------------------------------------- questions
@pytest.mark.parametrize("sql,pattern", [
    ("SELECT * FROM DEFECT_LOGS; DROP TABLE DEFECT_LOGS", r"exactly one statement"),
    ("DELETE FROM DEFECT_LOGS WHERE 1=1", r"(?i)delete|only"),
    ("SELECT * FROM read_csv('/etc/passwd')", r"(?i)rejected|not allowed|refused|read_csv"),
    ("SELECT table_name FROM information_schema.tables", r"(?i)information_schema|tables|not allowed|rejected"),
    ("SELECT 1 FROM DEFECT_LOGS WHERE board_id = '' OR 1=1; UPDATE DEFECT_LOGS SET confidence_score = 0",
     r"exactly one statement"),
], ids=["stacked_drop", "delete", "file_read", "other_schema", "tautology_then_update"])
def test_sql_questions_that_would_write_or_escape_are_refused(world, sql, pattern):
    from pcb_pipeline.knowledge.api import run_sql
    from pcb_pipeline.knowledge.sql_guard import UnsafeSQLError

    with nothing_changes(world), pytest.raises(UnsafeSQLError, match=pattern):
        run_sql(sql, world.warehouse())


def test_plain_english_question_with_injection_never_writes(world):
    from pcb_pipeline.knowledge.api import ask_data
    from pcb_pipeline.knowledge.sql_guard import UnsafeSQLError

    question = "how many defects by class on line SHANGHAI'; DROP TABLE DEFECT_LOGS; --"
    with nothing_changes(world):
        try:
            answer = ask_data(question, world.warehouse())
        except (UnsafeSQLError, ValueError) as e:  # refusing is a fine answer too
            answer = {"sql": None, "error": str(e)}
    assert "DROP" not in (answer.get("sql") or "").upper()


def test_empty_question_is_refused(world):
    from pcb_pipeline.knowledge.api import ask_data

    with nothing_changes(world), pytest.raises(ValueError, match=r"empty question"):
        ask_data("   ", world.warehouse())


def test_cli_sql_refuses_a_write(world, capsys):
    from pcb_pipeline.backends.factory import warehouse
    from pcb_pipeline.cli import main

    session = warehouse()
    rows = len(session.query("SELECT * FROM DEFECT_LOGS"))
    with nothing_changes(world):
        assert main(["sql", "DROP TABLE DEFECT_LOGS"]) == 2
    assert "error:" in capsys.readouterr().err
    assert len(session.query("SELECT * FROM DEFECT_LOGS")) == rows


# --------------------------------------------------------------------------------------------------- config
SNOWFLAKE_OK = {"SNOWFLAKE_ACCOUNT": "myorg-myaccount", "SNOWFLAKE_USER": "pcb", "SNOWFLAKE_ROLE": "PCB_ROLE",
                "SNOWFLAKE_WAREHOUSE": "PCB_WH", "SNOWFLAKE_DATABASE": "PCB_DB", "SNOWFLAKE_SCHEMA": "PUBLIC",
                "SNOWFLAKE_PASSWORD": "secret"}


@pytest.mark.parametrize("change,pattern", [
    ({"SNOWFLAKE_ACCOUNT": None}, r"SNOWFLAKE_ACCOUNT"),
    ({"SNOWFLAKE_USER": None, "SNOWFLAKE_SCHEMA": None}, r"SNOWFLAKE_USER, SNOWFLAKE_SCHEMA"),
    ({"SNOWFLAKE_PASSWORD": None}, r"no Snowflake credentials: set SNOWFLAKE_PASSWORD"),
    ({"SNOWFLAKE_DATABASE": "PCB; DROP DATABASE X"}, r"SNOWFLAKE_DATABASE="),
    ({"SNOWFLAKE_ACCOUNT": "https://x.snowflakecomputing.com"}, r"SNOWFLAKE_ACCOUNT="),
    ({"PCB_SNOWFLAKE_TARGET_INSTANCES": "two"}, r"PCB_SNOWFLAKE_TARGET_INSTANCES='two' must be an integer"),
    ({"SNOWFLAKE_PRIVATE_KEY_FILE": "/nonexistent/key.p8", "SNOWFLAKE_PASSWORD": None},
     r"SNOWFLAKE_PRIVATE_KEY_FILE='/nonexistent/key.p8': no such file"),
], ids=["missing_account", "missing_two", "missing_credentials", "injected_identifier", "account_url",
        "non_numeric_instances", "missing_key_file"])
def test_snowflake_configuration_errors_name_the_variable(world, change, pattern):
    from pcb_pipeline.backends.snowflake.config import SnowflakeConfigError, from_env

    env = {k: v for k, v in {**SNOWFLAKE_OK, **change}.items() if v is not None}
    with nothing_changes(world), pytest.raises(SnowflakeConfigError, match=pattern):
        from_env(env)


def test_unknown_backend_is_refused(world, monkeypatch):
    from pcb_pipeline.backends.factory import BackendConfigError, backend_name

    monkeypatch.setenv("PCB_BACKEND", "oracle")
    with nothing_changes(world), pytest.raises(BackendConfigError, match=r"PCB_BACKEND='.*' must be 'local' or "):
        backend_name()


@pytest.mark.parametrize("env,exc_pattern", [
    ({"PCB_RETRAIN_TIMEZONE": "Atlantis/Capital"}, r"PCB_RETRAIN_TIMEZONE"),
    ({"PCB_RETRAIN_CRON": "* * *"}, r"PCB_RETRAIN_CRON"),
    ({"PCB_UPLOAD_LOOKBACK_S": "-5"}, r"PCB_UPLOAD_LOOKBACK_S"),
    ({"PCB_UPLOAD_STABLE_S": "a while"}, r"PCB_UPLOAD_STABLE_S"),
], ids=["bad_timezone", "short_cron", "negative_lookback", "non_numeric_stable"])
def test_automation_settings_errors_name_the_variable(world, env, exc_pattern):
    from pcb_pipeline.defs.schedules import retrain_settings

    with nothing_changes(world), pytest.raises(ValueError, match=exc_pattern):
        if any(k.startswith("PCB_UPLOAD") for k in env):
            UploadSensorSettings.from_env(env)
        else:
            retrain_settings(env)


def test_unknown_training_profile(world):
    from pcb_pipeline.vision.profiles import resolve_profile

    with nothing_changes(world), pytest.raises(ValueError, match=r"unknown training profile 'huge'"):
        resolve_profile("huge")


def test_the_suite_covers_at_least_thirty_distinct_bad_inputs():
    import inspect

    module = sys.modules[__name__]
    count = 0
    for name, fn in inspect.getmembers(module, inspect.isfunction):
        if not name.startswith("test_") or name in ("test_the_suite_covers_at_least_thirty_distinct_bad_inputs",
                                                      "test_empty_label_file_is_a_valid_defect_free_board"):
            continue
        marks = [m for m in getattr(fn, "pytestmark", []) if m.name == "parametrize"]
        count += len(marks[0].args[1]) if marks else 1
    assert count >= 30, count


def test_no_dagster_world_leaks(world):
    """The world lives in its own folder: the session's PCB_HOME warehouse never saw these bad inputs."""
    assert world.home != Path(os.environ["PCB_HOME"])
    DuckDBWarehouse(world.warehouse_path).query("SELECT COUNT(*) FROM DEFECT_LOGS")
