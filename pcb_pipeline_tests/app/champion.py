"""Build a cheap champion model (and a stage, a warehouse) in a fresh PCB_HOME, in a subprocess.

The whole graph runs on a tiny synthetic set with the `smoke` training profile, exactly as `pcb-pipeline demo`
does, but with a zero promotion threshold so the (weak) model becomes champion. Run in a subprocess with its own
PCB_HOME so no global state (MLflow tracking URI, Dagster instance) leaks into the test process or its registry.

    python pcb_pipeline_tests/app/champion.py HOME [--epochs N]

A model trained from scratch for a few epochs is weak: its confidences stay around 0.002, so tests look at it with
the confidence slider at 0 (the app still infers at its floor, vision.CONF_FLOOR = 0.001). The warehouse also gets
the knowledge layer's deterministic sample rows (600 boards over 75 days) so the dashboard has something to show,
and the SOP search index is built once here instead of in every app process.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DERIVED_ENV = ("DAGSTER_HOME", "YOLO_CONFIG_DIR", "MLFLOW_TRACKING_URI")


def isolated_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in DERIVED_ENV}
    env["PCB_HOME"] = str(home)
    env["PCB_BACKEND"] = "local"
    env.pop("PCB_DEEPPCB_ROOT", None)
    return env


def build_in_subprocess(home: Path, epochs: int = 3, timeout: float = 600) -> float:
    """Run the pipeline into `home`; returns seconds taken. Raises with the output tail on failure."""
    started = time.time()
    home.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), str(home), "--epochs", str(epochs)],
                          cwd=home, env=isolated_env(home), capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"building the test champion failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n"
                           f"{proc.stderr[-3000:]}")
    return time.time() - started


def _run(home: Path, epochs: int) -> int:
    from pcb_pipeline import settings

    settings.configure(home)
    import dagster as dg

    from pcb_pipeline.backends.factory import registry
    from pcb_pipeline.defs.assets import assets
    from pcb_pipeline.defs.checks import checks
    from pcb_pipeline.defs.jobs import jobs
    from pcb_pipeline.defs.resources import local_resources
    from pcb_pipeline.demo import demo_run_config

    defs = dg.Definitions(assets=assets, asset_checks=checks, jobs=jobs, resources=local_resources(min_map50=0.0))
    cfg = demo_run_config(profile="smoke", synthetic_groups=3, synthetic_images_per_group=6,
                          overrides={"epochs": epochs}, confidence=0.001, input_mode="test")
    with dg.instance_for_test() as instance:
        result = defs.resolve_job_def("pcb_pipeline_job").execute_in_process(run_config=cfg, instance=instance,
                                                                            raise_on_error=False)
    if not result.success:
        print("pipeline failed:", [e.step_key for e in result.all_events if e.is_step_failure], file=sys.stderr)
        return 1
    champ = registry().champion()
    print(f"champion: {champ}")
    from pcb_pipeline.backends.factory import warehouse
    from pcb_pipeline.knowledge import sample_data
    from pcb_pipeline.knowledge.api import default_manual_search

    print("sample rows:", sample_data.load_into(warehouse()))
    default_manual_search()  # builds and saves the SOP index under PCB_HOME/knowledge
    return 0 if champ is not None else 1


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("home")
    ap.add_argument("--epochs", type=int, default=3)
    a = ap.parse_args()
    sys.exit(_run(Path(a.home), a.epochs))
