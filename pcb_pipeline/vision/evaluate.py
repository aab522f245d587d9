"""Evaluate weights on any Deep PCB split file, or on its group-split validation part.

One report, every figure computed on the same images:
- Ultralytics ``val``: mAP50, mAP50-95, precision, recall, per class (``map50`` ... ``per_class``);
- the Deep PCB protocol (``core.detection_metrics``: a detection counts when IoU > 0.33 with a same-class box): mAP,
  per-class AP, best F and its threshold, and the class-agnostic AP (``deeppcb_protocol``);
- the legacy AOI inspector (``core.aoi`` with its default parameters, tuned on the training groups of the group split)
  on the pairs whose template exists, scored the same way (``aoi_baseline``);
- false calls per board and false-call rate of the model vs the AOI at matched recall: at the AOI's own operating
  recall and at fixed recalls such as 0.90 (``fpr_reduction``), class-agnostic as the business counts a false call
  (a defect called where there is none), and the model's false calls per board at its operating points
  (``false_calls_per_board``).
The model's boxes for the protocol come from ``Detector`` (the lean ONNX Runtime path when best.onnx is present) at
a confidence floor of 0.001, as ultralytics ``val`` does, so that the precision/recall curves are complete.
"""
from __future__ import annotations

import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import yaml

from pcb_pipeline.core import aoi as aoi_mod
from pcb_pipeline.core import deeppcb, yolo_format
from pcb_pipeline.core.classes import CLASS_NAMES
from pcb_pipeline.core.detection_metrics import (DEEPPCB_IOU, compare_at_matched_recall, evaluate_detections,
                                                 matched_recall, operating_point)
from pcb_pipeline.core.reference import TEST_ONLY
from pcb_pipeline.vision.verifier import VERIFIER_KIND

PROTOCOL_CONF = 0.001  # confidence floor of the protocol predictions (complete PR curves)
DEFAULT_TARGET_RECALLS = (0.90, 0.99)  # besides the AOI's own operating recall; 0.99: what a factory needs


def select_samples(split_file: Path, val_groups: bool = False, val_fraction: float = 0.2) -> list[deeppcb.Sample]:
    """The samples of a split file, or only its group-split validation part (``deeppcb.group_split``)."""
    samples = deeppcb.read_split(split_file)
    if not samples:
        raise ValueError(f"split file {split_file} lists no images")
    if val_groups:
        _, samples = deeppcb.group_split(samples, val_fraction)
    return samples


def ultralytics_metrics(weights: Path, samples: list[deeppcb.Sample], imgsz: int, batch: int = 8,
                        input_mode: str = TEST_ONLY) -> dict:
    """Ultralytics val (mAP50, mAP50-95, precision, recall, per class) on a temporary YOLO dataset of ``samples``
    (reference composites for a reference-aware model)."""
    from ultralytics import YOLO

    from pcb_pipeline.vision.train import evaluation_metrics

    with tempfile.TemporaryDirectory(prefix="pcb-eval-") as tmp:
        ds = yolo_format.write_yolo_dataset({"val": samples}, Path(tmp) / "dataset", input_mode=input_mode)
        data = yaml.safe_load(ds.data_yaml.read_text())
        data.setdefault("train", data["val"])  # ultralytics insists on a 'train' key even to validate
        ds.data_yaml.write_text(yaml.safe_dump(data, sort_keys=False))
        model = YOLO(str(weights), task="detect")
        val = model.val(data=str(ds.data_yaml), split="val", imgsz=imgsz, batch=batch, device="cpu", plots=False,
                        verbose=False, project=str(Path(tmp) / "runs"), name="val")
        metrics = evaluation_metrics(val)
    per_class = {k[len("ap50_"):]: {"ap50": v, "ap50_95": metrics[f"ap50_95_{k[len('ap50_'):]}"]}
                 for k, v in metrics.items() if k.startswith("ap50_") and not k.startswith("ap50_95_")}
    return {"map50": metrics["map50"], "map50_95": metrics["map50_95"], "precision": metrics["precision"],
            "recall": metrics["recall"], "per_class": per_class}


def ground_truth(sample: deeppcb.Sample) -> list[tuple]:
    return [(b.x1, b.y1, b.x2, b.y2, b.class_id) for b in deeppcb.read_labels(sample.label_file)]


