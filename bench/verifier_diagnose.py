"""Diagnosis of the two-stage inspector (issue 13) and levers that need no retraining, on a saved verifier.

    .venv/bin/python bench/verifier_diagnose.py --model /tmp/v2/run2/verifier.pt \
        --out bench/verifier_runs/2026-12-04_diagnosis [--threads 1] [--cache /tmp/verifier_diag_cache]

1. Rebuilds the candidate crops of the training (800) and validation (200) pairs of ``group_split`` exactly as
   ``bench/verifier_bench.py`` does (same stage 1, same crops, same decoding; the baseline rows are checked against
   ``verifier.decode``), runs the saved network on both, and at the AOI's operating recall (the target
   ``compare_at_matched_recall`` picks) sorts every false call of the validation groups into
   (a) right place, wrong class, (b) localisation (IoU in (0.1, 0.33] with a true box of the same class),
   (c) duplicate of an already-matched true box, (d) background (IoU <= 0.1 with every true box), and every miss into
   no candidate / scored too low / wrong class / box off / suppressed by NMS / taken by a neighbour. Both views are
   given: class-agnostic (the matching ``compare_at_matched_recall`` uses, so (a) cannot occur there) and typed
   (the Deep PCB protocol, same threshold).
2. Levers without retraining: test-time augmentation over the 8 flips/transposes (softmax averaged, box from the
   identity pass or averaged too), NMS (IoU or IoMin = intersection over the smaller box, threshold, class-aware vs
   class-agnostic, optional score-weighted mean / union box merge of each cluster), and fusion with the tuned
   legacy AOI's calls (score = P(defect) * (1 + w * flag) with flag = a tuned-AOI call overlapping with IoU > t, or
   "soft": w * the AOI score of the best-overlapping AOI component). Every parameter is chosen on the TRAINING
   groups' crops (criterion below): each lever alone, then the three sequentially (TTA, NMS given TTA, fusion given
   both); validation numbers are computed once per chosen configuration.
   The saved model fits its own training crops almost perfectly, so the in-sample criterion saturates; with
   ``--crossfit-epochs N`` the same selection is repeated on out-of-fold outputs of the training groups (two proxy
   verifiers of ``--crossfit-width``, each trained N epochs on half of the training groups by board group and run
   on the other half): the only training this script does, a few minutes on a CPU.

Selection criterion on training: the lowest (false calls/board at the AOI's recall + false calls/board at recall
0.99), ties (within 1e-9) broken by the higher typed mAP, then by the earlier grid entry (the default comes first).

Crops, AOI rows and network outputs are cached under ``--cache`` (outside the repository).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import pickle
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from pcb_pipeline.core import aoi, deeppcb  # noqa: E402
from pcb_pipeline.core import candidates as cands  # noqa: E402
from pcb_pipeline.core.classes import CLASS_NAMES  # noqa: E402
from pcb_pipeline.core.detection_metrics import (DEEPPCB_IOU, box_iou, compare_at_matched_recall,  # noqa: E402
                                                 evaluate_detections, match_detections)
from pcb_pipeline.vision import verifier as vf  # noqa: E402
from pcb_pipeline.vision.onnx_runtime import nms  # noqa: E402

# The decode this diagnosis started from: IoU 0.5, class-agnostic NMS (production now merges by class, NMS_OVERLAP).
BASELINE_NMS_IOU = 0.5

BG = cands.BACKGROUND
SIZE = (640, 640)
# the 8 symmetries as (hflip, vflip, transpose), applied in that order as in verifier._augment; identity first
SYMS = [(h, v, t) for t in (0, 1) for v in (0, 1) for h in (0, 1)]
LOC_IOU = 0.1  # lower edge of the "localisation" band (IoU in (0.1, 0.33])


# ------------------------------------------------------------------------------------------------ data

def _boards(samples):
    from verifier_bench import _one  # the same composite + ground truth as the bench

    return [_one(s) for s in samples]


def load_data(deeppcb_root: Path, cache: Path, log) -> dict:
    """Crop sets, ground truths and tuned-AOI rows of both sides of group_split (single process), cached."""
    f = cache / "data.pkl"
    if f.exists():
        log(f"data from cache {f}")
        return pickle.loads(f.read_bytes())
    train_s, val_s = deeppcb.group_split(deeppcb.read_split(deeppcb.split_file_path(deeppcb_root)))
    out = {"train_ids": [s.image_id for s in train_s], "val_ids": [s.image_id for s in val_s]}
    for name, samples in (("train", train_s), ("val", val_s)):
        t = time.perf_counter()
        boards = _boards(samples)
        cs = vf.build_crop_set(boards, log=lambda s: None)  # one process: board index = position in `samples`
        t_crops = time.perf_counter() - t
        t = time.perf_counter()
        aoi_rows = aoi.predict_aoi([aoi.LoadedPair(s, c[..., 0], c[..., 1], g) for s, (c, g) in zip(samples, boards)])
        out[name] = {"crops": cs, "gts": [g for _, g in boards], "aoi_rows": aoi_rows,
                     "seconds_crops": t_crops,
                     "seconds_aoi": time.perf_counter() - t}
        log(f"{name}: {len(samples)} boards, {len(cs.labels)} crops ({(cs.labels != BG).mean():.2f} positive), "
            f"crops {t_crops:.0f} s, AOI {out[name]['seconds_aoi']:.0f} s")
    cache.mkdir(parents=True, exist_ok=True)
    f.write_bytes(pickle.dumps(out, protocol=4))
    return out


# ------------------------------------------------------------------------------------------------ network

def _sym_crops(x, h, v, t):
    if h:
        x = x.flip(3)
    if v:
        x = x.flip(2)
    if t:
        x = x.transpose(2, 3)
    return x


def _sym_box_fwd(b, h, v, t):
    """Window box (N, 4) under the symmetry (as verifier._augment moves the targets)."""
    if h:
        b = np.stack([1 - b[:, 2], b[:, 1], 1 - b[:, 0], b[:, 3]], 1)
    if v:
        b = np.stack([b[:, 0], 1 - b[:, 3], b[:, 2], 1 - b[:, 1]], 1)
    if t:
        b = b[:, [1, 0, 3, 2]]
    return b


def _sym_box_inv(b, h, v, t):
    """A box predicted on the transformed crop, back in the original window's coordinates."""
    if t:
        b = b[:, [1, 0, 3, 2]]
    if v:
        b = np.stack([b[:, 0], 1 - b[:, 3], b[:, 2], 1 - b[:, 1]], 1)
    if h:
        b = np.stack([1 - b[:, 2], b[:, 1], 1 - b[:, 0], b[:, 3]], 1)
    return b


