"""Dagster entry point: `dagster dev -w workspace.yaml` or `dagster asset materialize --select '*' -m pcb_pipeline.definitions`."""
from __future__ import annotations

import dagster as dg

from pcb_pipeline import settings

settings.configure()

from pcb_pipeline.defs.assets import assets  # noqa: E402
from pcb_pipeline.defs.checks import checks  # noqa: E402
from pcb_pipeline.defs.jobs import jobs  # noqa: E402
from pcb_pipeline.defs.resources import local_resources  # noqa: E402

from pcb_pipeline.backends.factory import backend_name  # noqa: E402
from pcb_pipeline.defs.snowflake_resources import snowflake_resources  # noqa: E402

defs = dg.Definitions(assets=assets, asset_checks=checks, jobs=jobs,
                      resources=snowflake_resources() if backend_name() == "snowflake" else local_resources())