def model_rows(detector, samples: list[deeppcb.Sample], conf: float = PROTOCOL_CONF) -> tuple[list[list[tuple]], dict]:
    """Prediction rows (x1, y1, x2, y2, score, class) per sample, through the batch pipeline (with the templates,
    which a reference-aware model reads); unreadable images count as images with no detections and are listed."""
    from pcb_pipeline.vision.batch import run_batch

    rows, errors = [], {}
    for name, _, dets, error in run_batch(detector, {s.image_id: s.test_image for s in samples}, conf=conf,
                                          templates={s.image_id: s.template_image for s in samples}):
        if error:
            errors[name] = error
        rows.append([(d.x1, d.y1, d.x2, d.y2, d.confidence, d.class_id) for d in dets])
    return rows, errors


def protocol_report(rows: list, gts: list) -> dict:
    """Deep PCB protocol figures: typed mAP / per-class AP / best F, and the class-agnostic AP and best F."""
    typed = evaluate_detections(rows, gts, DEEPPCB_IOU, class_agnostic=False, num_classes=len(CLASS_NAMES))
    agn = evaluate_detections(rows, gts, DEEPPCB_IOU, class_agnostic=True)
    t, a = typed.to_dict(class_names=CLASS_NAMES), agn.to_dict()
    return {
        "protocol": t["protocol"], "iou_threshold": DEEPPCB_IOU, "conf_floor": PROTOCOL_CONF,
        "n_images": t["n_images"], "n_gt": t["n_gt"], "n_predictions": t["n_predictions"],
        "map": t["map"], "ap": t["ap"], "best_f": t["best_f"], "best_f_point": t["best_f_point"],
        "class_agnostic": {"ap": a["ap"]["all"], "best_f": a["best_f"], "best_f_point": a["best_f_point"]},
    }


# ------------------------------------------------------------------------------------------------------ AOI


def _aoi_one(args) -> tuple[list[tuple], bool, str | None]:
    sample, params = args
    try:
        res = aoi_mod.inspect_sample(sample, params)
    except (aoi_mod.MisalignedError, FileNotFoundError, ValueError) as e:
        return [], False, f"{type(e).__name__}: {e}"
    return res.rows(), res.misaligned, None


def aoi_rows(samples: list[deeppcb.Sample], params: aoi_mod.AOIParams, workers: int | None = None) -> list:
    """``(rows, misaligned, error)`` per pair; pairs are inspected in ``workers`` processes (1: in this process)."""
    workers = workers or min(2, os.cpu_count() or 1)
    jobs = [(s, params) for s in samples]
    if workers <= 1 or len(jobs) < 8:
        return [_aoi_one(j) for j in jobs]
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")  # no fork of a process holding ONNX Runtime / torch threads
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as ex:
        return list(ex.map(_aoi_one, jobs, chunksize=4))


def aoi_report(samples: list[deeppcb.Sample], rows: list, misaligned: list[bool], gts: list,
               params: aoi_mod.AOIParams, target_recall: float) -> dict:
    """The figures ``core.aoi.score_aoi`` reports, from rows already computed (the rows are needed for the
    matched-recall comparison too; running the inspector once is half the time). A test holds the two equal."""
    agn = evaluate_detections(rows, gts, DEEPPCB_IOU, class_agnostic=True)
    out = {
        "params": params.to_dict(),
        "n_images": len(rows),
        "misaligned": [s.image_id for s, m in zip(samples, misaligned) if m],
        "operating": operating_point(rows, gts, params.threshold, DEEPPCB_IOU, class_agnostic=True).to_dict(),
        "matched_recall": matched_recall(rows, gts, target_recall, DEEPPCB_IOU, class_agnostic=True).to_dict(),
        "all_calls": operating_point(rows, gts, 0.0, DEEPPCB_IOU, class_agnostic=True).to_dict(),
        "class_agnostic": agn.to_dict(),
    }
    if params.typed:
        out["typed"] = evaluate_detections(rows, gts, DEEPPCB_IOU, class_agnostic=False,
                                           num_classes=len(CLASS_NAMES)).to_dict(class_names=CLASS_NAMES)
    return out


def _recall_key(r: float) -> str:
    return f"at_recall_{r:.2f}"


# ------------------------------------------------------------------------------------------------- report


