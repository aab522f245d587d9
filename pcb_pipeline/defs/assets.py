"""The asset graph: raw_pcb_images -> yolo_dataset -> trained_detector -> registered_model -> defect_logs."""

import json
import os
import shutil
import tempfile
from collections import Counter
from datetime import date, datetime, timezone
from pathlib import Path

import dagster as dg
import pandas as pd

from pcb_pipeline import settings
from pcb_pipeline.backends.base import TrainingRequest, TrainingResult
from pcb_pipeline.core import deeppcb, synthetic, yolo_format
from pcb_pipeline.core.classes import CLASS_NAMES
from pcb_pipeline.core.defect_logs import InspectedImage, board_id_from_path, build_rows
from pcb_pipeline.core.images import read_image
from pcb_pipeline.core.metadata import board_metadata
from pcb_pipeline.defs.preview import preview_markdown
from pcb_pipeline.defs.resources import RegistryResource, StageResource, TrainingResource, WarehouseResource

RAW_PREFIX = "raw/deeppcb"
DATASET_PREFIX = "datasets/yolo"
CANDIDATE_POINTER = "models/candidate.json"
GOLDEN_QUERY = ("SELECT detected_class, COUNT(*) FROM DEFECT_LOGS WHERE factory_line_id = 'SHANGHAI' "
                "AND timestamp >= DATEADD(week, -1, CURRENT_DATE()) GROUP BY detected_class")


def scratch_dir(name: str) -> Path:
    """An empty folder under PCB_HOME/work for one asset's intermediate files."""
    d = settings.paths().work / name
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    return d


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
def raw_pcb_images(config: RawImagesConfig, stage: StageResource) -> dg.MaterializeResult:
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
        samples = deeppcb.read_split(split_file)
        counts = Counter(b.class_id for s in samples for b in deeppcb.read_labels(s.label_file))  # validate first
        base = split_file.parent
        st.remove_prefix(RAW_PREFIX)
        for s in samples:
            for f in (s.test_image, s.template_image, s.label_file):
                if f.is_file():
                    st.put_file(f, f"{RAW_PREFIX}/PCBData/{f.relative_to(base).as_posix()}")
        st.put_file(split_file, f"{RAW_PREFIX}/PCBData/{split_file.name}")
        preview = preview_markdown([read_image(s.test_image) for s in samples[:4]], "first boards")
    return dg.MaterializeResult(metadata={
        "source": origin,
        "pairs": len(samples),
        "groups": dg.MetadataValue.json(sorted({s.group for s in samples})),
        "boxes_per_class": dg.MetadataValue.json(_per_class(counts)),
        "stage_uri": st.uri(RAW_PREFIX),
        "preview": preview,
    })


def _download_raw(st, split: str = "trainval") -> list[deeppcb.Sample]:
    local = st.get_dir(RAW_PREFIX, scratch_dir("raw"))
    return deeppcb.read_split(deeppcb.split_file_path(local, split))


# --------------------------------------------------------------------------------------------------- metadata
@dg.asset(group_name="warehouse", kinds={"duckdb", "snowflake"}, deps=[raw_pcb_images])
def pcb_metadata(stage: StageResource, warehouse: WarehouseResource) -> dg.MaterializeResult:
    """PCB_METADATA: one row per board with factory line, product type, manufacturing date and shift."""
    st, wh = stage.get(), warehouse.get()
    samples = deeppcb.read_split(st.get_file(f"{RAW_PREFIX}/PCBData/trainval.txt", scratch_dir("split") / "trainval.txt"))
    anchor = date.today()
    rows = pd.DataFrame([{**board_metadata(s.board_id, s.group, anchor),
                          "source_image_path": f"{RAW_PREFIX}/PCBData/{s.group}/{s.test_image.parent.name}/{s.test_image.name}"}
                         for s in samples])
    wh.upsert("PCB_METADATA", ["board_id"], rows)
    by_line = rows.groupby("factory_line_id").size().to_dict()
    return dg.MaterializeResult(metadata={
        "rows": len(rows),
        "boards_per_line": dg.MetadataValue.json({k: int(v) for k, v in by_line.items()}),
        "preview": dg.MetadataValue.md(rows.head(8).to_markdown(index=False)),
    })


# --------------------------------------------------------------------------------------------------- dataset
class DatasetConfig(dg.Config):
    val_fraction: float = 0.2  # validation carved by board group: no group on both sides


