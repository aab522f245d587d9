"""The training candidate handed from trained_detector to registered_model: a pointer on the stage
(models/candidate.json) naming the run, its weights and ONNX export on the stage, and its metrics."""
from __future__ import annotations

import json
from pathlib import Path

import dagster as dg

from pcb_pipeline.backends.base import TrainingResult
from pcb_pipeline.core.detection_metrics import AT_AOI_RECALL, AT_RECALL_099
from pcb_pipeline.defs.scratch import scratch_dir

CANDIDATE_POINTER = "models/candidate.json"


def save_candidate(st, result: TrainingResult) -> None:
    pointer = scratch_dir("candidate") / "candidate.json"
    pointer.write_text(json.dumps({"run_id": result.run_id, "weights_stage_path": result.weights_stage_path,
                                   "onnx_stage_path": result.onnx_stage_path, "metrics": result.metrics,
                                   "kind": result.kind}))
    st.put_file(pointer, CANDIDATE_POINTER)


def load_candidate(st) -> TrainingResult:
    local = st.get_file(CANDIDATE_POINTER, scratch_dir("candidate_read") / "candidate.json")
    return TrainingResult(**json.loads(local.read_text()))


def download_candidate(st) -> tuple[TrainingResult, Path, Path | None]:
    """(candidate, its best.pt, its best.onnx or None when it was not exported), downloaded for registration."""
    candidate = load_candidate(st)
    work = scratch_dir("register")
    weights = st.get_file(candidate.weights_stage_path, work / "best.pt")
    onnx = st.get_file(candidate.onnx_stage_path, work / "best.onnx") if candidate.onnx_stage_path else None
    return candidate, weights, onnx


def against_aoi_metadata(metrics: dict[str, float]) -> dict:
    """False calls per board of the candidate and of the legacy AOI on the validation boards, at the AOI's recall
    and at recall 0.99, where the training measured them (the two-stage inspector does)."""
    out = {}
    for point in (AT_AOI_RECALL, AT_RECALL_099):
        for figure in ("false_calls_per_board", "aoi_false_calls_per_board", "fpr_reduction"):
            if f"{figure}_{point}" in metrics:
                out[f"{figure}_at_{point}"] = dg.MetadataValue.float(metrics[f"{figure}_{point}"])
    return out
