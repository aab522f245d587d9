from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path

import pytest

from pcb_pipeline.core import deeppcb, yolo_format
from pcb_pipeline.core.classes import CLASS_NAMES, UnknownClassError, class_id_from_deeppcb_type


def _tree_digest(root: Path) -> str:
    h = hashlib.sha1()
    for f in sorted(root.rglob("*")):
        if f.is_file():
            st = f.stat()
            h.update(f"{f.relative_to(root)}|{st.st_size}|{st.st_mtime_ns}".encode())
    return h.hexdigest()


# ------------------------------------------------------------------------------------------ real Deep PCB
@pytest.mark.deeppcb
def test_reader_on_real_trainval(deeppcb_root):
    samples = deeppcb.read_split(deeppcb.split_file_path(deeppcb_root))
    assert len(samples) == 1000
    assert all(s.test_image.name.endswith("_test.jpg") and s.test_image.is_file() for s in samples)
    assert all(s.template_image.is_file() and s.label_file.is_file() for s in samples)
    counts = Counter(CLASS_NAMES[b.class_id] for s in samples for b in deeppcb.read_labels(s.label_file))
    assert counts == {"open": 1283, "short": 1028, "mousebite": 1379, "spur": 1142, "copper": 1010, "pin-hole": 1031}


@pytest.mark.deeppcb
def test_converter_on_real_trainval_group_split(deeppcb_root, tmp_path):
    before = _tree_digest(deeppcb_root)
    samples = deeppcb.read_split(deeppcb.split_file_path(deeppcb_root))
    train, val = deeppcb.group_split(samples)
    assert not {s.group for s in train} & {s.group for s in val}
    assert 150 <= len(val) <= 260
    summary = yolo_format.write_yolo_dataset({"train": train, "val": val}, tmp_path / "ds")
    assert summary.images == {"train": len(train), "val": len(val)}
    assert sum(sum(c.values()) for c in summary.boxes.values()) == 6873
    assert yolo_format.split_leakage(tmp_path / "ds") == {"groups": [], "images": []}
    labels = list((tmp_path / "ds" / "labels").rglob("*.txt"))
    assert len(labels) == 1000
    for f in labels[:200]:
        for cid, cx, cy, w, h in yolo_format.parse_yolo_label_file(f):
            assert 0 <= cid < 6 and 0 < w < 0.5 and 0 < h < 0.5
    # both channel layouts present in the data, and the dataset is readable by ultralytics' loader
    from PIL import Image

    modes = Counter(Image.open(s.test_image).mode for s in samples)
    assert modes["L"] > 0 and modes["RGB"] > 0
    assert _tree_digest(deeppcb_root) == before, "the source folder must never be modified"


# ------------------------------------------------------------------------------------------ synthetic
def test_synthetic_layout_reads_back(synthetic_root):
    samples = deeppcb.read_split(deeppcb.split_file_path(synthetic_root))
    assert len(samples) == 24 and len({s.group for s in samples}) == 3
    boxes = [b for s in samples for b in deeppcb.read_labels(s.label_file)]
    assert {b.class_id for b in boxes} == set(range(6)), "all six defect types are drawn"
    for s in samples:
        assert s.template_image.is_file()


def test_synthetic_is_seeded(tmp_path):
    from pcb_pipeline.core.synthetic import write_synthetic_deeppcb

    a = write_synthetic_deeppcb(tmp_path / "a", groups=2, images_per_group=3, seed=3)
    b = write_synthetic_deeppcb(tmp_path / "b", groups=2, images_per_group=3, seed=3)
    la = sorted(p.read_text() for p in a.parent.rglob("*_not/*.txt"))
    lb = sorted(p.read_text() for p in b.parent.rglob("*_not/*.txt"))
    assert la == lb


def test_synthetic_has_grayscale_and_colour_images(tmp_path):
    from PIL import Image

    from pcb_pipeline.core.synthetic import write_synthetic_deeppcb

    split = write_synthetic_deeppcb(tmp_path, groups=3, images_per_group=2, seed=1)
    modes = {Image.open(s.test_image).mode for s in deeppcb.read_split(split)}
    assert modes == {"L", "RGB"}


def test_defect_pixels_differ_from_template_inside_boxes(synthetic_root):
    """Each labelled box really contains a drawn defect: the image differs from its template there."""
    import numpy as np
    from PIL import Image

    for s in deeppcb.read_split(deeppcb.split_file_path(synthetic_root))[:8]:
        test = np.asarray(Image.open(s.test_image).convert("L"), dtype=int)
        temp = np.asarray(Image.open(s.template_image).convert("L"), dtype=int)
        for b in deeppcb.read_labels(s.label_file):
            patch = np.abs(test - temp)[int(b.y1):int(b.y2), int(b.x1):int(b.x2)]
            assert (patch > 128).sum() > 20, f"no defect drawn in {b} of {s.image_id}"


# ------------------------------------------------------------------------------------------ bad input
def _split(tmp_path: Path, line: str) -> Path:
    f = tmp_path / "PCBData" / "trainval.txt"
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_text(line + "\n")
    return f


