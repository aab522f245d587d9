"""The asset graph: raw_pcb_images -> yolo_dataset -> trained_detector -> registered_model -> defect_logs."""

import json
import os
import tempfile
from collections import Counter
from datetime import date, datetime, timezone
from pathlib import Path

import dagster as dg
import pandas as pd

from pcb_pipeline import settings
from pcb_pipeline.backends.base import TrainingRequest, TrainingResult, replace_prefix
from pcb_pipeline.backends.locks import retry_on_lock
from pcb_pipeline.core import deeppcb, synthetic, yolo_format
from pcb_pipeline.core.classes import CLASS_NAMES
from pcb_pipeline.core.defect_logs import board_id_from_path
from pcb_pipeline.core.images import IMAGE_SUFFIXES, read_image
from pcb_pipeline.core.progress import Progress
from pcb_pipeline.core.stage_layout import (DATASET_PREFIX, HELDOUT_PREFIX, RAW_DATA_PREFIX, RAW_PREFIX,
                                            UPLOAD_PREFIX)
from pcb_pipeline.core.metadata import board_metadata
from pcb_pipeline.core.reference import TEST_ONLY, check_input_mode
from pcb_pipeline.defs import inference
from pcb_pipeline.defs.preview import preview_markdown
from pcb_pipeline.defs.scratch import scratch_dir
from pcb_pipeline.defs.resources import RegistryResource, StageResource, TrainingResource, WarehouseResource

CANDIDATE_POINTER = "models/candidate.json"
GOLDEN_QUERY = ("SELECT detected_class, COUNT(*) FROM DEFECT_LOGS WHERE factory_line_id = 'SHANGHAI' "
                "AND timestamp >= DATEADD(week, -1, CURRENT_DATE()) GROUP BY detected_class")


def _per_class(counts: Counter) -> dict[str, int]:
    return {name: counts.get(i, 0) for i, name in enumerate(CLASS_NAMES)}


# --------------------------------------------------------------------------------------------------- raw images
class RawImagesConfig(dg.Config):
    deeppcb_root: str | None = None  # folder holding PCBData/; default $PCB_DEEPPCB_ROOT; neither: synthetic boards
    split: str = "trainval"
    synthetic_groups: int = 5
    synthetic_images_per_group: int = 40
    seed: int = 0


@dg.asset(group_name="vision", kinds={"python", "files"})
def raw_pcb_images(context: dg.AssetExecutionContext, config: RawImagesConfig,
                   stage: StageResource) -> dg.MaterializeResult:
    """Deep PCB pairs (test image, template, labels, split file) landed on the stage under raw/deeppcb."""
    st = stage.get()
    root = config.deeppcb_root or os.environ.get("PCB_DEEPPCB_ROOT")
    with tempfile.TemporaryDirectory(prefix="synthetic-deeppcb-") as tmp:
        if root:
            split_file = deeppcb.split_file_path(Path(root).expanduser(), config.split)
            origin = f"Deep PCB at {Path(root).expanduser()}"
        else:
            split_file = synthetic.write_synthetic_deeppcb(Path(tmp), config.synthetic_groups,
                                                           config.synthetic_images_per_group, config.seed)
            origin = f"synthetic boards (seed {config.seed})"
        try:  # everything is read and decoded before the stage is touched
            samples = deeppcb.read_split(split_file)
            counts = Counter(b.class_id for s in samples for b in deeppcb.read_labels(s.label_file))
            deeppcb.check_pairs(samples, Progress("checking pairs", len(samples), context.log.info))
        except deeppcb.DeepPCBFormatError as e:
            raise dg.Failure(f"nothing landed, the previous landing is intact: {e}", allow_retries=False) from None
        written, removed = replace_prefix(st, RAW_PREFIX, landing_files(samples, split_file),
                                          Progress("landing files", 3 * len(samples) + 1, context.log.info).step)
        preview = preview_markdown([read_image(s.test_image) for s in samples[:4]], "first boards")
    return dg.MaterializeResult(metadata={
        "source": origin,
        "pairs": len(samples),
        "groups": dg.MetadataValue.json(sorted({s.group for s in samples})),
        "boxes_per_class": dg.MetadataValue.json(_per_class(counts)),
        "stage_uri": st.uri(RAW_PREFIX),
        "files_written": written,
        "stale_files_removed": removed,
        "preview": preview,
    })


