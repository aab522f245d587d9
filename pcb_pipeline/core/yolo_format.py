"""Deep PCB -> Ultralytics YOLO dataset (images/<split>, labels/<split>, data.yaml).

The source folder is only read: images are hard-linked when source and target share a file system (copied
otherwise), so the source can never be changed through the dataset.
"""
from __future__ import annotations

import os
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import yaml

from .classes import CLASS_NAMES, NUM_CLASSES
from .deeppcb import IMAGE_SIZE, Box, Sample, read_labels
from .reference import INPUT_MODE_KEY, REFERENCE, TEST_ONLY, TemplateError, check_input_mode, sample_composite

IMAGE_GLOB = "*.[jp][pn]g"  # .jpg (linked test images) and .png (reference composites)


class YoloLabelError(ValueError):
    pass


@dataclass
class DatasetSummary:
    root: Path
    data_yaml: Path
    images: dict[str, int] = field(default_factory=dict)  # split -> image count
    boxes: dict[str, dict[str, int]] = field(default_factory=dict)  # split -> class name -> box count
    groups: dict[str, list[str]] = field(default_factory=dict)  # split -> board groups

    def to_dict(self) -> dict:
        return {
            "root": str(self.root),
            "data_yaml": str(self.data_yaml),
            "images": self.images,
            "boxes": self.boxes,
            "groups": self.groups,
        }


def to_yolo_line(box: Box, width: int = IMAGE_SIZE, height: int = IMAGE_SIZE) -> str:
    cx = (box.x1 + box.x2) / 2 / width
    cy = (box.y1 + box.y2) / 2 / height
    return f"{box.class_id} {cx:.6f} {cy:.6f} {box.width / width:.6f} {box.height / height:.6f}"


def parse_yolo_label_file(path: Path) -> list[tuple[int, float, float, float, float]]:
    """Read a YOLO label file back, validating class ids and normalised coordinates."""
    rows = []
    for lineno, raw in enumerate(Path(path).read_text().splitlines(), start=1):
        if not raw.strip():
            continue
        parts = raw.split()
        if len(parts) != 5:
            raise YoloLabelError(f"{path}:{lineno}: expected 'class cx cy w h', got {raw!r}")
        try:
            cid = int(parts[0])
            cx, cy, w, h = (float(v) for v in parts[1:])
        except ValueError:
            raise YoloLabelError(f"{path}:{lineno}: non-numeric field in {raw!r}") from None
        if not 0 <= cid < NUM_CLASSES:
            raise YoloLabelError(f"{path}:{lineno}: class id {cid} outside 0..{NUM_CLASSES - 1}")
        if not (0 < w <= 1 and 0 < h <= 1 and 0 <= cx - w / 2 + 1e-6 and cx + w / 2 - 1e-6 <= 1
                and 0 <= cy - h / 2 + 1e-6 and cy + h / 2 - 1e-6 <= 1):
            raise YoloLabelError(f"{path}:{lineno}: box {cx, cy, w, h} is not inside the unit square")
        rows.append((cid, cx, cy, w, h))
    return rows


def link_or_copy(src: Path, dst: Path) -> None:
    """Hard-link dst to src (never writes to src), copying where the file systems differ."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists():
        dst.unlink()
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def _write_reference_image(sample: Sample, dst: Path) -> None:
    # PNG: lossless, the difference channel must not get JPEG ringing
    try:
        composite = sample_composite(sample)
    except TemplateError as e:  # which pair, so the user can fix or drop it (the previous dataset is kept)
        raise type(e)(f"{sample.test_image}: {e}") from None
    if not cv2.imwrite(str(dst), composite):
        raise OSError(f"cannot write {dst}")


def write_yolo_dataset(splits: dict[str, list[Sample]], out_dir: Path, input_mode: str = TEST_ONLY) -> DatasetSummary:
    """Write every split; labels are validated first so a bad file leaves no half-written dataset behind.

    ``input_mode="reference"`` writes reference composites (test, registered template, difference; see
    ``core.reference``) as PNG instead of linking the test images, and records the mode in data.yaml.
    """
    out_dir = Path(out_dir)
    check_input_mode(input_mode)
    parsed = {name: [(s, read_labels(s.label_file)) for s in samples] for name, samples in splits.items()}
    for name, items in parsed.items():
        for s, _ in items:
            needed = [s.test_image] + ([s.template_image] if input_mode == REFERENCE else [])
            for path in needed:
                if not path.is_file():
                    raise FileNotFoundError(f"image listed in split {name!r} is missing: {path}")
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    summary = DatasetSummary(root=out_dir, data_yaml=out_dir / "data.yaml")
    for name, items in parsed.items():
        (tmp / "images" / name).mkdir(parents=True)
        (tmp / "labels" / name).mkdir(parents=True)
        counts: Counter[str] = Counter()
        for s, boxes in items:
            if input_mode == REFERENCE:
                _write_reference_image(s, tmp / "images" / name / f"{s.image_id}.png")
            else:
                link_or_copy(s.test_image, tmp / "images" / name / f"{s.image_id}.jpg")
            lines = [to_yolo_line(b) for b in boxes]
            (tmp / "labels" / name / f"{s.image_id}.txt").write_text("\n".join(lines) + ("\n" if lines else ""))
            counts.update(CLASS_NAMES[b.class_id] for b in boxes)
        summary.images[name] = len(items)
        summary.boxes[name] = {c: counts.get(c, 0) for c in CLASS_NAMES}
        summary.groups[name] = sorted({s.group for s, _ in items})
    # No "path" key: Ultralytics then resolves images/ next to data.yaml, so the folder can move (stage, ML Job).
    data = {
        **{name: f"images/{name}" for name in parsed},
        "names": {i: n for i, n in enumerate(CLASS_NAMES)},
        INPUT_MODE_KEY: input_mode,
    }
    (tmp / "data.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    (tmp / "groups.yaml").write_text(yaml.safe_dump(summary.groups, sort_keys=True))
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
    return summary


def dataset_input_mode(dataset_dir: Path) -> str:
    """The input mode recorded in a dataset's data.yaml (datasets written before the key existed: test images)."""
    data = yaml.safe_load((Path(dataset_dir) / "data.yaml").read_text()) or {}
    return check_input_mode(data.get(INPUT_MODE_KEY, TEST_ONLY))


def split_leakage(dataset_dir: Path) -> dict[str, list[str]]:
    """Board groups and image ids present in more than one split of a written dataset (empty dict: none)."""
    dataset_dir = Path(dataset_dir)
    groups = yaml.safe_load((dataset_dir / "groups.yaml").read_text()) or {}
    seen_groups: Counter[str] = Counter(g for gs in groups.values() for g in set(gs))
    ids: Counter[str] = Counter()
    for split_dir in (dataset_dir / "images").iterdir():
        ids.update({p.stem for p in split_dir.glob(IMAGE_GLOB)})
    return {
        "groups": sorted(g for g, n in seen_groups.items() if n > 1),
        "images": sorted(i for i, n in ids.items() if n > 1),
    }
