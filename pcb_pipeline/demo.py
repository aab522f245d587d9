"""`pcb-pipeline demo`: materialise the whole graph in-process on the embedded local default (DuckDB, a stage folder,
MLflow on sqlite, local training), recorded in the Dagster instance under PCB_HOME. Always local: PCB_BACKEND is
ignored here, so the demo never touches an account.
"""
from __future__ import annotations

import os
import time
from typing import Any

from pcb_pipeline import settings


def default_profile(deeppcb_root: str | None, input_mode: str) -> str:
    """Real boards with templates train the two-stage reference inspector (on a CPU it beats the legacy AOI, a
    CPU-trained YOLO does not: bench/VERIFIER_RESULTS.md); synthetic boards, or boards alone, a YOLOv12."""
    return "verifier" if deeppcb_root and input_mode == "reference" else "demo"


def demo_run_config(deeppcb_root: str | None = None, profile: str = "demo", synthetic_groups: int = 5,
                    synthetic_images_per_group: int = 40, overrides: dict | None = None,
                    confidence: float = 0.25, input_mode: str = "reference") -> dict:
    return {"ops": {
        "raw_pcb_images": {"config": {"deeppcb_root": deeppcb_root, "synthetic_groups": synthetic_groups,
                                      "synthetic_images_per_group": synthetic_images_per_group}},
        "yolo_dataset": {"config": {"input_mode": input_mode}},
        "trained_detector": {"config": {"profile": profile,
                                        "overrides": {k: str(v) for k, v in (overrides or {}).items()}}},
        "defect_logs": {"config": {"confidence": confidence}},
    }}


def _metadata(result, node: str) -> dict[str, Any]:
    mats = result.asset_materializations_for_node(node)
    return {k: getattr(v, "value", v) for k, v in mats[-1].metadata.items()} if mats else {}


def gate_block_message(registered: dict[str, Any], min_map50: float) -> str:
    """One sentence for a model the promotion gate kept out: the metric, its value, the threshold, what was stored,
    and the commands that go on."""
    lower = max(round(float(registered.get("map50", 0.0)) - 0.01, 2), 0.01)
    return (f"The quality gate kept the new model out ({registered.get('promotion_reason')}, threshold "
            f"{min_map50:.2f}); it is stored in MLflow as {registered.get('model_name')} v{registered.get('version')} "
            f"but is not the champion, so no defect logs were written; to go on, train longer "
            f"(`pcb-pipeline demo --set epochs=40`), accept it (`pcb-pipeline demo --min-map50 {lower:.2f}`) "
            f"or train on a GPU (`--profile full`).")


def failure_message(result, minutes: float, dagster_home) -> str:
    failures = [e for e in result.all_events if e.is_step_failure]
    first = failures[0] if failures else None
    error = getattr(getattr(first, "event_specific_data", None), "error", None)
    why = (error.message.strip().splitlines() or ["no message"])[-1] if error else "see the run's logs"
    return (f"The demo stopped after {minutes:.1f} min: step {first.step_key if first else '?'} failed ({why}); "
            f"the run's logs are in `dagster dev -w workspace.yaml` (DAGSTER_HOME={dagster_home}).")


def run_demo(deeppcb_root: str | None = None, profile: str | None = None, min_map50: float | None = None,
             input_mode: str = "reference", overrides: dict | None = None) -> int:
    os.environ["PCB_BACKEND"] = "local"  # the demo is the embedded default, whatever the shell says
    p = settings.configure()
    deeppcb_root = deeppcb_root or os.environ.get("PCB_DEEPPCB_ROOT") or None
    profile = profile or default_profile(deeppcb_root, input_mode)
    import dagster as dg

    from pcb_pipeline.backends.factory import registry, warehouse
    from pcb_pipeline.definitions import build_defs
    from pcb_pipeline.defs.assets import GOLDEN_QUERY
    from pcb_pipeline.defs.resources import local_resources

    resources = local_resources(min_map50)
    defs = build_defs(resources)
    started = time.time()
    print(f"PCB_HOME: {p.home}  (stage {p.stage}, warehouse {p.warehouse}, MLflow {p.mlflow_uri})", flush=True)
    print(f"boards: {deeppcb_root or 'synthetic'}; training profile {profile}", flush=True)
    result = defs.resolve_job_def("pcb_pipeline_job").execute_in_process(
        run_config=demo_run_config(deeppcb_root, profile, overrides=overrides, input_mode=input_mode),
        instance=dg.DagsterInstance.get(), raise_on_error=False)
    minutes = (time.time() - started) / 60
    registered = _metadata(result, "registered_model")
    if registered and not registered.get("promoted") and registry().champion() is None:
        print("\n" + gate_block_message(registered, resources["registry"].min_map50), flush=True)
        return 1
    if not result.success:
        print("\n" + failure_message(result, minutes, p.dagster_home), flush=True)
        return 1
    champ = registry().champion()
    golden = warehouse().query(GOLDEN_QUERY)
    if registered and not registered.get("promoted"):
        print(f"\nThe new model was not promoted ({registered.get('promotion_reason')}); champion v{champ.version} "
              f"stays and wrote the defect logs.")
    print(f"\nDemo finished in {minutes:.1f} min. Dagster run {result.run_id}")
    if champ:
        print(f"Champion model: {champ.name} v{champ.version}  mAP50={champ.metrics.get('map50', float('nan')):.3f}  "
              f"mAP50-95={champ.metrics.get('map50_95', float('nan')):.3f}  (MLflow run {champ.run_id})")
    print(f"\nGolden query:\n  {GOLDEN_QUERY}")
    print(golden.to_string(index=False) if len(golden) else "(no rows)")
    print(f"\nNext: dagster dev -w workspace.yaml   |   mlflow ui --backend-store-uri {p.mlflow_uri}")
    print(f"      pcb-pipeline sql \"{GOLDEN_QUERY}\"")
    return 0