@pytest.mark.parametrize("line", ["group1/1/1.jpg", "a b c", "group1/1/1.png group1/1_not/1.txt",
                                  "../evil/1.jpg group1/1_not/1.txt"])
def test_malformed_split_line_names_file_and_line(tmp_path, line):
    f = _split(tmp_path, line)
    with pytest.raises(deeppcb.DeepPCBFormatError, match=rf"{f.name}:1"):
        deeppcb.read_split(f)


@pytest.mark.parametrize("content,match", [
    ("10 10 20 20\n", "5 fields"),
    ("10 10 20 x 3\n", "non-numeric"),
    ("10 10 20 20 7\n", "unknown Deep PCB defect type 7"),
    ("10 10 20 20 0\n", "unknown Deep PCB defect type 0"),
    ("600 600 700 700 1\n", "outside"),
    ("20 20 10 10 1\n", "empty or outside"),
])
def test_malformed_label_line_names_file_and_line(tmp_path, content, match):
    f = tmp_path / "x.txt"
    f.write_text("1 1 5 5 1\n" + content)
    with pytest.raises(deeppcb.DeepPCBFormatError, match=match) as e:
        deeppcb.read_labels(f)
    assert f"{f}:2" in str(e.value)


def test_empty_label_file_is_a_clean_board(tmp_path):
    f = tmp_path / "clean.txt"
    f.write_text("")
    assert deeppcb.read_labels(f) == []


def test_labels_without_trailing_newline(tmp_path):
    f = tmp_path / "x.txt"
    f.write_text("1 1 5 5 1\n10 10 30 40 6")
    assert [b.class_id for b in deeppcb.read_labels(f)] == [0, 5]


def test_class_mapping():
    assert [class_id_from_deeppcb_type(t) for t in range(1, 7)] == [0, 1, 2, 3, 4, 5]
    assert CLASS_NAMES == ("open", "short", "mousebite", "spur", "copper", "pin-hole")
    with pytest.raises(UnknownClassError):
        class_id_from_deeppcb_type(7)


def test_group_split_never_shares_a_group(synthetic_root):
    samples = deeppcb.read_split(deeppcb.split_file_path(synthetic_root))
    train, val = deeppcb.group_split(samples, 0.3)
    assert train and val and not {s.group for s in train} & {s.group for s in val}
    with pytest.raises(ValueError, match="at least two board groups"):
        deeppcb.group_split([s for s in samples if s.group == samples[0].group])


def test_yolo_line_is_normalised_centre_format():
    line = yolo_format.to_yolo_line(deeppcb.Box(0, 0, 64, 32, 2))
    assert line == "2 0.050000 0.025000 0.100000 0.050000"


def test_bad_label_leaves_no_half_written_dataset(synthetic_root, tmp_path):
    samples = deeppcb.read_split(deeppcb.split_file_path(synthetic_root))
    good = yolo_format.write_yolo_dataset({"train": samples[:4]}, tmp_path / "ds")
    assert good.images == {"train": 4}
    bad_label = tmp_path / "bad.txt"
    bad_label.write_text("1 1 5 5 9\n")
    bad = deeppcb.Sample("g", "bad", samples[0].test_image, samples[0].template_image, bad_label)
    with pytest.raises(deeppcb.DeepPCBFormatError):
        yolo_format.write_yolo_dataset({"train": samples[:4] + [bad]}, tmp_path / "ds")
    assert len(list((tmp_path / "ds" / "images" / "train").iterdir())) == 4, "existing dataset untouched"


@pytest.mark.parametrize("content", ["7 0.5 0.5 0.1 0.1", "0 0.99 0.5 0.1 0.1", "0 a 0.5 0.1 0.1", "0 0.5 0.5"])
def test_yolo_label_validation(tmp_path, content):
    f = tmp_path / "l.txt"
    f.write_text(content + "\n")
    with pytest.raises(yolo_format.YoloLabelError, match="l.txt:1"):
        yolo_format.parse_yolo_label_file(f)


def test_build_rows_uses_each_images_own_timestamp():
    from datetime import datetime, timezone

    from pcb_pipeline.core.defect_logs import InspectedImage, build_rows
    from pcb_pipeline.vision.detector import Detection

    det = Detection(2, "mousebite", 0.9, 1, 2, 30, 40)
    t1 = datetime(2026, 11, 1, 8, 0, tzinfo=timezone.utc)
    batch_t = datetime(2026, 11, 27, 12, 0, tzinfo=timezone.utc)
    logs, insp = build_rows("b", [InspectedImage("up/1.jpg", 640, 640, [det], timestamp=t1),
                                  InspectedImage("up/2.jpg", 640, 640, [])], {"1": "PENANG"}, "m/1", "r", batch_t)
    assert logs["timestamp"].tolist() == [pd_ts("2026-11-01 08:00")]
    assert insp["timestamp"].tolist() == [pd_ts("2026-11-01 08:00"), pd_ts("2026-11-27 12:00")]
    assert logs["factory_line_id"].tolist() == ["PENANG"] and insp["defect_count"].tolist() == [1, 0]


def pd_ts(text: str):
    import pandas as pd

    return pd.Timestamp(text)
