"""Dagster entry point: `dagster dev -w workspace.yaml` or `dagster asset materialize --select '*' -m pcb_pipeline.definitions`.

Upload inference lives in the second code location, pcb_pipeline.upload_definitions (also in workspace.yaml).
"""
from __future__ import annotations

import dagster as dg

from pcb_pipeline import settings

settings.configure()

from pcb_pipeline.defs.assets import assets  # noqa: E402
from pcb_pipeline.defs.checks import checks  # noqa: E402
from pcb_pipeline.defs.jobs import check_jobs, jobs  # noqa: E402
from pcb_pipeline.defs.quality_checks import quality_checks  # noqa: E402
from pcb_pipeline.defs.schedules import schedules  # noqa: E402
from pcb_pipeline.defs.sensors import sensors  # noqa: E402
from pcb_pipeline.defs.resources import resources_for  # noqa: E402

from pcb_pipeline.defs.knowledge_assets import knowledge_assets, knowledge_checks  # noqa: E402


def build_defs(resources: dict | None = None) -> dg.Definitions:
    """The one composition of the graph; the demo and the tests pass their own resources."""
    # Upload inference (dynamic partitions) and its sensor are the second code location,
    # pcb_pipeline.upload_definitions: with a partitioned asset here, `dagster asset materialize --select '*'`
    # would refuse to run without --partition.
    return dg.Definitions(assets=assets + knowledge_assets,
                          asset_checks=checks + quality_checks + knowledge_checks,
                          jobs=jobs + check_jobs, schedules=schedules, sensors=sensors,
                          resources=resources if resources is not None else resources_for())


defs = build_defs()
