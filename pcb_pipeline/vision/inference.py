"""Batch inference over stage images, without Dagster: the champion's detector, the boards (and their templates) from
the stage, decoding and inference overlapped (vision.batch.run_batch) or the champion run by the registry, the plots
put back on the stage, the rows for DEFECT_LOGS and BOARD_INSPECTIONS, and their one-transaction write.

The defs' inference assets (pcb_pipeline.defs.inference) are short recipes over these steps."""
from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Callable

import pandas as pd
import yaml

from pcb_pipeline.backends.base import stage_templates
from pcb_pipeline.backends.champion import champion_weights
from pcb_pipeline.backends.locks import retry_on_lock
from pcb_pipeline.core import deeppcb, yolo_format
from pcb_pipeline.core.defect_logs import InspectedImage, build_rows
from pcb_pipeline.core.images import IMAGE_SUFFIXES, read_image
from pcb_pipeline.core.progress import Progress
from pcb_pipeline.core.reference import REFERENCE, TEST_ONLY, check_input_mode
from pcb_pipeline.core.stage_layout import DATASET_PREFIX, HELDOUT_PREFIX, RAW_DATA_PREFIX, RAW_PREFIX

PREVIEW_BOARDS = 4  # plotted boards kept for an asset's preview


@dataclass
class BatchOutcome:
    """One batch's inference: its rows (nothing written yet) and what an asset reports about it."""
    logs: pd.DataFrame  # DEFECT_LOGS rows
    inspections: pd.DataFrame  # BOARD_INSPECTIONS rows
    model_version: str
    errors: list[str]  # one 'image: why' per board that could not be inspected
    plotted: list  # the first boards with their detections drawn (BGR arrays)
    backend: str
    input_mode: str
    templates: dict[str, str] = field(default_factory=dict)  # board stage path -> its template's stage path

    def detections_per_class(self) -> dict[str, int]:
        return {k: int(v) for k, v in self.logs["detected_class"].value_counts().items()} if len(self.logs) else {}


# ---------------------------------------------------------------------------------------------------- the champion
def champion_detector(reg, champion, confidence: float):
    from pcb_pipeline.vision.detector import Detector

    return Detector(champion_weights(reg, champion), conf=confidence)


def champion_input_mode(st, reg, champion) -> str:
    """The champion's input mode without loading it (for registry-side inference): train.py records it in
    metrics.json, which lies on the stage beside the weights (models/<run id>/). A version without that record has
    its weights downloaded (cached, champion_weights) and the stamp read, as the in-process path does."""
    if champion.weights_uri:
        record = str(PurePosixPath(champion.weights_uri).with_name("metrics.json"))
        if any(f.path == record for f in st.list(record)):
            with tempfile.TemporaryDirectory(prefix="champion-") as tmp:
                mode = json.loads(st.get_file(record, Path(tmp) / "metrics.json").read_text()).get("input_mode")
            if mode:
                return check_input_mode(mode)
    return champion_detector(reg, champion, 0.25).input_mode


# ---------------------------------------------------------------------------------------------------- the boards
def board_files(st, prefix: str) -> list:
    """Board images under a stage prefix (templates, ``<id>_temp.*``, are references, not boards)."""
    return [f for f in st.list(prefix)
            if Path(f.path).suffix.lower() in IMAGE_SUFFIXES and not deeppcb.is_template_name(f.path)]


def _read_staged(st, stage_path: str, read: Callable[[Path], object]):
    """``read`` applied to a stage file downloaded to a temporary folder (gone afterwards)."""
    with tempfile.TemporaryDirectory(prefix="stage-read-") as tmp:
        return read(st.get_file(stage_path, Path(tmp) / PurePosixPath(stage_path).name))


def staged_dataset_mode(st) -> str:
    """The input mode of the dataset on the stage (no data.yaml there: board images)."""
    data_yaml = f"{DATASET_PREFIX}/data.yaml"
    if not any(f.path == data_yaml for f in st.list(data_yaml)):
        return TEST_ONLY
    return _read_staged(st, data_yaml, lambda local: yolo_format.dataset_input_mode(local.parent))


def batch_files(st, image_prefix: str, input_mode: str) -> tuple[list, str]:
    """(board files, where they came from) for a batch: the held-out boards of a reference-aware champion (or of a
    reference dataset) are the raw test images of the validation groups, whose templates lie beside them."""
    if image_prefix == HELDOUT_PREFIX and REFERENCE in (input_mode, staged_dataset_mode(st)):
        return heldout_raw_boards(st), f"{RAW_PREFIX} (validation groups, with templates)"
    return board_files(st, image_prefix), image_prefix


def heldout_raw_boards(st) -> list:
    """The raw test images of the dataset's validation groups (their templates lie beside them under raw/)."""
    groups = _read_staged(st, f"{DATASET_PREFIX}/groups.yaml", lambda local: yaml.safe_load(local.read_text()))
    val_groups = (groups or {}).get("val") or []
    return [f for g in val_groups for f in board_files(st, f"{RAW_DATA_PREFIX}/{g}")
            if PurePosixPath(f.path).stem.endswith("_test")]