def predict_all_syms(net, cs: vf.CropSet, batch: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """Softmax (N, 8, 7) and boxes mapped back to the original window (N, 8, 4) for the 8 symmetries."""
    import torch

    probs = np.zeros((len(cs.labels), len(SYMS), BG + 1), np.float32)
    boxes = np.zeros((len(cs.labels), len(SYMS), 4), np.float32)
    net.eval()
    with torch.no_grad():
        for i in range(0, len(cs.labels), batch):
            x = torch.from_numpy(cs.crops[i:i + batch]).float()
            s = torch.from_numpy(cs.scales[i:i + batch])[:, None]
            for k, sym in enumerate(SYMS):
                logits, bx = net(_sym_crops(x, *sym), s)
                probs[i:i + batch, k] = torch.softmax(logits, 1).numpy()
                boxes[i:i + batch, k] = _sym_box_inv(bx.numpy(), *sym)
    return probs, boxes


def model_outputs(model: Path, data: dict, cache: Path, threads: int, log) -> dict:
    import torch

    st = model.stat()
    key = hashlib.sha1(f"{model.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:12]
    f = cache / f"outputs_{key}.pkl"
    if f.exists():
        log(f"network outputs from cache {f}")
        return pickle.loads(f.read_bytes())
    torch.set_num_threads(threads)
    net, meta = vf.load_checkpoint(model)
    out = {"meta": meta}
    for name in ("train", "val"):
        cs = data[name]["crops"]
        t = time.perf_counter()
        p, b = predict_all_syms(net, cs)
        out[name] = {"probs": p, "boxes": b, "seconds": time.perf_counter() - t}
        # the identity pass must be what the bench computes
        p0, b0 = vf.predict_crops(net, cs.crops[:256], cs.scales[:256], sure=0.0)
        assert np.allclose(p0, p[:256, 0], atol=1e-5) and np.allclose(b0, b[:256, 0], atol=1e-5)
        log(f"{name}: 8 symmetries x {len(cs.labels)} crops in {out[name]['seconds']:.0f} s ({threads} thread(s))")
    f.write_bytes(pickle.dumps(out, protocol=4))
    return out


def crossfit_outputs(deeppcb_root: Path, data: dict, cache: Path, width: int, epochs: int, threads: int, log) -> dict:
    """Out-of-fold network outputs on the training groups: the training groups are split in two by board group
    (``group_split(train, 0.5)``), a proxy verifier is trained on each half and run on the other half."""
    import torch

    f = cache / f"crossfit_w{width}_e{epochs}.pkl"
    if f.exists():
        log(f"out-of-fold outputs from cache {f}")
        return pickle.loads(f.read_bytes())
    torch.set_num_threads(threads)
    train_s, _ = deeppcb.group_split(deeppcb.read_split(deeppcb.split_file_path(deeppcb_root)))
    assert [s.image_id for s in train_s] == data["train_ids"]
    _, half_b = deeppcb.group_split(train_s, 0.5)
    in_b = {s.image_id for s in half_b}
    cs = data["train"]["crops"]
    crop_fold = np.array([1 if i in in_b else 0 for i in data["train_ids"]], dtype=np.int64)[cs.board]
    probs = np.zeros((len(cs.labels), len(SYMS), BG + 1), np.float32)
    boxes = np.zeros((len(cs.labels), len(SYMS), 4), np.float32)
    secs = []
    for k in (0, 1):
        fit = vf.CropSet(**{n: getattr(cs, n)[crop_fold != k] for n in vf.CropSet.__dataclass_fields__})
        held = vf.CropSet(**{n: getattr(cs, n)[crop_fold == k] for n in vf.CropSet.__dataclass_fields__})
        t = time.perf_counter()
        net = vf.train_verifier(fit, vf.VerifierTrainConfig(epochs=epochs, width=width, threads=threads))
        secs.append(time.perf_counter() - t)
        p, b = predict_all_syms(net, held)
        probs[crop_fold == k], boxes[crop_fold == k] = p, b
        acc = float((p[:, 0].argmax(1) == held.labels).mean())
        log(f"crossfit fold {k}: trained on {len(fit.labels)} crops in {secs[-1]:.0f} s, held-out accuracy {acc:.4f} "
            f"on {len(held.labels)} crops")
    out = {"probs": probs, "boxes": boxes, "seconds": secs, "fold_sizes": [int((crop_fold == k).sum()) for k in (0, 1)]}
    f.write_bytes(pickle.dumps(out, protocol=4))
    return out


def tta_view(outputs: dict, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """(probs, boxes) of one decoding mode: 'none' (identity pass), 'probs' (softmax averaged over the 8
    symmetries, identity box), 'probs+box' (both averaged)."""
    p, b = outputs["probs"], outputs["boxes"]
    if mode == "none":
        return p[:, 0], b[:, 0]
    if mode == "probs":
        return p.mean(1), b[:, 0]
    if mode == "probs+box":
        return p.mean(1), b.mean(1)
    raise ValueError(mode)


# ------------------------------------------------------------------------------------------------ decoding

def aoi_called(aoi_rows, threshold: float = aoi.DEFAULT_PARAMS.threshold):
    """The tuned AOI's calls (score >= its operating threshold chosen on the training groups) per board."""
    return [np.asarray([r for r in rows if r[4] >= threshold], np.float64).reshape(-1, 6) for rows in aoi_rows]


def decode_board(cs: vf.CropSet, sel: np.ndarray, probs, rel, nms_iou: float | None = BASELINE_NMS_IOU,
                 class_aware: bool = False, fusion: dict | None = None, aoi_board=None, aoi_all_board=None,
                 conf: float = 0.001, metric: str = "iou", merge: bool | str = False):
    """verifier.decode with levers. Returns (rows (M, 6) float32, crop index per row, pre-NMS (boxes, score, idx))."""
    if len(sel) == 0:
        return np.zeros((0, 6), np.float32), np.zeros(0, np.int64), (np.zeros((0, 4)), np.zeros(0), sel)
    score = 1.0 - probs[sel, BG]
    cls = probs[sel, :BG].argmax(1)
    boxes = np.array([cands.from_window(r, w) for r, w in zip(rel[sel], cs.windows[sel])], dtype=np.float32)
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, SIZE[1])
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, SIZE[0])
    keep = score >= conf
    idx, boxes, score, cls = sel[keep], boxes[keep], score[keep], cls[keep]
    if fusion and fusion["w"] > 0 and len(boxes):
        if fusion["mode"] == "flag":  # the tuned AOI calls an overlapping box
            ref = aoi_board
            iou = box_iou(boxes, ref) if len(ref) else np.zeros((len(boxes), 0))
            bonus = ((iou > fusion["iou"]).any(1).astype(np.float32) if iou.shape[1]
                     else np.zeros(len(boxes), np.float32))
        elif fusion["mode"] == "soft":  # the AOI's own score (area evidence) of the best-overlapping component
            ref = aoi_all_board
            iou = box_iou(boxes, ref) if len(ref) else np.zeros((len(boxes), 0))
            if iou.shape[1]:
                s = np.where(iou > fusion["iou"], ref[None, :, 4], 0.0)
                bonus = s.max(1).astype(np.float32)
            else:
                bonus = np.zeros(len(boxes), np.float32)
        else:
            raise ValueError(fusion["mode"])
        score = (score * (1.0 + fusion["w"] * bonus)).astype(np.float32)
    pre = (boxes, score, idx)
    if nms_iou is None:
        order = np.argsort(-score, kind="stable")
    elif metric == "iou" and not merge:  # the project's NMS (what verifier.decode runs)
        if class_aware:
            kept = np.concatenate([np.where(cls == c)[0][nms(boxes[cls == c], score[cls == c], nms_iou)]
                                   for c in np.unique(cls)])
            order = kept[np.argsort(-score[kept], kind="stable")]
        else:
            order = nms(boxes, score, nms_iou)
    else:
        groups = np.unique(cls) if class_aware else [None]
        kept, out_boxes = [], boxes.copy()
        for c in groups:
            m = np.where(cls == c)[0] if c is not None else np.arange(len(boxes))
            for k, members in suppress(boxes[m], score[m], nms_iou, metric):
                kept.append(m[k])
                cl = m[np.r_[k, members]]
                if merge == "mean" or merge is True:  # weighted box fusion: score-weighted mean of the cluster
                    out_boxes[m[k]] = (boxes[cl] * score[cl, None]).sum(0) / score[cl].sum()
                elif merge == "union":  # the box around the whole cluster (fragments of one long defect)
                    out_boxes[m[k]] = np.r_[boxes[cl, :2].min(0), boxes[cl, 2:].max(0)]
        kept = np.asarray(kept, dtype=np.int64)
        order = kept[np.argsort(-score[kept], kind="stable")]
        boxes = out_boxes
    rows = np.column_stack([boxes[order], score[order], cls[order]]).astype(np.float32)
    return rows, idx[order], pre


def suppress(boxes: np.ndarray, score: np.ndarray, thr: float, metric: str = "iou"):
    """Greedy NMS (torchvision semantics: suppressed when overlap > thr) returning (kept, suppressed members) in
    score order. metric 'iou', or 'iomin' (intersection over the smaller box: a fragment inside a bigger call)."""
    boxes = boxes.astype(np.float64)
    x1, y1, x2, y2 = boxes.T
    areas = (x2 - x1) * (y2 - y1)
    order = np.argsort(-score, kind="stable")
    out = []
    with np.errstate(divide="ignore", invalid="ignore"):
        while order.size:
            i, rest = order[0], order[1:]
            w = np.maximum(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), 0.0)
            h = np.maximum(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), 0.0)
            inter = w * h
            if metric == "iou":
                ov = inter / (areas[i] + areas[rest] - inter)
            else:
                ov = inter / np.minimum(areas[i], areas[rest])
            hit = ov > thr
            out.append((int(i), rest[hit]))
            order = rest[~hit]
    return out


