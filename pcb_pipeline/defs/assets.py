"""The asset graph: raw_pcb_images -> yolo_dataset -> trained_detector -> registered_model -> defect_logs.

Each asset is a short recipe over named steps: the landing (defs.landing), inference (defs.inference over
vision.inference), the training candidate (defs.candidate), and the layers below them."""

from datetime import datetime, timezone

import dagster as dg

from pcb_pipeline.backends.base import TrainingRequest
from pcb_pipeline.backends.locks import retry_on_lock
from pcb_pipeline.core import deeppcb, yolo_format
from pcb_pipeline.core.defect_logs import board_id_from_path
from pcb_pipeline.core.images import read_image
from pcb_pipeline.core.reference import TEST_ONLY, check_input_mode
from pcb_pipeline.core.stage_layout import DATASET_PREFIX, HELDOUT_PREFIX, RAW_PREFIX
from pcb_pipeline.defs import candidate, inference, landing
from pcb_pipeline.defs.preview import preview_markdown
from pcb_pipeline.defs.scratch import scratch_dir
from pcb_pipeline.defs.resources import RegistryProvider, StageProvider, TrainingProvider, WarehouseProvider
from pcb_pipeline.vision.inference import store
from pcb_pipeline.vision.profiles import check_profile_for_dataset

GOLDEN_QUERY = ("SELECT detected_class, COUNT(*) FROM DEFECT_LOGS WHERE factory_line_id = 'SHANGHAI' "
                "AND timestamp >= DATEADD(week, -1, CURRENT_DATE()) GROUP BY detected_class")


# --------------------------------------------------------------------------------------------------- raw images
class RawImagesConfig(dg.Config):
    deeppcb_root: str | None = None  # folder holding PCBData/; default $PCB_DEEPPCB_ROOT; neither: synthetic boards
    split: str = "trainval"
    synthetic_groups: int = 5
    synthetic_images_per_group: int = 40
    seed: int = 0


@dg.asset(group_name="vision", kinds={"python", "files"})
def raw_pcb_images(context: dg.AssetExecutionContext, config: RawImagesConfig,
                   stage: StageProvider) -> dg.MaterializeResult:
    """Deep PCB pairs (test image, template, labels, split file) landed on the stage under raw/deeppcb."""
    st = stage.get()
    with landing.board_source(config) as (split_file, origin):
        samples, boxes = landing.read_checked(split_file, context.log.info)  # all read before the stage is touched
        written, removed = landing.land(st, samples, split_file, context.log.info)
        preview = preview_markdown([read_image(s.test_image) for s in samples[:4]], "first boards")
    return dg.MaterializeResult(metadata={
        "source": origin,
        "pairs": len(samples),
        "groups": dg.MetadataValue.json(sorted({s.group for s in samples})),
        "boxes_per_class": dg.MetadataValue.json(boxes),
        "stage_uri": st.uri(RAW_PREFIX),
        "files_written": written,
        "stale_files_removed": removed,
        "preview": preview,
    })


# --------------------------------------------------------------------------------------------------- metadata
class MetadataConfig(dg.Config):
    anchor_date: str | None = None  # ISO date the manufacturing dates lead up to; default: the day the images landed


@dg.asset(group_name="warehouse", kinds={"duckdb", "snowflake"}, deps=[raw_pcb_images])
def pcb_metadata(config: MetadataConfig, stage: StageProvider, warehouse: WarehouseProvider) -> dg.MaterializeResult:
    """PCB_METADATA: one row per board with factory line, product type, manufacturing date and shift.

    Dates are anchored on the day the raw images landed on the stage (not on the day this runs), so a re-run
    writes the same rows until the images are landed again."""
    st, wh = stage.get(), warehouse.get()
    anchor = landing.anchor_date(st, config.anchor_date)
    rows = landing.metadata_rows(st, anchor)
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
def yolo_dataset(config: DatasetConfig, stage: StageProvider) -> dg.MaterializeResult:
    """Ultralytics YOLO dataset (images/, labels/, data.yaml) with a validation split carved by board group."""
    try:
        check_input_mode(config.input_mode)
    except ValueError as e:
        raise dg.Failure(str(e), allow_retries=False) from None
    st = stage.get()
    train, val = deeppcb.group_split(landing.download_raw(st), config.val_fraction)
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


# --------------------------------------------------------------------------------------------------- training
class TrainingConfig(dg.Config):
    # demo (YOLO, CPU, minutes) | full (YOLO, GPU) | verifier (the two-stage reference inspector, CPU; needs
    # yolo_dataset's input_mode=reference) | smoke, verifier_smoke (tests)
    profile: str = "demo"
    overrides: dict[str, str] = {}  # ultralytics train() keyword overrides, e.g. {"epochs": "30"}


