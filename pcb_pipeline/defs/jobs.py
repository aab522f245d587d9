"""Jobs over the asset graph."""
from __future__ import annotations

import dagster as dg

from pcb_pipeline.defs.assets import UPLOAD_PARTITIONS, registered_model, trained_detector, upload_defect_logs, \
    yolo_dataset

# Everything unpartitioned, in dependency order: what `pcb-pipeline demo` runs. The upload partitions are a separate
# job (and code location): a partitioned asset cannot share a run with the unpartitioned graph.
pcb_pipeline_job = dg.define_asset_job("pcb_pipeline_job",
                                       selection=dg.AssetSelection.all() - dg.AssetSelection.groups("uploads"),
                                       description="raw images -> dataset -> training -> registry -> defect logs")

# Transient failures of the retrain (stage or registry I/O, a lost GPU node) are retried with backoff; a step that
# still fails leaves the champion untouched because registered_model never runs.
RETRAIN_RETRY = dg.RetryPolicy(max_retries=2, delay=30, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS)


def build_nightly_retrain_job(retry_policy: dg.RetryPolicy | None = RETRAIN_RETRY):
    """dataset -> train -> register (with their checks: blocking dataset checks and the blocking model gate)."""
    return dg.define_asset_job(
        "nightly_retrain_job",
        selection=dg.AssetSelection.assets(yolo_dataset, trained_detector, registered_model),
        description="Nightly retrain: rebuild the YOLO dataset, train, register; the gate promotes the model only "
                    "if it clears the threshold and does not regress (reason on registered_model's metadata).",
        op_retry_policy=retry_policy,
        tags={"pcb/pipeline": "nightly_retrain"},
    )


nightly_retrain_job = build_nightly_retrain_job()

# Inference for one uploaded file (a dynamic partition of upload_defect_logs); launched by the upload sensor.
upload_inference_job = dg.define_asset_job("upload_inference_job", selection=[upload_defect_logs],
                                           partitions_def=UPLOAD_PARTITIONS,
                                           description="DEFECT_LOGS rows for one uploaded board image")


def _freshness_job():
    from pcb_pipeline.defs.quality_checks import freshness_checks

    return dg.define_asset_job("freshness_checks_job", selection=dg.AssetSelection.checks(*freshness_checks),
                               description="champion and DEFECT_LOGS freshness checks, without materialising")


freshness_checks_job = _freshness_job()

jobs = [pcb_pipeline_job, nightly_retrain_job]  # resolvable with assets.assets + checks.checks (the demo's set)
check_jobs = [freshness_checks_job]  # needs quality_checks.quality_checks in the same Definitions
upload_jobs = [upload_inference_job]  # the pcb_uploads code location
