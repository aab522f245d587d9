from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED_DEEPPCB = Path(__file__).resolve().parents[1].parent / "shared" / "deeppcb"


@pytest.fixture(scope="session", autouse=True)
def _isolated_home(tmp_path_factory):
    """Every test session gets its own PCB_HOME; nothing touches the user's .pcb_home."""
    home = tmp_path_factory.mktemp("pcb_home")
    os.environ["PCB_HOME"] = str(home)
    for k in ("DAGSTER_HOME", "YOLO_CONFIG_DIR", "MLFLOW_TRACKING_URI"):
        os.environ.pop(k, None)
    from pcb_pipeline import settings

    settings.configure(home)
    yield home


@pytest.fixture(scope="session")
def deeppcb_root() -> Path:
    root = Path(os.environ.get("PCB_DEEPPCB_ROOT", SHARED_DEEPPCB))
    if not (root / "PCBData" / "trainval.txt").is_file():
        pytest.skip(f"Deep PCB not found at {root}")
    return root


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> Path:
    from pcb_pipeline.core.synthetic import write_synthetic_deeppcb

    root = tmp_path_factory.mktemp("synthetic")
    write_synthetic_deeppcb(root, groups=3, images_per_group=8, seed=7)
    return root
