"""Reference composites (test, registered template layout, difference) and reference-mode YOLO datasets."""
from __future__ import annotations

import shutil

import cv2
import numpy as np
import pytest
import yaml

from pcb_pipeline.core import deeppcb
from pcb_pipeline.core.aoi import binarize, load_gray
from pcb_pipeline.core.reference import (REFERENCE, ReferenceMismatchError, TemplateError, check_input_mode,
                                         reference_composite)
from pcb_pipeline.core.yolo_format import dataset_input_mode, split_leakage, write_yolo_dataset


def _layout(seed: int = 0, size: int = 160) -> np.ndarray:
    """A binary board: white background (255), dark copper rectangles (0)."""
    rng = np.random.default_rng(seed)
    img = np.full((size, size), 255, np.uint8)
    for _ in range(12):
        x, y = rng.integers(0, size - 30, 2)
        w, h = rng.integers(6, 30, 2)
        img[y:y + h, x:x + w] = 0
    return img


def test_composite_channels_are_test_layout_and_difference():
    template = _layout()
    test = template.copy()
    test[40:46, 100:106] = 0 if test[43, 103] else 255  # one defect: flipped copper
    comp = reference_composite(test, template, register=False)
    assert comp.shape == (160, 160, 3) and comp.dtype == np.uint8
    assert (comp[:, :, 0] == test).all() and (comp[:, :, 1] == template).all()
    diff = comp[:, :, 2] > 0
    assert diff[40:46, 100:106].all() and diff.sum() == 36  # the defect and nothing else


def test_registration_removes_a_global_shift():
    template = _layout(1)
    test = np.roll(template, (3, -2), axis=(0, 1))  # the scan is off by 3 px down, 2 px left
    unregistered = reference_composite(test, template, register=False)[:, :, 2] > 0
    registered = reference_composite(test, template)[:, :, 2] > 0
    inner = (slice(20, -20), slice(20, -20))  # rolled-in borders are not comparable
    assert unregistered[inner].sum() > 200 and registered[inner].sum() == 0


def test_template_enters_as_its_binary_layout():
    template = _layout(2)
    noisy = np.clip(template.astype(int) + np.random.default_rng(0).integers(-40, 40, template.shape), 0, 255)
    comp = reference_composite(template, noisy.astype(np.uint8), register=False)
    assert set(np.unique(comp[:, :, 1])) <= {0, 255}
    assert (comp[:, :, 1] == template).all()  # JPEG-like noise of the golden scan is not information


def test_colour_inputs_and_size_mismatch():
    template = _layout(3)
    colour = cv2.cvtColor(template, cv2.COLOR_GRAY2BGR)
    assert (reference_composite(colour, colour)[:, :, 2] == 0).all()
    with pytest.raises(ReferenceMismatchError, match="same size") as e:
        reference_composite(template, template[:100])
    assert isinstance(e.value, TemplateError)
    with pytest.raises(ValueError, match="unknown model input mode"):
        check_input_mode("stereo")


def test_reference_dataset_on_synthetic_boards(synthetic_root, tmp_path):
    samples = deeppcb.read_split(synthetic_root / "PCBData" / "trainval.txt")
    train, val = deeppcb.group_split(samples)
    out = tmp_path / "ds"
    summary = write_yolo_dataset({"train": train, "val": val}, out, input_mode=REFERENCE)
    assert dataset_input_mode(out) == REFERENCE
    assert yaml.safe_load((out / "data.yaml").read_text())["pcb_input"] == "reference"
    pngs = sorted((out / "images" / "val").glob("*.png"))
    assert len(pngs) == summary.images["val"] == len(val) and not list((out / "images").rglob("*.jpg"))
    s = val[0]
    written = cv2.imread(str(out / "images" / "val" / f"{s.image_id}.png"))
    expected = reference_composite(load_gray(s.test_image), load_gray(s.template_image))
    assert (written == expected).all()  # lossless
    assert split_leakage(out) == {"groups": [], "images": []}
    test_only = write_yolo_dataset({"train": train, "val": val}, tmp_path / "plain")
    assert dataset_input_mode(test_only.root) == "test"
    for split in ("train", "val"):  # same labels either way
        for f in (out / "labels" / split).glob("*.txt"):
            assert f.read_text() == (tmp_path / "plain" / "labels" / split / f.name).read_text()


def test_a_missing_template_leaves_no_dataset(synthetic_root, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(synthetic_root, root)
    samples = deeppcb.read_split(root / "PCBData" / "trainval.txt")
    samples[3].template_image.unlink()
    with pytest.raises(FileNotFoundError, match="_temp"):
        write_yolo_dataset({"train": samples}, tmp_path / "ds", input_mode=REFERENCE)
    assert not (tmp_path / "ds").exists()
    write_yolo_dataset({"train": samples}, tmp_path / "ds")  # a test-image dataset does not need templates


def test_png_templates_are_found_and_give_the_same_composite(synthetic_root, tmp_path):
    """A template library of 1-bit PNG layouts (bench/gpu_pack_data.py) reads like the JPEG templates."""
    from PIL import Image

    root = tmp_path / "copy"
    shutil.copytree(synthetic_root, root)
    before = deeppcb.read_split(root / "PCBData" / "trainval.txt")[0]
    expected = reference_composite(load_gray(before.test_image), load_gray(before.template_image))
    mask = binarize(load_gray(before.template_image))
    Image.fromarray(~mask).convert("1").save(before.template_image.with_suffix(".png"))
    before.template_image.unlink()
    after = deeppcb.read_split(root / "PCBData" / "trainval.txt")[0]
    assert after.template_image == before.template_image.with_suffix(".png")
    assert (reference_composite(load_gray(after.test_image), load_gray(after.template_image)) == expected).all()


def test_template_beside(tmp_path):
    (tmp_path / "1_test.jpg").write_bytes(b"x")
    assert deeppcb.template_beside(tmp_path / "1_test.jpg") is None
    (tmp_path / "1_temp.png").write_bytes(b"x")
    assert deeppcb.template_beside(tmp_path / "1_test.jpg") == tmp_path / "1_temp.png"
    (tmp_path / "1_temp.jpg").write_bytes(b"x")
    assert deeppcb.template_beside(tmp_path / "1_test.jpg") == tmp_path / "1_temp.jpg"
    assert deeppcb.template_beside(tmp_path / "board.jpg") is None


def test_another_boards_template_is_refused_by_name_and_leaves_no_dataset(synthetic_root, tmp_path):
    from pcb_pipeline.core.reference import MisregisteredTemplateError, sample_composite

    samples = deeppcb.read_split(deeppcb.split_file_path(synthetic_root))
    board = samples[0]
    other = next(s for s in samples if s.group != board.group)
    assert sample_composite(board).shape == (640, 640, 3)  # its own template lines up
    with pytest.raises(MisregisteredTemplateError, match="does not line up") as e:
        reference_composite(load_gray(board.test_image), load_gray(other.template_image))
    assert isinstance(e.value, TemplateError)  # a per-board error for inference, like a missing template
    root = tmp_path / "copy"
    shutil.copytree(synthetic_root, root)
    copied = deeppcb.read_split(root / "PCBData" / "trainval.txt")
    wrong = next(s for s in copied if s.group != copied[2].group)
    shutil.copyfile(wrong.template_image, copied[2].template_image)
    with pytest.raises(MisregisteredTemplateError, match=copied[2].test_image.name):
        write_yolo_dataset({"train": copied}, tmp_path / "ds", input_mode=REFERENCE)
    assert not (tmp_path / "ds").exists()