def landing_files(samples: list[deeppcb.Sample], split_file: Path) -> list[tuple[Path, str]]:
    """(local file, stage path) of a landing: every pair's test image, template and labels, the split file last."""
    base = split_file.parent
    pairs = [(f, f"{RAW_DATA_PREFIX}/{f.relative_to(base).as_posix()}")
             for s in samples for f in (s.test_image, s.template_image, s.label_file)]
    return pairs + [(split_file, f"{RAW_DATA_PREFIX}/{split_file.name}")]


def _download_raw(st, split: str = "trainval") -> list[deeppcb.Sample]:
    local = st.get_dir(RAW_PREFIX, scratch_dir("raw"))
    return deeppcb.read_split(deeppcb.split_file_path(local, split))


# --------------------------------------------------------------------------------------------------- metadata
class MetadataConfig(dg.Config):
    anchor_date: str | None = None  # ISO date the manufacturing dates lead up to; default: the day the images landed


@dg.asset(group_name="warehouse", kinds={"duckdb", "snowflake"}, deps=[raw_pcb_images])
def pcb_metadata(config: MetadataConfig, stage: StageResource, warehouse: WarehouseResource) -> dg.MaterializeResult:
    """PCB_METADATA: one row per board with factory line, product type, manufacturing date and shift.

    Dates are anchored on the day the raw images landed on the stage (not on the day this runs), so a re-run
    writes the same rows until the images are landed again."""
    st, wh = stage.get(), warehouse.get()
    split_path = f"{RAW_DATA_PREFIX}/trainval.txt"
    listed = [f for f in st.list(split_path) if f.path == split_path]
    if not listed:
        raise dg.Failure(f"{split_path} is not on the stage: materialise raw_pcb_images first", allow_retries=False)
    try:
        anchor = date.fromisoformat(config.anchor_date) if config.anchor_date else listed[0].last_modified.date()
    except ValueError:
        raise dg.Failure(f"anchor_date must be an ISO date (YYYY-MM-DD), got {config.anchor_date!r}",
                         allow_retries=False) from None
    samples = deeppcb.read_split(st.get_file(split_path, scratch_dir("split") / "trainval.txt"))
    rows = pd.DataFrame([{**board_metadata(s.board_id, s.group, anchor), "source_image_path":
                          f"{RAW_DATA_PREFIX}/{s.group}/{s.test_image.parent.name}/{s.test_image.name}"}
                         for s in samples])
    wh.upsert("PCB_METADATA", ["board_id"], rows)
    by_line = rows.groupby("factory_line_id").size().to_dict()
    return dg.MaterializeResult(metadata={
        "rows": len(rows),
        "anchor_date": anchor.isoformat(),
        "boards_per_line": dg.MetadataValue.json({k: int(v) for k, v in by_line.items()}),
        "preview": dg.MetadataValue.md(rows.head(8).to_markdown(index=False)),
    })


# --------------------------------------------------------------------------------------------------- dataset
class DatasetConfig(dg.Config):
    val_fraction: float = 0.2  # validation carved by board group: no group on both sides
    # "test": the board images; "reference": composites of board, registered template layout and difference
    # (core.reference) for a reference-aware model, which then needs each board's template at inference
    input_mode: str = TEST_ONLY


@dg.asset(group_name="vision", kinds={"python", "files"}, deps=[raw_pcb_images])
def yolo_dataset(config: DatasetConfig, stage: StageResource) -> dg.MaterializeResult:
    """Ultralytics YOLO dataset (images/, labels/, data.yaml) with a validation split carved by board group."""
    try:
        check_input_mode(config.input_mode)
    except ValueError as e:
        raise dg.Failure(str(e), allow_retries=False) from None
    st = stage.get()
    samples = _download_raw(st)
    train, val = deeppcb.group_split(samples, config.val_fraction)
    out = scratch_dir("yolo_dataset") / "dataset"
    summary = yolo_format.write_yolo_dataset({"train": train, "val": val}, out, input_mode=config.input_mode)
    st.remove_prefix(DATASET_PREFIX)
    files = st.put_dir(out, DATASET_PREFIX)
    return dg.MaterializeResult(metadata={
        "input_mode": config.input_mode,
        "train_images": summary.images["train"],
        "val_images": summary.images["val"],
        "train_groups": dg.MetadataValue.json(summary.groups["train"]),
        "val_groups": dg.MetadataValue.json(summary.groups["val"]),
        "boxes": dg.MetadataValue.json(summary.boxes),
        "files_on_stage": files,
        "stage_uri": st.uri(DATASET_PREFIX),
    })


