"""`pcb-pipeline demo`: materialise the whole graph in-process, recorded in the Dagster instance under PCB_HOME."""
from __future__ import annotations

import time

from pcb_pipeline import settings


def demo_run_config(deeppcb_root: str | None = None, profile: str = "demo", synthetic_groups: int = 5,
                    synthetic_images_per_group: int = 40, overrides: dict | None = None,
                    confidence: float = 0.25, input_mode: str = "test") -> dict:
    return {"ops": {
        "raw_pcb_images": {"config": {"deeppcb_root": deeppcb_root, "synthetic_groups": synthetic_groups,
                                      "synthetic_images_per_group": synthetic_images_per_group}},
        "yolo_dataset": {"config": {"input_mode": input_mode}},
        "trained_detector": {"config": {"profile": profile,
                                        "overrides": {k: str(v) for k, v in (overrides or {}).items()}}},
        "defect_logs": {"config": {"confidence": confidence}},
    }}


def run_demo(deeppcb_root: str | None = None, profile: str = "demo", min_map50: float | None = None,
             input_mode: str = "test") -> int:
    p = settings.configure()
    import dagster as dg

    from pcb_pipeline.backends.factory import registry, warehouse
    from pcb_pipeline.definitions import build_defs
    from pcb_pipeline.defs.assets import GOLDEN_QUERY
    from pcb_pipeline.defs.resources import local_resources

    defs = build_defs(local_resources(min_map50))
    started = time.time()
    print(f"PCB_HOME: {p.home}  (stage {p.stage}, warehouse {p.warehouse}, MLflow {p.mlflow_uri})", flush=True)
    result = defs.resolve_job_def("pcb_pipeline_job").execute_in_process(
        run_config=demo_run_config(deeppcb_root, profile, input_mode=input_mode), instance=dg.DagsterInstance.get(),
        raise_on_error=False)
    minutes = (time.time() - started) / 60
    if not result.success:
        failed = [e.step_key for e in result.all_events if e.is_step_failure]
        print(f"demo FAILED after {minutes:.1f} min in {failed}: see `dagster dev -w workspace.yaml` "
              f"(DAGSTER_HOME={p.dagster_home})")
        return 1
    champ = registry().champion()
    golden = warehouse().query(GOLDEN_QUERY)
    print(f"\nDemo finished in {minutes:.1f} min. Dagster run {result.run_id}")
    if champ:
        print(f"Champion model: {champ.name} v{champ.version}  mAP50={champ.metrics.get('map50', float('nan')):.3f}  "
              f"mAP50-95={champ.metrics.get('map50_95', float('nan')):.3f}  (MLflow run {champ.run_id})")
    print(f"\nGolden query:\n  {GOLDEN_QUERY}")
    print(golden.to_string(index=False) if len(golden) else "(no rows)")
    print(f"\nNext: dagster dev -w workspace.yaml   |   mlflow ui --backend-store-uri {p.mlflow_uri}")
    print(f"      pcb-pipeline sql \"{GOLDEN_QUERY}\"")
    return 0