def decode_all(side: dict, probs, rel, cfg: dict):
    cs = side["crops"]
    n = len(side["gts"])
    called = side.setdefault("_aoi_called", aoi_called(side["aoi_rows"]))
    allr = side.setdefault("_aoi_all", [np.asarray(r, np.float64).reshape(-1, 6) for r in side["aoi_rows"]])
    by_board = side.setdefault("_by_board", [np.where(cs.board == i)[0] for i in range(n)])
    rows, idx, pre = [], [], []
    for i in range(n):
        r, k, p = decode_board(cs, by_board[i], probs, rel, cfg.get("nms_iou", BASELINE_NMS_IOU),
                               cfg.get("class_aware", False), cfg.get("fusion"), called[i], allr[i],
                               metric=cfg.get("nms_metric", "iou"), merge=cfg.get("merge", False))
        rows.append(r)
        idx.append(k)
        pre.append(p)
    return rows, idx, pre


# ------------------------------------------------------------------------------------------------ metrics

def metrics(rows, side: dict) -> dict:
    gts, aoi_rows = side["gts"], side["aoi_rows"]
    typed = evaluate_detections(rows, gts, num_classes=len(CLASS_NAMES))
    at = compare_at_matched_recall(rows, aoi_rows, gts)
    at99 = compare_at_matched_recall(rows, aoi_rows, gts, target_recall=0.99)
    return {
        "typed_map": typed.map, "per_class_ap": {CLASS_NAMES[c]: v for c, v in typed.ap.items()},
        "typed_best_f": typed.best_f,
        "target_recall": at["target_recall"],
        "fc_per_board_at_aoi_recall": at["model"]["false_calls_per_board"],
        "boards_with_fc_at_aoi_recall": at["model"]["boards_with_false_call"],
        "threshold_at_aoi_recall": at["model"]["threshold"],
        "fpr_reduction_at_aoi_recall": at["fpr_reduction"],
        "aoi_fc_per_board_at_aoi_recall": at["baseline"]["false_calls_per_board"],
        "fc_per_board_at_0.99": at99["model"]["false_calls_per_board"],
        "reached_0.99": at99["model"]["reached"], "recall_at_0.99_point": at99["model"]["recall"],
        "fpr_reduction_at_0.99": at99["fpr_reduction"],
        "aoi_fc_per_board_at_0.99": at99["baseline"]["false_calls_per_board"],
        "aoi_reached_0.99": at99["baseline"]["reached"],
        "at_aoi_recall": at, "at_0.99": at99,
    }


