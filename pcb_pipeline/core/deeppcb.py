"""Reader for the Deep PCB layout as it really is on disk.

PCBData/<split>.txt lines:  group20085/20085/20085000.jpg group20085/20085_not/20085000.txt
The image path lacks the `_test` suffix of the file on disk (`20085000_test.jpg`); the template is `_temp.jpg`.
Label lines: `x1 y1 x2 y2 type`, space separated, pixel corners, type 1..6. An empty label file is a clean board.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePath, PurePosixPath

from .classes import UnknownClassError, class_id_from_deeppcb_type

IMAGE_SIZE = 640


class DeepPCBFormatError(ValueError):
    """A malformed split or label line; the message names the file and line."""


@dataclass(frozen=True)
class Box:
    x1: float
    y1: float
    x2: float
    y2: float
    class_id: int

    @property
    def width(self) -> float:
        return self.x2 - self.x1

    @property
    def height(self) -> float:
        return self.y2 - self.y1


@dataclass(frozen=True)
class Sample:
    """One Deep PCB pair: defective test image, its defect-free template, its labels."""

    group: str  # e.g. "group20085": boards of one group share a layout, so splits are carved by group
    image_id: str  # e.g. "20085000"
    test_image: Path
    template_image: Path
    label_file: Path

    @property
    def board_id(self) -> str:
        return self.image_id


def split_file_path(root: Path, split: str = "trainval") -> Path:
    root = Path(root)
    for candidate in (root / "PCBData" / f"{split}.txt", root / f"{split}.txt"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"no split file {split}.txt under {root} or {root / 'PCBData'}")


def is_template_name(name: str | PurePath) -> bool:
    """A template (golden board) named the Deep PCB way, ``<id>_temp.<ext>``: a reference, never a board to inspect."""
    return PurePath(name).stem.endswith("_temp")


def template_candidates(test_image: PurePath) -> list[PurePath]:
    """Where the Deep PCB naming puts a test image's template, in order of preference: ``<id>_temp.jpg``, then
    ``<id>_temp.png`` (a template library of 1-bit PNG layouts, as bench/gpu_pack_data.py writes), in the same
    folder. Empty for a name without the ``_test`` suffix. Works for local paths and stage paths alike."""
    if not test_image.stem.endswith("_test"):
        return []
    base = test_image.stem[: -len("_test")] + "_temp"
    return [test_image.with_name(base + ".jpg"), test_image.with_name(base + ".png")]


def listed_template(test_image: str | PurePath, listed) -> str | None:
    """The template a test image's inference reads, among `listed` paths (a set of strings: a stage listing, an
    upload folder): the first of ``template_candidates`` that is there, or None."""
    return next((str(c) for c in template_candidates(PurePosixPath(str(test_image))) if str(c) in listed), None)


def template_beside(test_image: Path) -> Path | None:
    """The template file of a test image (see ``template_candidates``), or None."""
    return next((p for p in template_candidates(Path(test_image)) if p.is_file()), None)


def _read_text(path: Path) -> str:
    """A split or label file as text; a missing or non-UTF-8 file is a DeepPCBFormatError naming it."""
    try:
        return Path(path).read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise DeepPCBFormatError(f"{path}: no such file") from None
    except UnicodeDecodeError as e:
        line = Path(path).read_bytes()[:e.start].count(b"\n") + 1
        raise DeepPCBFormatError(f"{path}:{line}: not UTF-8 text (byte 0x{e.object[e.start]:02x}); "
                                 "label and split files are plain ASCII") from None
    except OSError as e:
        raise DeepPCBFormatError(f"{path}: cannot read ({e.strerror or e})") from None


MAX_LISTED_PROBLEMS = 10  # a landing's error names this many bad files, then counts the rest


def check_pairs(samples: list[Sample], progress=None) -> None:
    """Decode every test image and template and check they match in size, before anything is landed: one
    DeepPCBFormatError naming the bad files (the first MAX_LISTED_PROBLEMS) instead of a half-landed dataset."""
    from .images import BadImageError, read_gray

    problems: list[str] = []
    for s in samples:
        try:
            test, template = read_gray(s.test_image), read_gray(s.template_image)
            if test.shape != template.shape:
                problems.append(f"{s.test_image}: {test.shape[1]}x{test.shape[0]} but its template "
                                f"{s.template_image.name} is {template.shape[1]}x{template.shape[0]}")
        except BadImageError as e:
            problems.append(str(e))
        if progress is not None:
            progress.step()
    if problems:
        listed = "; ".join(problems[:MAX_LISTED_PROBLEMS])
        more = f" (and {len(problems) - MAX_LISTED_PROBLEMS} more)" if len(problems) > MAX_LISTED_PROBLEMS else ""
        raise DeepPCBFormatError(f"{len(problems)} of {len(samples)} pairs cannot be landed: {listed}{more}")


def read_split(split_file: Path) -> list[Sample]:
    """Parse a split file; paths are resolved against the split file's folder (PCBData/)."""
    split_file = Path(split_file)
    base = split_file.parent
    samples: list[Sample] = []
    seen: set[str] = set()
    for lineno, raw in enumerate(_read_text(split_file).splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) != 2 or not parts[0].endswith(".jpg") or not parts[1].endswith(".txt"):
            raise DeepPCBFormatError(
                f"{split_file}:{lineno}: expected '<group>/<G>/<id>.jpg <group>/<G>_not/<id>.txt', got {raw!r}"
            )
        image_rel, label_rel = parts
        if ".." in Path(image_rel).parts or ".." in Path(label_rel).parts or image_rel.startswith("/"):
            raise DeepPCBFormatError(f"{split_file}:{lineno}: path escapes the dataset folder: {raw!r}")
        stem = Path(image_rel).stem
        if stem in seen:
            raise DeepPCBFormatError(f"{split_file}:{lineno}: image {stem} listed twice")
        seen.add(stem)
        image_dir = base / Path(image_rel).parent
        samples.append(
            Sample(
                group=Path(image_rel).parts[0],
                image_id=stem,
                test_image=image_dir / f"{stem}_test.jpg",
                template_image=template_beside(image_dir / f"{stem}_test.jpg") or image_dir / f"{stem}_temp.jpg",
                label_file=base / label_rel,
            )
        )
    return samples