def download_dataset(st) -> Path:
    return st.get_dir(DATASET_PREFIX, scratch_dir("dataset_check") / "dataset")


# --------------------------------------------------------------------------------------------------- training
class TrainingConfig(dg.Config):
    profile: str = "demo"  # demo (CPU, minutes) | full (GPU) | smoke (tests)
    overrides: dict[str, str] = {}  # ultralytics train() keyword overrides, e.g. {"epochs": "30"}


@dg.asset(group_name="vision", kinds={"pytorch", "mlflow"}, deps=[yolo_dataset])
def trained_detector(context: dg.AssetExecutionContext, config: TrainingConfig, stage: StageResource,
                     trainer: TrainingResource) -> dg.MaterializeResult:
    """YOLOv12-n trained from yolo12n.yaml by the training entrypoint; metrics in MLflow, weights on the stage."""
    st = stage.get()
    dataset = st.get_dir(DATASET_PREFIX, scratch_dir("train_dataset") / "dataset")
    run_name = f"{config.profile}-{datetime.now(timezone.utc):%Y%m%dT%H%M%S}"
    request = TrainingRequest(dataset_dir=dataset, profile=config.profile, run_name=run_name,
                              overrides=dict(config.overrides))
    result = trainer.get(st).train(request, log=context.log.info)
    pointer = scratch_dir("candidate") / "candidate.json"
    pointer.write_text(json.dumps({"run_id": result.run_id, "weights_stage_path": result.weights_stage_path,
                                   "onnx_stage_path": result.onnx_stage_path, "metrics": result.metrics}))
    st.put_file(pointer, CANDIDATE_POINTER)
    m = result.metrics
    return dg.MaterializeResult(metadata={
        "mlflow_run_id": result.run_id,
        "input_mode": yolo_format.dataset_input_mode(dataset),
        "weights": result.weights_stage_path,
        "onnx": result.onnx_stage_path or "not exported",
        "map50": dg.MetadataValue.float(m["map50"]),
        "map50_95": dg.MetadataValue.float(m["map50_95"]),
        "precision": dg.MetadataValue.float(m["precision"]),
        "recall": dg.MetadataValue.float(m["recall"]),
        "train_seconds": dg.MetadataValue.float(m.get("train_seconds", float("nan"))),
        "per_class_ap50": dg.MetadataValue.json({k[5:]: v for k, v in m.items() if k.startswith("ap50_")
                                                 and not k.startswith("ap50_95")}),
    })


def load_candidate(st) -> TrainingResult:
    local = st.get_file(CANDIDATE_POINTER, scratch_dir("candidate_read") / "candidate.json")
    return TrainingResult(**json.loads(local.read_text()))


# --------------------------------------------------------------------------------------------------- registry
@dg.asset(group_name="vision", kinds={"mlflow"}, deps=[trained_detector])
def registered_model(context: dg.AssetExecutionContext, stage: StageResource,
                     registry: RegistryResource) -> dg.MaterializeResult:
    """A registered model version; it becomes `champion` only if it clears the threshold and does not regress."""
    st, reg = stage.get(), registry.get()
    candidate = load_candidate(st)
    work = scratch_dir("register")
    weights = st.get_file(candidate.weights_stage_path, work / "best.pt")
    onnx = st.get_file(candidate.onnx_stage_path, work / "best.onnx") if candidate.onnx_stage_path else None
    version = reg.register(candidate, weights, onnx)
    decision = reg.promote_if_better(version, registry.min_map50)
    (context.log.info if decision.promoted else context.log.warning)(f"v{version.version}: {decision.reason}")
    champion = reg.champion()
    return dg.MaterializeResult(metadata={
        "model_name": version.name,
        "version": version.version,
        "mlflow_run_id": version.run_id,
        "map50": dg.MetadataValue.float(version.metrics.get("map50", float("nan"))),
        "promoted": decision.promoted,
        "promotion_reason": decision.reason,
        "champion_version": champion.version if champion else "none",
    })