def criterion(m: dict) -> float:
    return m["fc_per_board_at_aoi_recall"] + m["fc_per_board_at_0.99"]


def short(m: dict) -> str:
    f = m["typed_best_f"]
    return (f"mAP {m['typed_map']:.4f}  F {f['f']:.4f} ({f['precision']:.3f}/{f['recall']:.3f})  "
            f"fc@{m['target_recall']:.3f} {m['fc_per_board_at_aoi_recall']:.3f} "
            f"(boards {m['boards_with_fc_at_aoi_recall']:.3f})  fc@0.99 {m['fc_per_board_at_0.99']:.3f}"
            f"{'' if m['reached_0.99'] else ' (not reached)'}")


def choose(grid: list[tuple[str, dict]], side: dict, views: dict, log) -> tuple[str, dict, list]:
    """Evaluate every (name, cfg) of the grid on the TRAINING side, return the chosen one and the table."""
    table = []
    for name, cfg in grid:
        p, b = views[cfg.get("tta", "none")]
        m = metrics(decode_all(side, p, b, cfg)[0], side)
        table.append({"name": name, "cfg": cfg, "criterion": criterion(m), **{k: m[k] for k in (
            "typed_map", "typed_best_f", "fc_per_board_at_aoi_recall", "fc_per_board_at_0.99", "reached_0.99",
            "target_recall")}})
        log(f"  train {name:34s} {short(m)}")
    best = min(range(len(table)), key=lambda i: (round(table[i]["criterion"], 9), -table[i]["typed_map"], i))
    return table[best]["name"], table[best]["cfg"], table


# ------------------------------------------------------------------------------------------------ diagnosis

def _greedy(p: np.ndarray, g: np.ndarray, class_agnostic: bool):
    """match_detections for one board, also returning which true box each prediction took (-1: none)."""
    took = np.full(len(p), -1, dtype=np.int64)
    if len(p) and len(g):
        pc = np.zeros(len(p), np.int64) if class_agnostic else p[:, 5].astype(np.int64)
        gc = np.zeros(len(g), np.int64) if class_agnostic else g[:, 4].astype(np.int64)
        iou = box_iou(p[:, :4], g[:, :4])
        iou[pc[:, None] != gc[None, :]] = -1.0
        taken = np.zeros(len(g), dtype=bool)
        for j in np.argsort(-p[:, 4], kind="stable"):
            cand = np.where(taken, -1.0, iou[j])
            k = int(np.argmax(cand))
            if cand[k] > DEEPPCB_IOU:
                taken[k] = True
                took[j] = k
    return took