@dg.asset(group_name="vision", kinds={"python", "files"}, deps=[raw_pcb_images])
def yolo_dataset(config: DatasetConfig, stage: StageResource) -> dg.MaterializeResult:
    """Ultralytics YOLO dataset (images/, labels/, data.yaml) with a validation split carved by board group."""
    st = stage.get()
    samples = _download_raw(st)
    train, val = deeppcb.group_split(samples, config.val_fraction)
    out = scratch_dir("yolo_dataset") / "dataset"
    summary = yolo_format.write_yolo_dataset({"train": train, "val": val}, out)
    st.remove_prefix(DATASET_PREFIX)
    files = st.put_dir(out, DATASET_PREFIX)
    return dg.MaterializeResult(metadata={
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
class InferenceConfig(dg.Config):
    image_prefix: str = f"{DATASET_PREFIX}/images/val"  # held-out boards: never seen in training
    batch_id: str = "heldout"
    confidence: float = 0.25


@dg.asset(group_name="warehouse", kinds={"duckdb", "snowflake"}, deps=[registered_model, pcb_metadata])
def defect_logs(context: dg.AssetExecutionContext, config: InferenceConfig, stage: StageResource,
                warehouse: WarehouseResource, registry: RegistryResource) -> dg.MaterializeResult:
    """Batch inference with the champion over a batch of stage images into DEFECT_LOGS (re-runs replace the batch)."""
    from pcb_pipeline.vision.batch import run_batch
    from pcb_pipeline.vision.detector import Detector, draw_detections

    st, wh, reg = stage.get(), warehouse.get(), registry.get()
    champion = reg.champion()
    if champion is None:
        raise dg.Failure(f"no champion model in registry '{registry.model_name}': materialise registered_model "
                         f"with a model that clears mAP50 >= {registry.min_map50}")
    weights = reg.download_weights(champion, settings.paths().work / "champion")
    detector = Detector(weights, conf=config.confidence)
    files = [f for f in st.list(config.image_prefix) if Path(f.path).suffix.lower() in {".jpg", ".jpeg", ".png"}]
    if not files:
        raise dg.Failure(f"no images under stage prefix {config.image_prefix!r}")
    local_dir = scratch_dir(f"inference_{config.batch_id}")
    local = {f.path: st.get_file(f.path, local_dir / Path(f.path).name) for f in files}
    inspected, plotted, errors = [], [], []
    for path, image, dets, error in run_batch(detector, local):
        if error:
            errors.append(error)
            continue
        inspected.append(InspectedImage(path, image.shape[1], image.shape[0], dets))
        plot = draw_detections(image, dets)
        _save_plot(st, config.batch_id, path, plot, local_dir)
        if len(plotted) < 4:
            plotted.append(plot)
    lines = wh.query("SELECT board_id, factory_line_id FROM PCB_METADATA")
    factory_lines = dict(zip(lines["board_id"], lines["factory_line_id"]))
    logs, inspections = build_rows(config.batch_id, inspected, factory_lines, f"{champion.name}/{champion.version}",
                                   champion.run_id, datetime.now(timezone.utc))
    wh.replace_rows("DEFECT_LOGS", "batch_id", config.batch_id, logs)
    wh.replace_rows("BOARD_INSPECTIONS", "batch_id", config.batch_id, inspections)
    golden = wh.query(GOLDEN_QUERY)
    return dg.MaterializeResult(metadata={
        "batch_id": config.batch_id,
        "images": len(inspected),
        "unreadable_images": dg.MetadataValue.json(errors),
        "detections": len(logs),
        "detections_per_class": dg.MetadataValue.json(
            {k: int(v) for k, v in logs["detected_class"].value_counts().items()} if len(logs) else {}),
        "model_version": f"{champion.name}/{champion.version}",
        "inference_backend": detector.backend,
        "golden_query": dg.MetadataValue.md(golden.to_markdown(index=False) if len(golden) else "(no rows)"),
        "preview": preview_markdown(plotted, "predictions on the first boards"),
    })


def _save_plot(st, batch_id: str, image_path: str, plot, local_dir: Path) -> None:
    import cv2

    f = local_dir / f"{Path(image_path).stem}_pred.jpg"
    cv2.imwrite(str(f), plot)
    st.put_file(f, f"predictions/{batch_id}/{f.name}")


assets = [raw_pcb_images, pcb_metadata, yolo_dataset, trained_detector, registered_model, defect_logs]