# --------------------------------------------------------------------------------------------------- inference
# Two assets share one inference path (`infer` + `store`):
#   defect_logs         unpartitioned: the held-out boards as batch "heldout"; what the demo job and
#                       `dagster asset materialize --select '*'` run.
#   upload_defect_logs  one dynamic partition per file under uploads/ (added by the upload sensor), batch_id = the
#                       file's stage path; it lives in its own code location (pcb_pipeline.upload_definitions) so the
#                       unpartitioned graph above stays materialisable in one run.
# A re-run of either replaces its batch's rows with identical ones: ids are stable and `timestamp` is when the image
# landed on the stage (its LIST last_modified), not the wall clock of the run.
UPLOAD_PARTITIONS = dg.DynamicPartitionsDefinition(name="uploads")  # key = path under uploads/, e.g. "ab12_board.jpg"
# Transient failures (warehouse lock held past the in-process retries, stage I/O, registry download) are retried with
# exponential backoff; bad input raises dg.Failure(allow_retries=False) and fails at once with its reason.
INFERENCE_RETRY = dg.RetryPolicy(max_retries=3, delay=2.0, backoff=dg.Backoff.EXPONENTIAL,
                                 jitter=dg.Jitter.PLUS_MINUS)




class InferenceConfig(dg.Config):
    # held-out boards: never seen in training. Read from raw/ instead (the validation groups' test images, templates
    # beside them) when the champion needs templates or the staged dataset holds reference composites, which are
    # not board images.
    image_prefix: str = HELDOUT_PREFIX
    batch_id: str = "heldout"
    confidence: float = 0.25


class UploadInferenceConfig(dg.Config):
    confidence: float = 0.25


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


def _require_champion(reg, registry: RegistryResource):
    champion = reg.champion()
    if champion is None:
        raise dg.Failure(f"no champion model in registry '{registry.model_name}': materialise registered_model "
                         f"with a model that clears mAP50 >= {registry.min_map50}", allow_retries=False)
    return champion


@dg.asset(group_name="warehouse", kinds={"duckdb", "snowflake"}, deps=[registered_model, pcb_metadata],
          retry_policy=INFERENCE_RETRY)
def defect_logs(context: dg.AssetExecutionContext, config: InferenceConfig, stage: StageResource,
                warehouse: WarehouseResource, registry: RegistryResource) -> dg.MaterializeResult:
    """Batch inference with the champion over a batch of stage images into DEFECT_LOGS (re-runs replace the batch).

    In this process (weights downloaded, Detector), unless the registry runs the model itself: on Snowflake with
    PCB_SNOWFLAKE_INFERENCE batch or service, `registry.batch_inference()` is a RegistryInference (a run_batch job on
    the GPU pool, or a service) and only its rows come back; they are stored the same way."""
    st, reg = stage.get(), registry.get()
    wh = retry_on_lock(warehouse.get, log=context.log.info)
    champion = _require_champion(reg, registry)
    inf = registry.batch_inference(log=context.log.info)  # None: the champion runs here
    detector = None if inf else inference.champion_detector(reg, champion, config.confidence)
    input_mode = detector.input_mode if detector else inference.champion_input_mode(st, reg, champion)
    files, source = inference.batch_files(st, config.image_prefix, input_mode)
    if not files:
        raise dg.Failure(f"no images under stage prefix {source!r}", allow_retries=False)
    local_dir, log = scratch_dir(f"inference_{config.batch_id}"), context.log.info
    out = (inference.infer_remote(log, inf, st, wh, champion, files, config.batch_id, config.confidence, input_mode,
                                  local_dir) if inf else
           inference.infer(log, st, wh, detector, champion, files, config.batch_id, local_dir,
                           lambda path: f"predictions/{config.batch_id}/{Path(path).stem}_pred.jpg"))
    if out["errors"] and not len(out["inspections"]):  # storing nothing would wipe the batch's earlier rows
        raise dg.Failure(f"no board of {len(files)} could be inspected, the batch's rows are kept as they were; "
                         f"first error: {out['errors'][0]}", allow_retries=False,
                         metadata={"unreadable_images": dg.MetadataValue.json(out["errors"][:50])})
    inference.store(context.log.info, wh, config.batch_id, out)
    golden = retry_on_lock(wh.query, GOLDEN_QUERY, log=context.log.info)
    return dg.MaterializeResult(metadata={
        "batch_id": config.batch_id,
        "images": len(out["inspections"]),
        "unreadable_images": dg.MetadataValue.json(out["errors"]),
        "detections": len(out["logs"]),
        "detections_per_class": dg.MetadataValue.json(inference.per_class_detections(out["logs"])),
        "model_version": out["model_version"],
        "model_input": out["input_mode"],
        "images_from": source,
        "inference_backend": out["backend"],
        "golden_query": dg.MetadataValue.md(golden.to_markdown(index=False) if len(golden) else "(no rows)"),
        "preview": preview_markdown(out["plotted"], "predictions on the first boards"),
    })