def read_labels(label_file: Path, image_size: tuple[int, int] = (IMAGE_SIZE, IMAGE_SIZE)) -> list[Box]:
    """Parse one label file. Errors name the file and line; boxes must lie inside the image."""
    label_file = Path(label_file)
    width, height = image_size
    boxes: list[Box] = []
    for lineno, raw in enumerate(_read_text(label_file).splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        fields = line.replace(",", " ").split()  # the dataset README claims commas; the files use spaces
        where = f"{label_file}:{lineno}"
        if len(fields) != 5:
            raise DeepPCBFormatError(f"{where}: expected 'x1 y1 x2 y2 type' (5 fields), got {raw!r}")
        try:
            x1, y1, x2, y2 = (float(v) for v in fields[:4])
            dtype = int(fields[4])
        except ValueError:
            raise DeepPCBFormatError(f"{where}: non-numeric field in {raw!r}") from None
        try:
            cid = class_id_from_deeppcb_type(dtype)
        except UnknownClassError as e:
            raise DeepPCBFormatError(f"{where}: {e}") from None
        if not (0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height):
            raise DeepPCBFormatError(f"{where}: box {x1, y1, x2, y2} is empty or outside the {width}x{height} image")
        boxes.append(Box(x1, y1, x2, y2, cid))
    return boxes


def group_split(samples: list[Sample], val_fraction: float = 0.2) -> tuple[list[Sample], list[Sample]]:
    """Carve a validation set by board group: no group on both sides.

    Groups are taken, smallest first with a stable tie-break, until the validation set holds about val_fraction
    of the samples; at least one group always stays on each side when there are two or more groups.
    """
    by_group: dict[str, list[Sample]] = {}
    for s in samples:
        by_group.setdefault(s.group, []).append(s)
    if len(by_group) < 2:
        raise ValueError(f"a group split needs at least two board groups, found {sorted(by_group)}")
    target = val_fraction * len(samples)
    val_groups: list[str] = []
    count = 0
    # Deterministic order: interleave sizes so validation is neither only tiny nor only huge groups.
    for g in sorted(by_group, key=lambda g: (len(by_group[g]), g)):
        if len(val_groups) == len(by_group) - 1:
            break
        if count + len(by_group[g]) <= target * 1.25 or not val_groups:
            val_groups.append(g)
            count += len(by_group[g])
        if count >= target:
            break
    val = [s for s in samples if s.group in val_groups]
    train = [s for s in samples if s.group not in val_groups]
    return train, val
