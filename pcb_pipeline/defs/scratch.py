"""Scratch folders under PCB_HOME/work for the assets' intermediate files."""
from __future__ import annotations

import shutil
from pathlib import Path

from pcb_pipeline import settings


def scratch_dir(name: str) -> Path:
    """An empty folder under PCB_HOME/work for one asset's intermediate files."""
    d = settings.paths().work / name
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    return d