@dg.asset(partitions_def=UPLOAD_PARTITIONS, group_name="uploads", kinds={"duckdb", "snowflake"},
          deps=[registered_model, pcb_metadata], retry_policy=INFERENCE_RETRY)
def upload_defect_logs(context: dg.AssetExecutionContext, config: UploadInferenceConfig, stage: StageResource,
                       warehouse: WarehouseResource, registry: RegistryResource) -> dg.MaterializeResult:
    """One uploaded board image (a dynamic partition per file under uploads/, added by the upload sensor) inferred
    with the champion into DEFECT_LOGS / BOARD_INSPECTIONS; batch_id is the file's stage path."""
    import hashlib

    key = context.partition_key
    try:
        path = partition_stage_path(key)
    except ValueError as e:
        raise dg.Failure(str(e), allow_retries=False) from None
    if Path(path).suffix.lower() not in IMAGE_SUFFIXES:
        raise dg.Failure(f"{path}: not an image file name (expected one of {sorted(IMAGE_SUFFIXES)})",
                         allow_retries=False)
    st, reg = stage.get(), registry.get()
    listed = [f for f in st.list(path) if f.path == path]
    if not listed:
        raise dg.Failure(f"{path}: the upload is no longer on the stage (deleted or renamed after it was seen)",
                         allow_retries=False)
    wh = retry_on_lock(warehouse.get, log=context.log.info)
    champion = _require_champion(reg, registry)
    work = settings.paths().work / "uploads"
    work.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="upload-", dir=work) as tmp:
        detector = inference.champion_detector(reg, champion, config.confidence)
        out = inference.infer(context.log.info, st, wh, detector, champion, listed, path, Path(tmp),
                              lambda p: f"predictions/{Path(p).with_suffix('').as_posix()}_pred.jpg")
        digest = hashlib.md5(next(Path(tmp).glob("00000.*")).read_bytes()).hexdigest()
    if out["errors"]:  # nothing was written: the rows of an earlier version of this upload stay as they were
        raise dg.Failure(f"unreadable upload: {out['errors'][0]}", allow_retries=False,
                         metadata={"upload": path, "content_md5": digest})
    requested = context.run.tags.get("pcb/content_md5") if context.run else None
    inference.store(context.log.info, wh, path, out)
    return dg.MaterializeResult(metadata={
        "upload": path,
        "content_md5": digest,
        "content_changed_since_request": bool(requested and requested != digest),
        "board_id": board_id_from_path(path),
        "detections": len(out["logs"]),
        "detections_per_class": dg.MetadataValue.json(inference.per_class_detections(out["logs"])),
        "model_version": out["model_version"],
        "model_input": out["input_mode"],
        "template": out["templates"].get(path, ""),  # what a reference-aware champion compared the board with
        "inference_backend": out["backend"],
        "preview": preview_markdown(out["plotted"], "prediction"),
    })


assets = [raw_pcb_images, pcb_metadata, yolo_dataset, trained_detector, registered_model, defect_logs]
