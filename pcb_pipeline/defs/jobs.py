"""Jobs over the asset graph."""
from __future__ import annotations

import dagster as dg

# Everything, in dependency order: what `pcb-pipeline demo` runs.
pcb_pipeline_job = dg.define_asset_job("pcb_pipeline_job", selection=dg.AssetSelection.all(),
                                       description="raw images -> dataset -> training -> registry -> defect logs")

jobs = [pcb_pipeline_job]
