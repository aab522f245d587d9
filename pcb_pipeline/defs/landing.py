"""The raw landing's steps in Dagster terms: where the boards come from, reading and checking them before the stage is
touched, landing them under raw/deeppcb, and reading the landed split back for the metadata and dataset assets. Bad
input is a dg.Failure that names it and is not retried."""
from __future__ import annotations

import os
import tempfile
from collections import Counter
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Iterator

import dagster as dg
import pandas as pd

from pcb_pipeline.backends.base import replace_prefix
from pcb_pipeline.core import deeppcb, synthetic
from pcb_pipeline.core.classes import CLASS_NAMES
from pcb_pipeline.core.metadata import board_metadata
from pcb_pipeline.core.progress import Progress
from pcb_pipeline.core.stage_layout import RAW_DATA_PREFIX, RAW_PREFIX
from pcb_pipeline.defs.scratch import scratch_dir

SPLIT_STAGE_PATH = f"{RAW_DATA_PREFIX}/trainval.txt"


@contextmanager
def board_source(config) -> Iterator[tuple[Path, str]]:
    """(split file, origin) of the boards to land (``config``: RawImagesConfig): Deep PCB at ``deeppcb_root`` or
    $PCB_DEEPPCB_ROOT, otherwise seeded synthetic boards in a temporary folder that lives as long as the block."""
    root = config.deeppcb_root or os.environ.get("PCB_DEEPPCB_ROOT")
    if root:
        yield (deeppcb.split_file_path(Path(root).expanduser(), config.split),
               f"Deep PCB at {Path(root).expanduser()}")
        return
    with tempfile.TemporaryDirectory(prefix="synthetic-deeppcb-") as tmp:
        yield (synthetic.write_synthetic_deeppcb(Path(tmp), config.synthetic_groups,
                                                 config.synthetic_images_per_group, config.seed),
               f"synthetic boards (seed {config.seed})")


def read_checked(split_file: Path, log) -> tuple[list[deeppcb.Sample], dict[str, int]]:
    """(samples, boxes per class name) of a split file, every pair read and decoded before the stage is touched."""
    try:
        samples = deeppcb.read_split(split_file)
        counts = Counter(b.class_id for s in samples for b in deeppcb.read_labels(s.label_file))
        deeppcb.check_pairs(samples, Progress("checking pairs", len(samples), log))
    except deeppcb.DeepPCBFormatError as e:
        raise dg.Failure(f"nothing landed, the previous landing is intact: {e}", allow_retries=False) from None
    return samples, {name: counts.get(i, 0) for i, name in enumerate(CLASS_NAMES)}


def land(st, samples: list[deeppcb.Sample], split_file: Path, log) -> tuple[int, int]:
    """(files written, stale files removed): raw/ holds exactly this landing afterwards (``replace_prefix``)."""
    return replace_prefix(st, RAW_PREFIX, landing_files(samples, split_file),
                          Progress("landing files", 3 * len(samples) + 1, log).step)


def landing_files(samples: list[deeppcb.Sample], split_file: Path) -> list[tuple[Path, str]]:
    """(local file, stage path) of a landing: every pair's test image, template and labels, the split file last."""
    base = split_file.parent
    pairs = [(f, f"{RAW_DATA_PREFIX}/{f.relative_to(base).as_posix()}")
             for s in samples for f in (s.test_image, s.template_image, s.label_file)]
    return pairs + [(split_file, f"{RAW_DATA_PREFIX}/{split_file.name}")]


def download_raw(st, split: str = "trainval") -> list[deeppcb.Sample]:
    """The landed samples of a split, downloaded with their files."""
    local = st.get_dir(RAW_PREFIX, scratch_dir("raw"))
    return deeppcb.read_split(deeppcb.split_file_path(local, split))


# ------------------------------------------------------------------------------------------------------ metadata
def anchor_date(st, anchor: str | None) -> date:
    """The day the manufacturing dates lead up to: ``anchor`` (an ISO date) or the day the split file landed."""
    listed = [f for f in st.list(SPLIT_STAGE_PATH) if f.path == SPLIT_STAGE_PATH]
    if not listed:
        raise dg.Failure(f"{SPLIT_STAGE_PATH} is not on the stage: materialise raw_pcb_images first",
                         allow_retries=False)
    try:
        return date.fromisoformat(anchor) if anchor else listed[0].last_modified.date()
    except ValueError:
        raise dg.Failure(f"anchor_date must be an ISO date (YYYY-MM-DD), got {anchor!r}",
                         allow_retries=False) from None


def metadata_rows(st, anchor: date) -> pd.DataFrame:
    """PCB_METADATA rows, one per landed board, with the stage path of its test image."""
    samples = deeppcb.read_split(st.get_file(SPLIT_STAGE_PATH, scratch_dir("split") / "trainval.txt"))
    return pd.DataFrame([{**board_metadata(s.board_id, s.group, anchor), "source_image_path":
                          f"{RAW_DATA_PREFIX}/{s.group}/{s.test_image.parent.name}/{s.test_image.name}"}
                         for s in samples])