def download_templates(st, files, local_dir: Path) -> tuple[dict[str, Path], dict[str, str]]:
    """Each board's template from the stage (Deep PCB naming, ``backends.base.stage_templates``), downloaded:
    (board stage path -> local template, board stage path -> template stage path). Boards without one are absent."""
    where = stage_templates(st, [f.path for f in files])
    local = {f.path: st.get_file(t, local_dir / f"{i:05d}_temp{PurePosixPath(t).suffix.lower()}")
             for i, f in enumerate(files) if (t := where.get(f.path))}
    return local, where


# ---------------------------------------------------------------------------------------------------- inference
def infer(log, st, wh, detector, champion, files, batch_id: str, local_dir: Path,
          plot_path: Callable[[str], str]) -> BatchOutcome:
    """Detect defects on stage images in this process; each board's plot goes to the stage at ``plot_path(board)``.
    Returns the rows for DEFECT_LOGS and BOARD_INSPECTIONS (nothing written yet)."""
    from pcb_pipeline.vision.batch import run_batch
    from pcb_pipeline.vision.detector import draw_detections

    landed = {f.path: f.last_modified for f in files}
    local = {f.path: st.get_file(f.path, local_dir / f"{i:05d}{Path(f.path).suffix.lower()}")
             for i, f in enumerate(files)}
    templates, template_paths = download_templates(st, files, local_dir) if detector.needs_template else ({}, {})
    inspected, plotted, errors = [], [], []
    inferring = Progress("inferring boards", len(local), log)
    for path, image, dets, error in run_batch(detector, local, templates=templates):
        inferring.step()
        if error:
            error = error.replace(str(local[path]), path)
            errors.append(error.replace(str(templates[path]), template_paths[path]) if path in templates else error)
            continue
        inspected.append(InspectedImage(path, image.shape[1], image.shape[0], dets, timestamp=landed[path]))
        plot = draw_detections(image, dets)
        save_plot(st, plot_path(path), plot, local_dir)
        if len(plotted) < PREVIEW_BOARDS:
            plotted.append(plot)
    return _outcome(log, wh, champion, batch_id, inspected, errors=errors, plotted=plotted, backend=detector.backend,
                    input_mode=detector.input_mode, templates=template_paths)


def infer_remote(log, inf, st, wh, champion, files, batch_id: str, confidence: float, input_mode: str,
                 local_dir: Path) -> BatchOutcome:
    """infer's result with the champion run by the registry (`inf`: a run_batch job or a service reading the images,
    and templates, from the stage). Only the first few inspected boards are fetched, to draw the preview."""
    from pcb_pipeline.backends.snowflake.inference import inspected_images
    from pcb_pipeline.vision.detector import draw_detections

    predicted = inf.predict(champion, [f.path for f in files], batch_id, confidence)
    inspected, errors = inspected_images(predicted, {f.path: f.last_modified for f in files})
    answered = set(predicted["IMAGE_PATH"])
    errors += [f"{f.path}: no row returned by {inf.backend}" for f in files if f.path not in answered]
    plotted = []
    for i, im in enumerate(inspected[:PREVIEW_BOARDS]):  # the preview's boards only, not the batch
        local = st.get_file(im.image_path, local_dir / f"{i:05d}{Path(im.image_path).suffix.lower()}")
        plotted.append(draw_detections(read_image(local), im.detections))
    return _outcome(log, wh, champion, batch_id, inspected, errors=errors, plotted=plotted, backend=inf.backend,
                    input_mode=input_mode)


def _outcome(log, wh, champion, batch_id: str, inspected: list, **reported) -> BatchOutcome:
    """The batch's DEFECT_LOGS and BOARD_INSPECTIONS rows (nothing written yet) with what the asset reports."""
    lines = retry_on_lock(wh.query, "SELECT board_id, factory_line_id FROM PCB_METADATA", log=log)
    factory_lines = dict(zip(lines["board_id"], lines["factory_line_id"]))
    model_version = f"{champion.name}/{champion.version}"
    # one build_rows per batch: per image it cost ~1.3 ms of pandas (bench/RESULTS.md, "asset style")
    logs, inspections = build_rows(batch_id, inspected, factory_lines, model_version, champion.run_id,
                                   datetime.now(timezone.utc))
    return BatchOutcome(logs=logs, inspections=inspections, model_version=model_version, **reported)


def store(log, wh, batch_id: str, out: BatchOutcome) -> None:
    """Replace the batch's rows in both tables in one transaction (never detections without their board rows);
    waits (with backoff) while another process holds the warehouse."""
    retry_on_lock(wh.replace_batch, "batch_id", batch_id, {"DEFECT_LOGS": out.logs,
                                                           "BOARD_INSPECTIONS": out.inspections},
                  log=log)


def save_plot(st, stage_target: str, plot, local_dir: Path) -> None:
    import cv2

    f = local_dir / f"plot_{Path(stage_target).name}"
    cv2.imwrite(str(f), plot)
    st.put_file(f, stage_target)
