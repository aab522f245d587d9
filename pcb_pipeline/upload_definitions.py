"""Second Dagster code location: inference of uploaded board images, one dynamic partition per file.

    dagster dev -w workspace.yaml                      (both locations)
    dagster asset materialize -m pcb_pipeline.upload_definitions --select upload_defect_logs --partition <name>

`upload_defect_logs` (partitioned) depends on registered_model and pcb_metadata of the pcb_pipeline location; it is
kept out of that location so the unpartitioned graph there still materialises with `--select '*'` (Dagster refuses a
selection mixing partitioned and unpartitioned assets without `--partition`). The resources are the main location's,
so PCB_BACKEND switches both.
"""
from __future__ import annotations

import dagster as dg

import pcb_pipeline.definitions as _main_location
from pcb_pipeline.defs.assets import upload_defect_logs
from pcb_pipeline.defs.jobs import upload_jobs
from pcb_pipeline.defs.quality_checks import upload_checks
from pcb_pipeline.defs.sensors import upload_sensors

defs = dg.Definitions(assets=[upload_defect_logs], asset_checks=upload_checks, jobs=upload_jobs,
                      sensors=upload_sensors, resources=_main_location.defs.resources)
