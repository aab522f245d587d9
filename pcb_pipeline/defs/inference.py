"""The inference assets' steps in Dagster terms: the champion (or a clear dg.Failure), a batch run in this process or
by the registry, an upload's checks and its inference, and the metadata both assets report. The work itself is
pcb_pipeline.vision.inference; defect_logs and upload_defect_logs (defs.assets) are short recipes over these steps."""
from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

import dagster as dg

from pcb_pipeline import settings
from pcb_pipeline.core.images import IMAGE_SUFFIXES
from pcb_pipeline.core.stage_layout import UPLOAD_PREFIX
from pcb_pipeline.defs.scratch import scratch_dir
from pcb_pipeline.vision import inference as vi
from pcb_pipeline.vision.inference import BatchOutcome, champion_input_mode


def require_champion(reg, registry):
    """The registry's champion, or a Failure saying which model to register."""
    champion = reg.champion()
    if champion is None:
        raise dg.Failure(f"no champion model in registry '{registry.model_name}': materialise registered_model "
                         f"with a model that clears mAP50 >= {registry.min_map50}", allow_retries=False)
    return champion


def infer_batch(log, st, wh, reg, registry, champion, config) -> tuple[BatchOutcome, str]:
    """(outcome, where the images came from) of a batch (``config``: image_prefix, batch_id, confidence), inferred
    in this process (weights downloaded, Detector) unless the registry runs the model itself: on Snowflake with
    PCB_SNOWFLAKE_INFERENCE batch or service, `registry.batch_inference()` is a RegistryInference (a run_batch job on
    the GPU pool, or a service) and only its rows come back. Fails when nothing could be inspected, since storing
    nothing would wipe the batch's earlier rows."""
    inf = registry.batch_inference(log=log)  # None: the champion runs here
    detector = None if inf else vi.champion_detector(reg, champion, config.confidence)
    input_mode = detector.input_mode if detector else champion_input_mode(st, reg, champion)
    files, source = vi.batch_files(st, config.image_prefix, input_mode)
    if not files:
        raise dg.Failure(f"no images under stage prefix {source!r}", allow_retries=False)
    local_dir = scratch_dir(f"inference_{config.batch_id}")
    out = (vi.infer_remote(log, inf, st, wh, champion, files, config.batch_id, config.confidence, input_mode,
                           local_dir) if inf else
           vi.infer(log, st, wh, detector, champion, files, config.batch_id, local_dir,
                    lambda path: f"predictions/{config.batch_id}/{Path(path).stem}_pred.jpg"))
    if out.errors and not len(out.inspections):
        raise dg.Failure(f"no board of {len(files)} could be inspected, the batch's rows are kept as they were; "
                         f"first error: {out.errors[0]}", allow_retries=False,
                         metadata={"unreadable_images": dg.MetadataValue.json(out.errors[:50])})
    return out, source


# ------------------------------------------------------------------------------------------------------- uploads
def partition_stage_path(partition_key: str) -> str:
    """uploads/<partition key>; refuses keys that are empty, absolute or climb out of the upload folder."""
    from pcb_pipeline.backends.local import StagePathError, clean_stage_path

    key = str(partition_key or "")
    if not key.strip() or key.startswith(("/", "\\")) or any(c in key for c in "\x00\r\n\t"):
        raise ValueError(f"upload partition key {partition_key!r} is not a file name under {UPLOAD_PREFIX}/")
    try:
        path = clean_stage_path(f"{UPLOAD_PREFIX}/{key}")
    except StagePathError:
        raise ValueError(f"upload partition key {partition_key!r} escapes the {UPLOAD_PREFIX}/ folder") from None
    if not path.startswith(f"{UPLOAD_PREFIX}/") or path == UPLOAD_PREFIX:
        raise ValueError(f"upload partition key {partition_key!r} escapes the {UPLOAD_PREFIX}/ folder")
    return path


def upload_image_path(partition_key: str) -> str:
    """The partition's stage path, or a Failure when the key is not an image file name under uploads/."""
    try:
        path = partition_stage_path(partition_key)
    except ValueError as e:
        raise dg.Failure(str(e), allow_retries=False) from None
    if Path(path).suffix.lower() not in IMAGE_SUFFIXES:
        raise dg.Failure(f"{path}: not an image file name (expected one of {sorted(IMAGE_SUFFIXES)})",
                         allow_retries=False)
    return path


def listed_upload(st, path: str) -> list:
    """The upload's stage listing (one file), or a Failure when it has gone since the sensor saw it."""
    listed = [f for f in st.list(path) if f.path == path]
    if not listed:
        raise dg.Failure(f"{path}: the upload is no longer on the stage (deleted or renamed after it was seen)",
                         allow_retries=False)
    return listed


def infer_upload(log, st, wh, reg, champion, listed: list, path: str, confidence: float) -> tuple[BatchOutcome, str]:
    """(outcome, md5 of the bytes inferred) of one upload, in this process; an unreadable upload is a Failure and
    nothing is written, so the rows of an earlier version of it stay as they were."""
    work = settings.paths().work / "uploads"
    work.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="upload-", dir=work) as tmp:
        detector = vi.champion_detector(reg, champion, confidence)
        out = vi.infer(log, st, wh, detector, champion, listed, path, Path(tmp),
                       lambda p: f"predictions/{Path(p).with_suffix('').as_posix()}_pred.jpg")
        digest = hashlib.md5(next(Path(tmp).glob("00000.*")).read_bytes()).hexdigest()
    if out.errors:
        raise dg.Failure(f"unreadable upload: {out.errors[0]}", allow_retries=False,
                         metadata={"upload": path, "content_md5": digest})
    return out, digest


# ------------------------------------------------------------------------------------------------------ metadata
def detections_metadata(out: BatchOutcome) -> dict:
    """What both inference assets report about the detections and the model that made them."""
    return {"detections": len(out.logs),
            "detections_per_class": dg.MetadataValue.json(out.detections_per_class()),
            "model_version": out.model_version,
            "model_input": out.input_mode}