def diagnose(rows, idx, pre, side: dict, probs, threshold: float) -> dict:
    """False calls and misses at ``threshold`` (calls: score >= threshold), class-agnostic and typed views."""
    cs, gts = side["crops"], side["gts"]
    n_boards = len(gts)
    called = side["_aoi_called"]
    out = {}
    for view, agnostic in (("class_agnostic", True), ("typed", False)):
        fc = {"a_wrong_class": [], "b_localisation": [], "c_duplicate": [], "d_background": [],
              "e_near_other_class": []}
        miss = {"no_candidate": [], "scored_too_low": [], "wrong_class": [], "box_off": [], "suppressed_by_nms": [],
                "taken_by_neighbour": []}
        tps_all = []
        for i in range(n_boards):
            p = np.asarray(rows[i], np.float64).reshape(-1, 6)
            g = np.asarray(gts[i], np.float64).reshape(-1, 5)
            took = _greedy(p, g, agnostic)
            tps_all.append(took >= 0)
            on = p[:, 4] >= threshold
            iou = box_iou(p[:, :4], g[:, :4]) if len(p) and len(g) else np.zeros((len(p), len(g)))
            same = (p[:, 5][:, None] == g[:, 4][None, :]) if len(p) and len(g) else np.zeros_like(iou, bool)
            if agnostic:
                same = np.ones_like(iou, bool)
            taken_on = set(took[on & (took >= 0)].tolist())
            for j in np.where(on & (took < 0))[0]:
                ci = int(idx[i][j])
                aoi_flag = bool(len(called[i]) and (box_iou(p[j:j + 1, :4], called[i]) > LOC_IOU).any())
                rec = {"board": i, "row": int(j), "crop": ci, "score": float(p[j, 4]), "cls": int(p[j, 5]),
                       "crop_label": int(cs.labels[ci]), "max_iou": float(iou[j].max()) if len(g) else 0.0,
                       "aoi_flags": aoi_flag, "p_bg": float(probs[ci, BG]),
                       "cand_side": float(max(cs.candidate_boxes[ci, 2] - cs.candidate_boxes[ci, 0],
                                              cs.candidate_boxes[ci, 3] - cs.candidate_boxes[ci, 1]))}
                hi_same = (iou[j] > DEEPPCB_IOU) & same[j]
                if hi_same.any():  # a true box it would match, already taken by a higher-scored call
                    fc["c_duplicate"].append(rec)
                elif ((iou[j] > DEEPPCB_IOU) & ~same[j]).any():
                    fc["a_wrong_class"].append(rec)
                elif ((iou[j] > LOC_IOU) & same[j]).any():
                    near = np.where((iou[j] > LOC_IOU) & same[j])[0]
                    rec["gt_found_by_other_call"] = bool(any(int(k) in taken_on for k in near))
                    fc["b_localisation"].append(rec)
                elif (iou[j] > LOC_IOU).any():
                    fc["e_near_other_class"].append(rec)
                else:
                    fc["d_background"].append(rec)
            # misses: true boxes not taken by a call at this threshold
            pre_boxes, pre_score, _ = pre[i]
            sel = np.where(cs.board == i)[0]
            cand_iou = box_iou(g[:, :4], cs.candidate_boxes[sel]) if len(sel) and len(g) else np.zeros((len(g), 0))
            took_any = set(took[took >= 0].tolist())
            for k in range(len(g)):
                if k in taken_on:
                    continue
                rec = {"board": i, "gt": int(k), "cls": int(g[k, 4]),
                       "side": float(max(g[k, 2] - g[k, 0], g[k, 3] - g[k, 1])),
                       "tuned_aoi_calls_it": bool(len(called[i]) and
                                                  (box_iou(g[k:k + 1, :4], called[i]) > DEEPPCB_IOU).any())}
                col_on = (iou[:, k] > DEEPPCB_IOU) & on if len(p) else np.zeros(0, bool)
                if cand_iou.shape[1] == 0 or cand_iou[k].max() <= cands.MATCH_IOU:
                    miss["no_candidate"].append(rec)
                elif k in took_any:  # matched, but only by a call below the threshold
                    j = int(np.where(took == k)[0][0])
                    rec["score"] = float(p[j, 4])
                    miss["scored_too_low"].append(rec)
                elif not agnostic and col_on.any() and (p[col_on, 5] != g[k, 4]).any():
                    j = int(np.where(col_on)[0][0])
                    rec["pred_cls"] = int(p[j, 5])
                    miss["wrong_class"].append(rec)
                elif len(p) and ((iou[:, k] > DEEPPCB_IOU) & same[:, k]).any():
                    miss["taken_by_neighbour"].append(rec)  # a box that would match it went to another true box
                elif len(pre_boxes) and (box_iou(pre_boxes, g[k:k + 1, :4])[:, 0] > DEEPPCB_IOU).any():
                    miss["suppressed_by_nms"].append(rec)
                else:
                    miss["box_off"].append(rec)
        # the same counts as the project's matching
        m = match_detections(rows, gts, class_agnostic=agnostic)
        assert np.array_equal(m.tp, np.concatenate(tps_all)), "diagnosis matching disagrees with match_detections"
        keep = m.scores >= threshold
        fp, tp = int((~m.tp[keep]).sum()), int(m.tp[keep].sum())
        assert fp == sum(len(v) for v in fc.values()), (fp, {k: len(v) for k, v in fc.items()})
        n_gt = sum(m.n_gt.values())
        assert n_gt - tp == sum(len(v) for v in miss.values())
        out[view] = {
            "threshold": threshold, "tp": tp, "fp": fp, "fn": n_gt - tp, "n_boards": n_boards,
            "false_calls": {k: len(v) for k, v in fc.items()},
            "false_calls_per_board": {k: len(v) / n_boards for k, v in fc.items()},
            "false_calls_boards": {k: len({r["board"] for r in v}) for k, v in fc.items()},
            "false_calls_by_predicted_class": {k: {CLASS_NAMES[c]: sum(r["cls"] == c for r in v)
                                                   for c in range(len(CLASS_NAMES))} for k, v in fc.items() if v},
            "localisation_with_true_box_found_by_another_call": sum(r.get("gt_found_by_other_call", False)
                                                                    for r in fc["b_localisation"]),
            "false_calls_tuned_aoi_also_calls": sum(r["aoi_flags"] for v in fc.values() for r in v),
            "misses": {k: len(v) for k, v in miss.items()},
            "misses_by_true_class": {k: {CLASS_NAMES[c]: sum(r["cls"] == c for r in v)
                                         for c in range(len(CLASS_NAMES))} for k, v in miss.items() if v},
            "misses_tuned_aoi_calls": sum(r["tuned_aoi_calls_it"] for v in miss.values() for r in v),
            "false_call_boards_total": len({r["board"] for v in fc.values() for r in v}),
            "misses_per_board": {k: len(v) / n_boards for k, v in miss.items()},
            "false_call_records": fc, "miss_records": miss,
        }
    return out


