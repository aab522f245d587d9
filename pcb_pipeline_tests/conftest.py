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


@pytest.fixture(scope="session")
def synthetic_samples(synthetic_root):
    from pcb_pipeline.core import deeppcb

    return deeppcb.read_split(synthetic_root / "PCBData" / "trainval.txt")


@pytest.fixture(scope="session")
def trained_pipeline(_isolated_home):
    """The whole graph run twice on a tiny synthetic set (smoke training): (first, second, rows after first).

    Shared by every test that needs a champion model, DEFECT_LOGS rows or an MLflow run.
    """
    import dagster as dg

    from pcb_pipeline.backends.factory import warehouse
    from pcb_pipeline.definitions import build_defs
    from pcb_pipeline.defs.resources import local_resources
    from pcb_pipeline.demo import demo_run_config

    defs = build_defs(local_resources(min_map50=0.0))
    job = defs.resolve_job_def("pcb_pipeline_job")
    cfg = demo_run_config(profile="smoke", synthetic_groups=3, synthetic_images_per_group=6,
                          confidence=0.001, input_mode="test")  # after one epoch only low-confidence boxes exist
    with dg.instance_for_test() as instance:
        first = job.execute_in_process(run_config=cfg, instance=instance)
        rows_after_first = warehouse().query("SELECT COUNT(*) AS n FROM DEFECT_LOGS")["n"][0]
        second = job.execute_in_process(run_config=cfg, instance=instance)
        yield first, second, rows_after_first
