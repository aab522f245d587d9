"""Seeded synthetic Deep PCB: binary trace patterns with all six defect types, written in the Deep PCB layout.

Copper is black on white, as in the real binarised Deep PCB images. Each board group has its own layout (its
template); each image in a group is that template with 1-4 drawn defects, so group splits mean what they mean on
the real data: an unseen layout. Defects are drawn larger than real ones so a demo model learns them in minutes.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .classes import NUM_CLASSES
from .deeppcb import IMAGE_SIZE, Box

COPPER, BACKGROUND = 0, 255


@dataclass(frozen=True)
class Trace:
    x1: int
    y1: int
    x2: int
    y2: int
    width: int

    @property
    def horizontal(self) -> bool:
        return self.y1 == self.y2


def _layout(rng: np.random.Generator, size: int) -> tuple[np.ndarray, list[Trace], list[tuple[int, int, int]]]:
    """Draw a template: parallel trace bundles, pads and vias. Returns the image, traces and pads (x, y, r)."""
    img = np.full((size, size), BACKGROUND, np.uint8)
    traces: list[Trace] = []
    horizontal_band = rng.integers(0, 2) == 0
    pitch = int(rng.integers(44, 64))
    width = int(rng.integers(12, 18))
    start = int(rng.integers(30, 60))
    for k, pos in enumerate(range(start, size - 30, pitch)):
        a = int(rng.integers(10, size // 3))
        b = int(rng.integers(2 * size // 3, size - 10))
        t = Trace(a, pos, b, pos, width) if horizontal_band else Trace(pos, a, pos, b, width)
        cv2.line(img, (t.x1, t.y1), (t.x2, t.y2), COPPER, t.width)
        traces.append(t)
    pads = []
    for t in traces:
        for x, y in ((t.x1, t.y1), (t.x2, t.y2)):
            r = int(rng.integers(width, width + 10))
            cv2.circle(img, (x, y), r, COPPER, -1)
            pads.append((x, y, r))
    return img, traces, pads


def _point_on(t: Trace, rng: np.random.Generator, margin: int = 60) -> tuple[int, int]:
    if t.horizontal:
        return int(rng.integers(t.x1 + margin, max(t.x1 + margin + 1, t.x2 - margin))), t.y1
    return t.x1, int(rng.integers(t.y1 + margin, max(t.y1 + margin + 1, t.y2 - margin)))


def _box(cx: float, cy: float, half_w: float, half_h: float, class_id: int, size: int) -> Box:
    return Box(max(0.0, cx - half_w), max(0.0, cy - half_h), min(float(size), cx + half_w),
               min(float(size), cy + half_h), class_id)


def _draw_defect(img: np.ndarray, class_id: int, traces: list[Trace], pads, rng: np.random.Generator) -> Box:
    size = img.shape[0]
    t = traces[int(rng.integers(0, len(traces)))]
    x, y = _point_on(t, rng)
    w = t.width
    along = int(rng.integers(14, 24))  # gap/bite length along the trace
    if class_id == 0:  # open: a gap cut through the trace
        if t.horizontal:
            cv2.rectangle(img, (x - along // 2, y - w), (x + along // 2, y + w), BACKGROUND, -1)
        else:
            cv2.rectangle(img, (x - w, y - along // 2), (x + w, y + along // 2), BACKGROUND, -1)
        return _box(x, y, along / 2 + 8, w / 2 + 8, 0, size) if t.horizontal else _box(x, y, w / 2 + 8, along / 2 + 8, 0, size)
    if class_id == 1:  # short: a copper bridge to the neighbouring trace
        i = traces.index(t)
        other = traces[i + 1] if i + 1 < len(traces) else traces[i - 1]
        thick = int(rng.integers(5, 9))
        if t.horizontal:
            cv2.line(img, (x, t.y1), (x + int(rng.integers(-6, 7)), other.y1), COPPER, thick)
            return _box(x, (t.y1 + other.y1) / 2, 14, abs(other.y1 - t.y1) / 2 - w / 2 + 4, 1, size)
        cv2.line(img, (t.x1, y), (other.x1, y + int(rng.integers(-6, 7))), COPPER, thick)
        return _box((t.x1 + other.x1) / 2, y, abs(other.x1 - t.x1) / 2 - w / 2 + 4, 14, 1, size)
    if class_id == 2:  # mousebite: a row of small bites out of one edge
        side = 1 if rng.integers(0, 2) else -1
        n = int(rng.integers(3, 5))
        r = int(rng.integers(4, 6))
        for k in range(n):
            off = (k - (n - 1) / 2) * (r * 2 - 1)
            cx, cy = (x + off, y + side * w / 2) if t.horizontal else (x + side * w / 2, y + off)
            cv2.circle(img, (int(cx), int(cy)), r, BACKGROUND, -1)
        half_along = n * r + 6
        if t.horizontal:
            return _box(x, y + side * w / 2, half_along, r + 6, 2, size)
        return _box(x + side * w / 2, y, r + 6, half_along, 2, size)
    if class_id == 3:  # spur: a thin sharp protrusion from one edge
        side = 1 if rng.integers(0, 2) else -1
        length = int(rng.integers(14, 22))
        base = int(rng.integers(6, 10))
        if t.horizontal:
            y0 = y + side * w // 2
            pts = np.array([[x - base, y0], [x + base, y0], [x + int(rng.integers(-4, 5)), y0 + side * length]])
            cv2.fillPoly(img, [pts], COPPER)
            return _box(x, y0 + side * length / 2, base + 6, length / 2 + 6, 3, size)
        x0 = x + side * w // 2
        pts = np.array([[x0, y - base], [x0, y + base], [x0 + side * length, y + int(rng.integers(-4, 5))]])
        cv2.fillPoly(img, [pts], COPPER)
        return _box(x0 + side * length / 2, y, length / 2 + 6, base + 6, 3, size)
    if class_id == 4:  # copper: a spurious blob of copper in open space
        for _ in range(50):
            cx, cy = (int(v) for v in rng.integers(30, size - 30, 2))
            rad = int(rng.integers(7, 12))
            patch = img[cy - rad - 8:cy + rad + 8, cx - rad - 8:cx + rad + 8]
            if patch.size and patch.min() == BACKGROUND:
                pts = cv2.ellipse2Poly((cx, cy), (rad, int(rad * rng.uniform(0.6, 1.0))), int(rng.integers(0, 180)), 0, 360, 30)
                cv2.fillPoly(img, [pts], COPPER)
                return _box(cx, cy, rad + 6, rad + 6, 4, size)
        return _draw_defect(img, 0, traces, pads, rng)  # a board with no free space: fall back to an open
    # pin-hole: a small hole inside a pad
    px, py, pr = pads[int(rng.integers(0, len(pads)))]
    hr = max(3, pr // 3)
    cv2.circle(img, (px, py), hr, BACKGROUND, -1)
    return _box(px, py, hr + 7, hr + 7, 5, size)


def _overlaps(box: Box, boxes: list[Box], gap: float = 6) -> bool:
    return any(not (box.x2 + gap < b.x1 or b.x2 + gap < box.x1 or box.y2 + gap < b.y1 or b.y2 + gap < box.y1)
               for b in boxes)


def generate_board(template: np.ndarray, traces, pads, rng: np.random.Generator,
                   class_ids: list[int]) -> tuple[np.ndarray, list[Box]]:
    img = template.copy()
    boxes: list[Box] = []
    for cid in class_ids:
        for _ in range(20):  # retry until the defect does not touch another one
            trial = img.copy()
            box = _draw_defect(trial, cid, traces, pads, rng)
            if not _overlaps(box, boxes):
                img, boxes = trial, boxes + [box]
                break
    return img, boxes


def write_synthetic_deeppcb(root: Path, groups: int = 4, images_per_group: int = 30, seed: int = 0,
                            size: int = IMAGE_SIZE, grayscale_every: int = 3, feature_scale: int = 2) -> Path:
    """Write PCBData/group<G>/<G>/<id>_{test,temp}.jpg, <G>_not/<id>.txt and trainval.txt under root.

    Boards are drawn at size/feature_scale and enlarged, so traces and defects are feature_scale times larger
    (a demo model at low resolution sees them). Every class appears in every group. Every `grayscale_every`-th
    group is saved single-channel, as some real Deep PCB images are. Returns the split file path.
    """
    if size % feature_scale:
        raise ValueError(f"size {size} must be a multiple of feature_scale {feature_scale}")
    canvas = size // feature_scale
    root = Path(root)
    rng = np.random.default_rng(seed)
    data = root / "PCBData"
    lines = []
    for g in range(groups):
        gid = f"{90000 + g * 1000 + seed % 1000:05d}"
        img_dir, lbl_dir = data / f"group{gid}" / gid, data / f"group{gid}" / f"{gid}_not"
        img_dir.mkdir(parents=True, exist_ok=True)
        lbl_dir.mkdir(parents=True, exist_ok=True)
        template, traces, pads = _layout(rng, canvas)
        for i in range(images_per_group):
            image_id = f"{gid}{i:03d}"
            n = int(rng.integers(2, 5))
            class_ids = [int(c) for c in rng.permutation(NUM_CLASSES)[:n]]
            class_ids[0] = i % NUM_CLASSES  # round-robin guarantees every class in every group
            img, boxes = generate_board(template, traces, pads, rng, class_ids)
            img, template_big = _enlarge(img, size), _enlarge(template, size)
            boxes = [Box(b.x1 * feature_scale, b.y1 * feature_scale, b.x2 * feature_scale, b.y2 * feature_scale,
                         b.class_id) for b in boxes]
            channels = 1 if grayscale_every and g % grayscale_every == grayscale_every - 1 else 3
            _save(img_dir / f"{image_id}_test.jpg", img, channels)
            _save(img_dir / f"{image_id}_temp.jpg", template_big, channels)
            (lbl_dir / f"{image_id}.txt").write_text(
                "".join(f"{int(b.x1)} {int(b.y1)} {int(round(b.x2))} {int(round(b.y2))} {b.class_id + 1}\n" for b in boxes)
            )
            lines.append(f"group{gid}/{gid}/{image_id}.jpg group{gid}/{gid}_not/{image_id}.txt")
    split = data / "trainval.txt"
    split.write_text("\n".join(lines) + "\n")
    return split


def _enlarge(img: np.ndarray, size: int) -> np.ndarray:
    big = cv2.resize(img, (size, size), interpolation=cv2.INTER_LINEAR)
    return np.where(big > 127, BACKGROUND, COPPER).astype(np.uint8)  # stays binary, with smooth edges


def _save(path: Path, gray: np.ndarray, channels: int) -> None:
    img = gray if channels == 1 else cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)
    if not cv2.imwrite(str(path), img, [cv2.IMWRITE_JPEG_QUALITY, 95]):
        raise OSError(f"could not write {path}")