def evaluate_split(weights: Path, split_file: Path, imgsz: int | None = None, batch: int = 8, *,
                   val_groups: bool = False, val_fraction: float = 0.2, aoi: bool = True,
                   aoi_params: aoi_mod.AOIParams | None = None, target_recalls=DEFAULT_TARGET_RECALLS,
                   aoi_workers: int | None = None, ultralytics_val: bool = True) -> dict:
    """The evaluation report (a JSON-ready dict); see the module docstring for its sections."""
    from pcb_pipeline.vision.detector import Detector

    started = time.perf_counter()
    weights, split_file = Path(weights), Path(split_file)
    samples = select_samples(split_file, val_groups, val_fraction)
    detector = Detector(weights, conf=PROTOCOL_CONF, imgsz=imgsz)
    report = _report_header(weights, split_file, samples, detector, val_groups, val_fraction)
    if ultralytics_val and detector.kind != VERIFIER_KIND:  # ultralytics' own val needs an ultralytics model
        report.update(_ultralytics_section(weights, samples, detector, batch))
    report["backend"], report["model_kind"] = detector.backend, detector.kind
    gts = [ground_truth(s) for s in samples]
    t_model = time.perf_counter()
    rows, errors = model_rows(detector, samples)
    model_seconds = time.perf_counter() - t_model
    report["unreadable_images"] = errors
    report["deeppcb_protocol"] = protocol_report(rows, gts)
    report["model_operating_points"], fcpb = _model_operating_points(rows, gts, report["deeppcb_protocol"])
    report.update(_aoi_sections(samples, rows, gts, aoi, aoi_params or aoi_mod.DEFAULT_PARAMS,
                                list(target_recalls or ()), aoi_workers))
    if report["aoi_baseline"]:
        fcpb["aoi_at_operating_point"] = report["aoi_baseline"]["operating"]["false_calls_per_board"]
    report["false_calls_per_board"] = fcpb
    report["ms_per_board"] = _ms_per_board(model_seconds, len(samples), report["aoi_baseline"])
    report["seconds"] = round(time.perf_counter() - started, 1)
    return report


def _report_header(weights: Path, split_file: Path, samples: list[deeppcb.Sample], detector, val_groups: bool,
                   val_fraction: float) -> dict:
    """What was evaluated: weights, split, images, the model's input size and mode, the subset and its groups."""
    return {"weights": str(weights), "split": str(split_file), "images": len(samples),
            "imgsz": detector.imgsz,  # the training size (torch) or the export's fixed size (ONNX Runtime)
            "input_mode": detector.input_mode,
            "subset": (f"group-split validation groups (val_fraction {val_fraction})" if val_groups
                       else "whole split file"),
            "groups": sorted({s.group for s in samples})}


def _ultralytics_section(weights: Path, samples: list[deeppcb.Sample], detector, batch: int) -> dict:
    """Ultralytics val figures; a reference-aware model is validated on the pairs that have a template (the others
    are listed by the protocol's unreadable images)."""
    usable = [s for s in samples if not detector.needs_template or s.template_image.is_file()]
    section: dict = {"ultralytics_val_images": len(usable)}
    if usable:
        section.update(ultralytics_metrics(weights, usable, detector.imgsz, batch, detector.input_mode))
    return section


def _model_operating_points(rows: list, gts: list, protocol: dict) -> tuple[dict, dict]:
    """(the model's class-agnostic operating points at conf 0.25 and at its best F, the false-calls-per-board
    section without the AOI's figure)."""
    def model_point(threshold: float) -> dict:
        return operating_point(rows, gts, threshold, DEEPPCB_IOU, class_agnostic=True).to_dict()

    best_f_thr = protocol["class_agnostic"]["best_f"]["threshold"]
    points = {"at_default_conf": model_point(0.25)}
    if best_f_thr is not None:
        points["at_best_f"] = model_point(best_f_thr)
    fcpb = {"class_agnostic": True, "iou_threshold": DEEPPCB_IOU, "default_conf": 0.25,
            "model_at_default_conf": points["at_default_conf"]["false_calls_per_board"],
            "model_at_best_f": points.get("at_best_f", {}).get("false_calls_per_board"),
            "model_best_f_threshold": best_f_thr, "aoi_at_operating_point": None}
    return points, fcpb