def montage(records: list[dict], cs: vf.CropSet, rows, gts, path: Path, limit: int = 40) -> None:
    """Each false call: test | template | difference of its crop (2x), true boxes green, the call red."""
    import cv2

    tiles = []
    for r in records[:limit]:
        ci, i = r["crop"], r["board"]
        w = cs.windows[ci]
        s = 2 * cands.CROP / (w[2] - w[0])
        panels = []
        for ch in range(3):
            im = cv2.resize(cs.crops[ci, ch], (2 * cands.CROP, 2 * cands.CROP), interpolation=cv2.INTER_NEAREST)
            im = cv2.cvtColor(im, cv2.COLOR_GRAY2BGR)
            for g in gts[i]:
                cv2.rectangle(im, (int((g[0] - w[0]) * s), int((g[1] - w[1]) * s)),
                              (int((g[2] - w[0]) * s), int((g[3] - w[1]) * s)), (0, 180, 0), 1)
            b = rows[i][r["row"]]
            cv2.rectangle(im, (int((b[0] - w[0]) * s), int((b[1] - w[1]) * s)),
                          (int((b[2] - w[0]) * s), int((b[3] - w[1]) * s)), (0, 0, 255), 1)
            panels.append(im)
        tile = np.concatenate(panels, 1)
        tile = np.concatenate([np.full((14, tile.shape[1], 3), 255, np.uint8), tile], 0)
        txt = (f"b{i} {CLASS_NAMES[r['cls']]} s={r['score']:.3f} iou={r['max_iou']:.2f} "
               f"aoi={'Y' if r['aoi_flags'] else 'n'}")
        cv2.putText(tile, txt, (2, 11), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (0, 0, 0), 1)
        tiles.append(np.pad(tile, ((2, 2), (2, 2), (0, 0)), constant_values=128))
    if not tiles:
        return
    cols = 2
    while len(tiles) % cols:
        tiles.append(np.full_like(tiles[0], 255))
    grid = np.concatenate([np.concatenate(tiles[k:k + cols], 1) for k in range(0, len(tiles), cols)], 0)
    cv2.imwrite(str(path), grid)


# ------------------------------------------------------------------------------------------------ main