@dg.asset(group_name="vision", kinds={"pytorch", "mlflow"}, deps=[yolo_dataset])
def trained_detector(context: dg.AssetExecutionContext, config: TrainingConfig, stage: StageProvider,
                     trainer: TrainingProvider) -> dg.MaterializeResult:
    """The detector trained by the training entrypoint: YOLOv12-n from yolo12n.yaml, or with a profile of kind
    verifier the two-stage reference inspector (AOI candidates + a crop verifier); metrics in MLflow (the same names
    for both kinds), weights on the stage."""
    st = stage.get()
    dataset = st.get_dir(DATASET_PREFIX, scratch_dir("train_dataset") / "dataset")
    try:
        check_profile_for_dataset(config.profile, yolo_format.dataset_input_mode(dataset))
    except ValueError as e:
        raise dg.Failure(str(e), allow_retries=False) from None
    run_name = f"{config.profile}-{datetime.now(timezone.utc):%Y%m%dT%H%M%S}"
    request = TrainingRequest(dataset_dir=dataset, profile=config.profile, run_name=run_name,
                              overrides=dict(config.overrides))
    result = trainer.get(st).train(request, log=context.log.info)
    candidate.save_candidate(st, result)
    m = result.metrics
    return dg.MaterializeResult(metadata={
        "mlflow_run_id": result.run_id,
        "model_kind": result.kind,
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
        **candidate.against_aoi_metadata(m),
    })


# --------------------------------------------------------------------------------------------------- registry
@dg.asset(group_name="vision", kinds={"mlflow"}, deps=[trained_detector])
def registered_model(context: dg.AssetExecutionContext, stage: StageProvider,
                     registry: RegistryProvider) -> dg.MaterializeResult:
    """A registered model version; it becomes `champion` only if it clears the threshold and does not regress."""
    st, reg = stage.get(), registry.get()
    version = reg.register(*candidate.download_candidate(st))
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
# Two assets share one inference path (vision.inference: infer + store, through defs.inference):
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


@dg.asset(group_name="warehouse", kinds={"duckdb", "snowflake"}, deps=[registered_model, pcb_metadata],
          retry_policy=INFERENCE_RETRY)
def defect_logs(context: dg.AssetExecutionContext, config: InferenceConfig, stage: StageProvider,
                warehouse: WarehouseProvider, registry: RegistryProvider) -> dg.MaterializeResult:
    """Batch inference with the champion over a batch of stage images into DEFECT_LOGS (re-runs replace the batch),
    in this process or, on Snowflake with PCB_SNOWFLAKE_INFERENCE batch or service, by the registry
    (defs.inference.infer_batch); the rows are stored the same way."""
    st, reg, log = stage.get(), registry.get(), context.log.info
    wh = retry_on_lock(warehouse.get, log=log)
    champion = inference.require_champion(reg, registry)
    out, source = inference.infer_batch(log, st, wh, reg, registry, champion, config)
    store(log, wh, config.batch_id, out)
    golden = retry_on_lock(wh.query, GOLDEN_QUERY, log=log)
    return dg.MaterializeResult(metadata={
        "batch_id": config.batch_id,
        "images": len(out.inspections),
        "unreadable_images": dg.MetadataValue.json(out.errors),
        **inference.detections_metadata(out),
        "images_from": source,
        "inference_backend": out.backend,
        "golden_query": dg.MetadataValue.md(golden.to_markdown(index=False) if len(golden) else "(no rows)"),
        "preview": preview_markdown(out.plotted, "predictions on the first boards"),
    })


@dg.asset(partitions_def=UPLOAD_PARTITIONS, group_name="uploads", kinds={"duckdb", "snowflake"},
          deps=[registered_model, pcb_metadata], retry_policy=INFERENCE_RETRY)
def upload_defect_logs(context: dg.AssetExecutionContext, config: UploadInferenceConfig, stage: StageProvider,
                       warehouse: WarehouseProvider, registry: RegistryProvider) -> dg.MaterializeResult:
    """One uploaded board image (a dynamic partition per file under uploads/, added by the upload sensor) inferred
    with the champion into DEFECT_LOGS / BOARD_INSPECTIONS; batch_id is the file's stage path."""
    path = inference.upload_image_path(context.partition_key)
    st, reg, log = stage.get(), registry.get(), context.log.info
    listed = inference.listed_upload(st, path)
    wh = retry_on_lock(warehouse.get, log=log)
    champion = inference.require_champion(reg, registry)
    out, digest = inference.infer_upload(log, st, wh, reg, champion, listed, path, config.confidence)
    requested = context.run.tags.get("pcb/content_md5") if context.run else None
    store(log, wh, path, out)
    return dg.MaterializeResult(metadata={
        "upload": path,
        "content_md5": digest,
        "content_changed_since_request": bool(requested and requested != digest),
        "board_id": board_id_from_path(path),
        **inference.detections_metadata(out),
        "template": out.templates.get(path, ""),  # what a reference-aware champion compared the board with
        "inference_backend": out.backend,
        "preview": preview_markdown(out.plotted, "prediction"),
    })


assets = [raw_pcb_images, pcb_metadata, yolo_dataset, trained_detector, registered_model, defect_logs]
