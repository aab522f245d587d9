"""Vision Lab logic without Streamlit: bad input, upload names and stage writes, boards and ground truth, drawing.
(The real champion model is exercised by the page and browser tests; here a stub stands in for it.)"""
from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path, PurePosixPath

import numpy as np
import pytest
from PIL import Image

from pcb_pipeline.app import vision
from pcb_pipeline.backends.local import LocalStage
from pcb_pipeline.core.deeppcb import Box
from pcb_pipeline.core.images import BadImageError
from pcb_pipeline.vision.detector import Detection


def encode(img: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def board(mode: str = "RGB", size=(640, 640), fmt: str = "JPEG") -> bytes:
    arr = np.zeros((size[1], size[0]), np.uint8)
    arr[100:140, :] = 255
    img = Image.fromarray(arr).convert(mode)
    return encode(img, fmt)


def png_with_header_size(width: int, height: int) -> bytes:
    """A small PNG whose IHDR claims width x height (decoders must refuse before allocating it)."""
    data = encode(Image.new("L", (64, 64)))
    ihdr = data[8 + 8: 8 + 8 + 13]
    new = struct.pack(">II", width, height) + ihdr[8:]
    crc = struct.pack(">I", zlib.crc32(b"IHDR" + new) & 0xFFFFFFFF)
    return data[:16] + new + crc + data[8 + 8 + 13 + 4:]


def corrupt_jpeg() -> bytes:
    """A JPEG whose frame header (SOF0) claims a zero height."""
    data = board()
    sof = data.find(b"\xff\xc0")
    return data[:sof + 5] + b"\x00\x00" + data[sof + 7:]


BAD_INPUTS = {
    "empty": (b"", "the file is empty"),
    "not an image": (b"%PDF-1.7 this is a manual, not a board", "not an image"),
    "text file": ("x1 y1 x2 y2 type\n".encode(), "not an image"),
    "garbage after a jpeg marker": (b"\xff\xd8\xff\xe0" + b"\x00garbage" * 50, "not an image|corrupt"),
    "corrupt jpeg header": (corrupt_jpeg(), "not an image|corrupt"),
    "truncated jpeg": (board()[:1500], "corrupt or truncated"),
    "huge image": (png_with_header_size(7000, 7000), "too large"),
    "decompression bomb": (png_with_header_size(20000, 20000), "too large"),
    "too small": (board(size=(16, 16), fmt="PNG"), "too small"),
    "too many bytes": (b"\xff\xd8" + b"\x00" * (vision.MAX_UPLOAD_BYTES + 1), "too large to upload"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_gets_one_clear_error(case):
    data, message = BAD_INPUTS[case]
    with pytest.raises(BadImageError, match=message) as e:
        vision.load_image(data, f"../../etc/{case}.jpg")
    assert str(e.value).startswith(f"{case}.jpg: ")  # the base name only, never the client's path


@pytest.mark.parametrize("mode,fmt", [("L", "JPEG"), ("L", "PNG"), ("RGBA", "PNG"), ("P", "PNG"), ("RGB", "BMP"),
                                      ("I;16", "PNG")])
def test_grayscale_rgba_palette_and_16_bit_become_bgr(mode, fmt):
    img = vision.load_image(board(mode, fmt=fmt), f"b.{fmt.lower()}")
    assert img.shape == (640, 640, 3) and img.dtype == np.uint8


def test_wrong_size_is_inspected_with_a_note():
    img = vision.load_image(board(size=(1000, 300)), "wide.jpg")
    assert img.shape == (300, 1000, 3)
    assert "1000x300" in vision.size_note(img)
    assert vision.size_note(np.zeros((640, 640, 3), np.uint8)) is None


@pytest.mark.parametrize("name,expected_tail", [
    ("../../etc/passwd", "_passwd.jpg"),
    ("..\\..\\windows\\system32\\x.png", "_x.jpg"),
    ("/abs/path/board 01 (copy).JPG", "_board_01_copy.jpg"),
    ("plaque électronique.jpeg", "_plaque_electronique.jpg"),
    ("板.jpg", "_upload.jpg"),
    ("", "_upload.jpg"),
    (None, "_upload.jpg"),
    ("...", "_upload.jpg"),
    ("a" * 300 + ".jpg", "_" + "a" * 80 + ".jpg"),
    ("x;rm -rf *|$(id).jpg", "_x_rm_-rf_id.jpg"),
])
def test_safe_upload_names(name, expected_tail):
    data = b"same bytes"
    out = vision.safe_upload_name(name, data)
    assert out.endswith(expected_tail), out
    assert out.startswith(vision.sha256(data)[:12] + "_")
    assert "/" not in out and "\\" not in out and ".." not in out.replace("...", "")
    assert PurePosixPath(vision.new_upload_path(name, data)).parent == PurePosixPath("uploads")


def test_upload_names_are_unique_per_content_and_stable():
    a, b = board(), board(size=(600, 600))
    assert vision.safe_upload_name("x.jpg", a) != vision.safe_upload_name("x.jpg", b)
    assert vision.safe_upload_name("x.jpg", a) == vision.safe_upload_name("x.jpg", a)


def test_write_upload_to_the_stage(tmp_path):
    stage = LocalStage(tmp_path / "stage")
    jpg = board()
    path = vision.write_upload(stage, jpg, "../../evil/board.jpg", tmp_path)
    assert path.startswith("uploads/") and path.endswith("_board.jpg")
    assert (tmp_path / "stage" / path).read_bytes() == jpg  # JPEG stored as uploaded
    assert not (tmp_path / "evil").exists()
    again = vision.write_upload(stage, jpg, "../../evil/board.jpg", tmp_path)
    assert again == path and len(stage.list("uploads")) == 1  # idempotent for the same content
    bmp = board(fmt="BMP")
    p2 = vision.write_upload(stage, bmp, "scan.bmp", tmp_path)
    assert p2.endswith("_scan.png")  # other formats stored as PNG with a matching suffix
    with Image.open(tmp_path / "stage" / p2) as im:
        assert im.format == "PNG" and im.size == (640, 640)
    assert [f.path for f in stage.list("uploads")] == sorted([path, p2])


def test_a_board_and_its_template_are_saved_as_a_pair_the_sensor_reads_together(tmp_path):
    from pathlib import PurePosixPath

    from pcb_pipeline.core.deeppcb import is_template_name, template_candidates

    stage = LocalStage(tmp_path / "stage")
    jpg, golden = board(), board(fmt="BMP")
    path = vision.write_upload(stage, jpg, "../line 3/20085000_test.jpg", tmp_path, template=golden)
    listed = sorted(f.path for f in stage.list("uploads"))
    assert path.endswith("_20085000_test.jpg") and (tmp_path / "stage" / path).read_bytes() == jpg
    template = next(p for p in listed if p != path)
    assert is_template_name(template) and template.endswith("_20085000_temp.png")  # BMP stored as PNG
    assert template in {str(t) for t in template_candidates(PurePosixPath(path))}  # where the sensor looks
    other = vision.write_upload(stage, jpg, "scan.jpg", tmp_path, template=golden)
    assert other.endswith("_scan_test.jpg") and len(stage.list("uploads")) == 4


LISTING = [
    "raw/deeppcb/PCBData/trainval.txt",
    "raw/deeppcb/PCBData/group1/1/1000_test.jpg",
    "raw/deeppcb/PCBData/group1/1/1000_temp.jpg",
    "raw/deeppcb/PCBData/group1/1_not/1000.txt",
    "raw/deeppcb/PCBData/group1/1/1001_test.jpg",  # no label file
    "raw/deeppcb/PCBData/group2/2/2000_test.JPG",
    "raw/deeppcb/PCBData/group2/2_not/2000.txt",
    "raw/other/group3/3/3000_test.jpg",
]


def test_boards_from_a_stage_listing():
    boards = vision.boards_from_listing(LISTING)
    assert [b.board_id for b in boards] == ["1000", "1001", "2000"]
    assert boards[0].label_path == "raw/deeppcb/PCBData/group1/1_not/1000.txt"
    assert boards[1].label_path is None and "no labels" in boards[1].label
    assert boards[0].template_path == "raw/deeppcb/PCBData/group1/1/1000_temp.jpg"
    assert boards[1].template_path is None and boards[2].template_path is None
    assert vision.board_for_upload("C:\\boards\\1000_test.jpg", boards) is boards[0]
    assert vision.board_for_upload("2000.jpg", boards) is boards[2]
    assert vision.board_for_upload("9999_test.jpg", boards) is None


def test_ground_truth_from_the_stage(tmp_path):
    stage = LocalStage(tmp_path / "stage")
    (tmp_path / "l.txt").write_text("10 20 50 60 3\n100 100 140 150 6\n")
    stage.put_file(tmp_path / "l.txt", "raw/deeppcb/PCBData/group1/1_not/1000.txt")
    b = vision.StageBoard("1000", "group1", "raw/deeppcb/PCBData/group1/1/1000_test.jpg",
                          "raw/deeppcb/PCBData/group1/1_not/1000.txt")
    gt = vision.ground_truth(stage, b, (640, 640), tmp_path / "cache")
    assert gt == [Box(10, 20, 50, 60, 2), Box(100, 100, 140, 150, 5)]
    assert vision.ground_truth(stage, vision.StageBoard("1", "g", "x", None), (640, 640), tmp_path) is None


class StubDetector:
    backend = "stub"

    def __init__(self):
        self.calls = 0

    def predict(self, images, conf=None):
        self.calls += 1
        return [[Detection(2, "mousebite", 0.9, 10, 10, 60, 60), Detection(1, "short", 0.3, 100, 100, 150, 150),
                 Detection(5, "pin-hole", 0.05, 200, 200, 230, 230)] for _ in images]


def test_inspect_bytes_decodes_detects_draws_and_filters():
    det = StubDetector()
    annotated, shown, insp = vision.inspect_bytes(board(), "b.jpg", det, conf=0.25,
                                                  ground_truth=[Box(300, 300, 340, 340, 0)])
    assert [d.class_name for d in shown] == ["mousebite", "short"]
    assert len(insp.detections) == 3 and insp.above(0.0) == insp.detections and insp.above(0.95) == []
    assert annotated.shape == insp.image.shape and not np.array_equal(annotated, insp.image)
    assert tuple(annotated[300 - 2, 320]) == vision.GT_COLOUR  # ground truth drawn (outline 2 px outside)
    bare = vision.render(insp, 0.25, show_ground_truth=False)
    assert tuple(bare[300 - 2, 320]) != vision.GT_COLOUR
    assert vision.summary(shown, 0.25) == "2 defect(s) at confidence 0.25 or above: 1 mousebite, 1 short"
    assert vision.summary([], 0.5) == "No defects at confidence 0.50 or above."
    table = vision.detections_table(shown)
    assert list(table["class"]) == ["mousebite", "short"] and list(table["confidence"]) == [0.9, 0.3]
    with pytest.raises(BadImageError):
        vision.inspect_bytes(b"", "empty.jpg", det)
    assert det.calls == 1  # bad input never reaches the model


def test_large_images_are_downscaled_for_display_only():
    big = np.zeros((3000, 4000, 3), np.uint8)
    assert vision.for_display(big).shape == (1200, 1600, 3)
    small = np.zeros((640, 640, 3), np.uint8)
    assert vision.for_display(small) is small


def test_display_name_strips_paths_and_control_characters():
    assert vision.display_name("../../a\x00b\nc.jpg") == "abc.jpg"
    assert vision.display_name(None) == "upload"
    assert len(vision.display_name("x" * 500)) == 80
    assert Path(vision.display_name("C:\\Users\\me\\board.png")).name == "board.png"


class ReferenceStub(StubDetector):
    """A reference-aware champion: it needs each board's template."""

    needs_template = True

    def predict(self, images, conf=None, templates=None):
        from pcb_pipeline.core.reference import MissingTemplateError

        if templates is None or templates[0] is None:
            raise MissingTemplateError("no template")
        self.templates = templates
        return super().predict(images, conf)


def test_a_reference_champion_gets_the_template():
    det = ReferenceStub()
    image = vision.load_image(board(), "b.jpg")
    template = vision.load_image(board(mode="L"), "t.jpg")
    insp = vision.inspect_image(det, image, "b.jpg", "digest", template=template)
    assert len(insp.detections) == 3 and det.templates[0] is template
    from pcb_pipeline.core.reference import TemplateError

    with pytest.raises(TemplateError):
        vision.inspect_image(det, image, "b.jpg", "digest")
    assert len(StubDetector().predict([image])) == 1  # a test-image champion is called as before