def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--deeppcb", type=Path, default=ROOT.parent / "shared" / "deeppcb")
    p.add_argument("--model", type=Path, default=Path("/tmp/v2/run2/verifier.pt"))
    p.add_argument("--out", type=Path,
                   default=ROOT / "bench" / "verifier_runs" / f"{time.strftime('%Y-%m-%d')}_diagnosis")
    p.add_argument("--cache", type=Path, default=Path("/tmp/verifier_diag_cache"))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--tag", default="", help="suffix of the output files (e.g. w16)")
    p.add_argument("--crossfit-epochs", type=int, default=0,
                   help="also choose the levers on out-of-fold outputs of the training groups: two proxy verifiers, "
                        "each trained on half of the training groups for this many epochs (0: skip)")
    p.add_argument("--crossfit-width", type=int, default=16)
    a = p.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    a.cache.mkdir(parents=True, exist_ok=True)
    tag = f"_{a.tag}" if a.tag else ""
    lines: list[str] = []

    def log(s: str) -> None:
        print(s, flush=True)
        lines.append(s)

    t_all = time.perf_counter()
    data = load_data(a.deeppcb, a.cache, log)
    outs = model_outputs(a.model, data, a.cache, a.threads, log)
    tr, va = data["train"], data["val"]
    views = {s: {m: tta_view(outs[s], m) for m in ("none", "probs", "probs+box")} for s in ("train", "val")}
    t_eval = time.perf_counter()

    # ---- baseline, checked against the bench's decoding
    base_cfg = {"tta": "none", "nms_iou": BASELINE_NMS_IOU, "class_aware": False, "fusion": None}
    res = {}
    for s, side in (("train", tr), ("val", va)):
        pr, bx = views[s]["none"]
        rows, idx, pre = decode_all(side, pr, bx, base_cfg)
        cs = side["crops"]
        for i in range(0, len(rows), 37):  # spot-check against verifier.decode (what verifier_bench scores)
            sel = np.where(cs.board == i)[0]
            found = [cands.Candidate(tuple(cs.candidate_boxes[j]), tuple(cs.windows[j])) for j in sel]
            ref = vf.decode(found, pr[sel], bx[sel], 0.001, SIZE)
            assert np.array_equal(ref, rows[i]), f"decoding differs from verifier.decode on board {i}"
        res[s] = {"rows": rows, "idx": idx, "pre": pre, "metrics": metrics(rows, side)}
        log(f"baseline {s}: {short(res[s]['metrics'])}")

    # ---- diagnosis of the baseline on validation at the AOI's operating recall
    thr = res["val"]["metrics"]["threshold_at_aoi_recall"]
    diag = diagnose(res["val"]["rows"], res["val"]["idx"], res["val"]["pre"], va, views["val"]["none"][0], thr)
    thr99 = res["val"]["metrics"]["at_0.99"]["model"]["threshold"]
    diag99 = diagnose(res["val"]["rows"], res["val"]["idx"], res["val"]["pre"], va, views["val"]["none"][0], thr99)
    for name, d in (("AOI recall", diag), ("recall 0.99", diag99)):
        for view in ("class_agnostic", "typed"):
            v = d[view]
            log(f"diagnosis at {name} (thr {v['threshold']:.4f}), {view}: tp {v['tp']} fp {v['fp']} fn {v['fn']}; "
                f"false calls {v['false_calls']} (localisation with the true box found by another call: "
                f"{v['localisation_with_true_box_found_by_another_call']}; tuned AOI also calls: "
                f"{v['false_calls_tuned_aoi_also_calls']}; boards {v['false_call_boards_total']}); "
                f"misses {v['misses']} (tuned AOI calls {v['misses_tuned_aoi_calls']} of them)")
    for view in ("class_agnostic", "typed"):
        for k, recs in diag[view]["false_call_records"].items():
            if recs:
                montage(recs, va["crops"], res["val"]["rows"], va["gts"], a.out / f"fc_{view}_{k}{tag}.png")

    # ---- levers: every parameter chosen on the training groups
    def cfg(**kw):
        return {**base_cfg, **kw}

    def nms_grid(base: dict) -> list[tuple[str, dict]]:
        g = [("nms iou>0.5 agnostic (default)", dict(base))]
        for merge in (False, "mean", "union"):
            for aw in (False, True):
                for metric, ts in (("iou", (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)), ("iomin", (0.2, 0.3, 0.5, 0.7, 0.9))):
                    for t in ts:
                        if (metric, t, aw, merge) == ("iou", 0.5, False, False):
                            continue
                        g.append((f"nms {metric}>{t} {'aware' if aw else 'agnostic'}"
                                  + (f" + {merge} merge" if merge else ""),
                                  {**base, "nms_iou": t, "class_aware": aw, "nms_metric": metric, "merge": merge}))
        return g

    def fusion_grid(base: dict) -> list[tuple[str, dict]]:
        g = [("fusion none", dict(base))]
        for mode in ("flag", "soft"):
            for iou in (0.1, 0.33):
                for w in (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0, 5.0):
                    g.append((f"fusion {mode} iou>{iou} w={w}", {**base, "fusion": {"mode": mode, "w": w, "iou": iou}}))
        return g

    # the home-made NMS must equal the project's on the plain IoU setting
    pr, bx = views["train"]["none"]
    for i in range(0, len(tr["gts"]), 53):
        sel = tr["_by_board"][i]
        a_ = decode_board(tr["crops"], sel, pr, bx, 0.5)[0]
        b_ = decode_board(tr["crops"], sel, pr, bx, 0.5, metric="iou", merge=False)[0]
        sup = suppress(*decode_board(tr["crops"], sel, pr, bx, None)[2][:2], 0.5)
        assert np.array_equal(a_, b_) and len(sup) == len(a_)

    def select(sel_views: dict, label: str) -> dict:
        """Every lever alone, then the three sequentially, each chosen on the training groups' crops."""
        ch = {}
        log(f"[{label}] lever TTA alone:")
        ch["tta"] = choose([(f"tta={m}", cfg(tta=m)) for m in ("none", "probs", "probs+box")], tr, sel_views, log)
        log(f"[{label}] lever NMS alone:")
        ch["nms"] = choose(nms_grid(cfg()), tr, sel_views, log)
        log(f"[{label}] lever AOI fusion alone:")
        ch["fusion"] = choose(fusion_grid(cfg()), tr, sel_views, log)
        log(f"[{label}] combined, step 2: NMS given the chosen TTA:")
        n2, c_tn, t2 = choose(nms_grid(ch["tta"][1]), tr, sel_views, log)
        log(f"[{label}] combined, step 3: fusion given the chosen TTA and NMS:")
        n3, c_tnf, t3 = choose(fusion_grid(c_tn), tr, sel_views, log)
        ch["combined"] = (f"{ch['tta'][0]} + {n2} + {n3}", c_tnf, t2 + t3)
        return ch

    selections = {"train": select(views["train"], "chosen on train, w32 model in-sample")}
    if a.crossfit_epochs:
        oof = crossfit_outputs(a.deeppcb, data, a.cache, a.crossfit_width, a.crossfit_epochs, a.threads, log)
        views["oof"] = {m: tta_view(oof, m) for m in ("none", "probs", "probs+box")}
        m_oof = metrics(decode_all(tr, *views["oof"]["none"], base_cfg)[0], tr)
        log(f"baseline train, out-of-fold proxy (w{a.crossfit_width}, {a.crossfit_epochs} ep): {short(m_oof)}")
        res["train_oof"] = {"metrics": m_oof}
        selections["oof"] = select(views["oof"], "chosen on train, out-of-fold proxy")
    chosen = {f"{k}@{sname}": v for sname, sel in selections.items() for k, v in sel.items()}
    tables = {k: v[2] for k, v in chosen.items()}

    # ---- validation, once per chosen configuration
    val_results = {"baseline": {"cfg": base_cfg, "metrics": res["val"]["metrics"]}}
    log("validation (once per configuration chosen on train):")
    log(f"  val {'baseline':34s} {short(res['val']['metrics'])}")
    for lever, (name, c, _) in chosen.items():
        key = json.dumps(c, sort_keys=True)
        done = next((v for v in val_results.values() if json.dumps(v["cfg"], sort_keys=True) == key), None)
        if done is None:
            pr, bx = views["val"][c["tta"]]
            rows, idx, pre = decode_all(va, pr, bx, c)
            m = metrics(rows, va)
            done = {"cfg": c, "metrics": m, "_rows": (rows, idx, pre)}
        val_results[f"{lever}: {name}"] = {"cfg": c, "metrics": done["metrics"], "_rows": done.get("_rows")}
        log(f"  val {lever + ': ' + name:34s} {short(done['metrics'])}")
    # diagnosis of every chosen configuration on validation (at its own threshold for the AOI's recall)
    for name, v in val_results.items():
        if v.get("_rows") is None:
            continue
        rows, idx, pre = v["_rows"]
        pr, _ = views["val"][v["cfg"]["tta"]]
        d = diagnose(rows, idx, pre, va, pr, v["metrics"]["threshold_at_aoi_recall"])
        v["diagnosis_at_aoi_recall"] = {vw: {k: x for k, x in dd.items() if not k.endswith("_records")}
                                        for vw, dd in d.items()}
        dv = d["class_agnostic"]
        log(f"diagnosis of '{name}' at AOI recall, class-agnostic: fp {dv['fp']} {dv['false_calls']} "
            f"(localisation with the true box found by another call: "
            f"{dv['localisation_with_true_box_found_by_another_call']}); misses {dv['misses']}; "
            f"typed: fp {d['typed']['fp']} {d['typed']['false_calls']}, misses {d['typed']['misses']}")
    t_eval = time.perf_counter() - t_eval

    def strip(d):
        return {k: v for k, v in d.items() if not k.startswith("_")}

    summary = {
        "date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "command": " ".join([Path(sys.executable).name] + sys.argv), "model": str(a.model), "model_meta": outs["meta"],
        "train_boards": len(tr["gts"]), "val_boards": len(va["gts"]),
        "train_crops": int(len(tr["crops"].labels)), "val_crops": int(len(va["crops"].labels)),
        "seconds": {"crops_train": tr["seconds_crops"], "aoi_train": tr["seconds_aoi"],
                    "crops_val": va["seconds_crops"], "aoi_val": va["seconds_aoi"],
                    "network_train_8sym": outs["train"]["seconds"], "network_val_8sym": outs["val"]["seconds"],
                    "evaluation_this_run": t_eval, "wall_this_run": time.perf_counter() - t_all},
        "selection_criterion": "min on the TRAINING groups (in-sample outputs of --model; with --crossfit-epochs "
                               "also out-of-fold proxy outputs) of fc/board at AOI recall + fc/board at recall 0.99; "
                               "ties: higher typed mAP, then earlier grid entry (default first)",
        "baseline_train": res["train"]["metrics"], "baseline_val": res["val"]["metrics"],
        "diagnosis_val_at_aoi_recall": {v: {k: x for k, x in d.items() if not k.endswith("_records")}
                                        for v, d in diag.items()},
        "diagnosis_val_at_0.99": {v: {k: x for k, x in d.items() if not k.endswith("_records")}
                                  for v, d in diag99.items()},
        "diagnosis_val_records_at_aoi_recall": {v: {"false_calls": d["false_call_records"], "misses": d["miss_records"]}
                                                for v, d in diag.items()},
        "chosen": {k: {"name": v[0], "cfg": v[1]} for k, v in chosen.items()},
        "baseline_train_out_of_fold": res.get("train_oof", {}).get("metrics"),
        "crossfit": {"width": a.crossfit_width, "epochs": a.crossfit_epochs,
                     "seconds": oof.get("seconds") if a.crossfit_epochs else None},
        "train_tables": tables,
        "val_results": {k: strip(v) for k, v in val_results.items()},
    }
    (a.out / f"summary{tag}.json").write_text(json.dumps(summary, indent=1, default=float) + "\n")
    (a.out / f"log{tag}.txt").write_text("\n".join(lines) + "\n")
    log(f"wall {time.perf_counter() - t_all:.0f} s; wrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