def _aoi_sections(samples: list[deeppcb.Sample], rows: list, gts: list, aoi: bool, params: aoi_mod.AOIParams,
                  recalls: list[float], aoi_workers: int | None) -> dict:
    """aoi_baseline and fpr_reduction over the pairs with a template the AOI could inspect (both None, with
    aoi_skipped saying why, when the AOI is not run)."""
    with_template = [i for i, s in enumerate(samples) if s.template_image.is_file()]
    if not aoi or not with_template:
        return {"aoi_baseline": None, "fpr_reduction": None, "aoi_skipped": (
            "disabled (--no-aoi)" if not aoi else "no template images (<id>_temp.jpg) next to the test images")}
    sub = [samples[i] for i in with_template]
    t = time.perf_counter()
    results = aoi_rows(sub, params, aoi_workers)
    aoi_seconds = time.perf_counter() - t
    ok = [k for k, r in enumerate(results) if r[2] is None]
    failed = {sub[k].image_id: results[k][2] for k in range(len(sub)) if results[k][2] is not None}
    sub = [sub[k] for k in ok]
    a_rows = [results[k][0] for k in ok]
    sub_gts = [gts[with_template[k]] for k in ok]
    base = aoi_report(sub, a_rows, [results[k][1] for k in ok], sub_gts, params, recalls[0] if recalls else 0.90)
    base.update({"failed": failed, "seconds": round(aoi_seconds, 1), "images_without_template":
                 len(samples) - len(with_template),
                 "params_source": "core.aoi.DEFAULT_PARAMS, tuned on the training groups of "
                                  "deeppcb.group_split(trainval) (bench/aoi_tune.py); held-out figures need "
                                  "--val-groups"})
    comparisons = _matched_recall_comparisons([rows[with_template[k]] for k in ok], a_rows, sub_gts,
                                              base["operating"]["recall"], recalls)
    headline = comparisons["at_aoi_operating_recall"]
    # the headline comparison inside aoi_baseline too: the dashboard reads it there (app.data)
    base.update({"target_recall": headline["target_recall"], "model": headline["model"],
                 "baseline": headline["baseline"], "fpr_reduction": headline["fpr_reduction"],
                 "false_calls_reduction": headline["false_calls_reduction"]})
    return {"aoi_baseline": base, "fpr_reduction": _fpr_reduction(comparisons, len(sub))}


def _matched_recall_comparisons(m_rows: list, a_rows: list, gts: list, aoi_recall: float,
                                recalls: list[float]) -> dict:
    """Model vs AOI at the AOI's own operating recall and at each target recall (class-agnostic)."""
    comparisons = {"at_aoi_operating_recall": compare_at_matched_recall(
        m_rows, a_rows, gts, aoi_recall, DEEPPCB_IOU, class_agnostic=True)}
    for r in recalls:
        comparisons[_recall_key(r)] = compare_at_matched_recall(m_rows, a_rows, gts, r, DEEPPCB_IOU,
                                                                class_agnostic=True)
    return comparisons


def _fpr_reduction(comparisons: dict, n_images: int) -> dict:
    """The fpr_reduction section: each matched-recall comparison with its headline figures first."""
    return {
        "class_agnostic": True, "iou_threshold": DEEPPCB_IOU, "n_images": n_images,
        "definition": "fpr = false calls / all calls; fpr_reduction = 1 - model fpr / AOI fpr at the same "
                      "recall (negative: the model makes more false calls)",
        **{k: {"target_recall": v["target_recall"],
               "model_false_calls_per_board": v["model"]["false_calls_per_board"],
               "aoi_false_calls_per_board": v["baseline"]["false_calls_per_board"],
               "model_fpr": v["model"]["fpr"], "aoi_fpr": v["baseline"]["fpr"],
               "model_reached": v["model"]["reached"], "aoi_reached": v["baseline"]["reached"],
               "model_boards_with_false_call": v["model"].get("boards_with_false_call"),
               "aoi_boards_with_false_call": v["baseline"].get("boards_with_false_call"),
               "fpr_reduction": v["fpr_reduction"], "false_calls_reduction": v["false_calls_reduction"],
               "model": v["model"], "aoi": v["baseline"]}
           for k, v in comparisons.items()},
    }


def _ms_per_board(model_seconds: float, n_images: int, aoi_baseline: dict | None) -> dict:
    """Wall time per board of this run, decoding included (the AOI runs in aoi_workers processes)."""
    return {"model": round(1000 * model_seconds / max(1, n_images), 1),
            "aoi": (round(1000 * aoi_baseline["seconds"] / max(1, aoi_baseline["n_images"]), 1)
                    if aoi_baseline else None)}
