"""Two-stage reference inspector on real Deep PCB: AOI candidates + the learned crop verifier, vs the legacy AOI.

    .venv/bin/python bench/verifier_bench.py [--deeppcb ../shared/deeppcb] [--epochs 30] [--out bench/verifier_runs/X]

Trains on the candidate crops of the training groups of ``group_split`` (800 pairs), evaluates on the 200 pairs
of the held-out validation groups: typed Deep PCB mAP and best F (IoU > 0.33, same class), false calls per board
against the AOI (default params) at the AOI's operating recall and at recall 0.99, ms per board for both.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pcb_pipeline.core import aoi, deeppcb  # noqa: E402
from pcb_pipeline.core.classes import CLASS_NAMES  # noqa: E402
from pcb_pipeline.core.detection_metrics import compare_at_matched_recall, evaluate_detections  # noqa: E402
from pcb_pipeline.core.reference import sample_composite  # noqa: E402
from pcb_pipeline.vision import verifier as vf  # noqa: E402
from pcb_pipeline.vision.verifier_training import train_config  # noqa: E402


def _one(sample):
    gt = [(b.x1, b.y1, b.x2, b.y2, b.class_id) for b in deeppcb.read_labels(sample.label_file)]
    return sample_composite(sample), gt


def load_boards(samples, workers: int):
    with ProcessPoolExecutor(workers) as pool:
        return list(pool.map(_one, samples, chunksize=16))


@dataclass
class Validation:
    """The held-out validation groups of trainval: samples, (composite, truth) boards, their candidate crops, and
    the legacy AOI's calls on them."""

    samples: list
    boards: list
    crops: vf.CropSet
    aoi_rows: list

    @property
    def gts(self) -> list:
        return [gt for _, gt in self.boards]

    def score(self, probs: np.ndarray, rel: np.ndarray) -> dict:
        """Typed Deep PCB mAP and best F, false calls per board (and `fpr_reduction`) against the legacy AOI at its
        recall and at recall 0.99, of the verifier's outputs on every crop."""
        rows = [[tuple(r) for r in b] for b in vf.rows_by_board(self.crops, probs, rel,
                                                                [c.shape[:2] for c, _ in self.boards])]
        typed = evaluate_detections(rows, self.gts, num_classes=len(CLASS_NAMES))
        at_aoi = compare_at_matched_recall(rows, self.aoi_rows, self.gts)
        at_99 = compare_at_matched_recall(rows, self.aoi_rows, self.gts, target_recall=0.99)
        return {"typed_map": typed.map, "typed_best_f": typed.best_f["f"],
                "fc_per_board_at_aoi_recall": at_aoi["model"]["false_calls_per_board"],
                "fpr_reduction_at_aoi_recall": at_aoi["fpr_reduction"],
                "fc_per_board_at_0.99": at_99["model"]["false_calls_per_board"],
                "fpr_reduction_at_0.99": at_99["fpr_reduction"]}


def validation_set(deeppcb_root: Path = ROOT.parent / "shared" / "deeppcb", workers: int = 2) -> Validation:
    _, samples = deeppcb.group_split(deeppcb.read_split(deeppcb.split_file_path(deeppcb_root)))
    boards = load_boards(samples, workers)
    crops = vf.build_crop_set(boards, log=lambda _: None, workers=workers)
    aoi_rows = aoi.predict_aoi([aoi.LoadedPair(s, c[..., 0], c[..., 1], g) for s, (c, g) in zip(samples, boards)])
    return Validation(samples, boards, crops, aoi_rows)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--deeppcb", type=Path, default=ROOT.parent / "shared" / "deeppcb")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--jitter", type=float, default=0.0, help="window jitter (VerifierTrainConfig.jitter)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="any other VerifierTrainConfig setting, e.g. --set stem_stride=1 --set ema=0.998")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "verifier_runs" / "latest")
    p.add_argument("--weights", type=Path, help="evaluate this verifier.pt instead of training one")
    a = p.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    train_s, val_s = deeppcb.group_split(deeppcb.read_split(deeppcb.split_file_path(a.deeppcb)))
    t0 = time.perf_counter()
    train_b, val_b = load_boards(train_s, a.workers), load_boards(val_s, a.workers)
    tr, va = (vf.build_crop_set(b, log=lambda _: None, workers=a.workers) for b in (train_b, val_b))
    prep = time.perf_counter() - t0
    print(f"crops: train {len(tr.labels)} ({(tr.labels != 6).mean():.2f} positive), val {len(va.labels)}; "
          f"{prep:.0f} s", flush=True)
    cfg = train_config({"epochs": a.epochs, "width": a.width, "jitter": a.jitter,
                        **dict(kv.split("=", 1) for kv in a.set)})
    t1 = time.perf_counter()
    if a.weights:
        net, meta = vf.load_checkpoint(a.weights)
        cfg = vf.VerifierTrainConfig(epochs=a.epochs, width=int(meta["width"]), stem_stride=int(meta.get("stem_stride", 2)),
                                     invert=float(meta.get(vf.INVERT_KEY) or 0))
    else:
        net = vf.train_verifier(tr, cfg, va, on_epoch=lambda e, m, _: print(e, {k: round(v, 4) for k, v in m.items()},
                                                                               flush=True),
                                composites=[c for c, _ in train_b])
    train_time = time.perf_counter() - t1
    vf.save_checkpoint(net, cfg, a.out / "verifier.pt")
    vf.export_onnx(net, a.out / "verifier.onnx", {"pcb_input": "reference", vf.INVERT_KEY: cfg.invert})
    probs, rel = vf.predict_crops(net, va.crops, va.scales, dual=cfg.dual_views)
    model_rows = [[tuple(r) for r in rows] for rows in
                  vf.rows_by_board(va, probs, rel, [c.shape[:2] for c, _ in val_b])]
    gts = [gt for _, gt in val_b]
    aoi_rows = aoi.predict_aoi([aoi.LoadedPair(s, c[..., 0], c[..., 1], g) for s, (c, g) in zip(val_s, val_b)])
    typed = evaluate_detections(model_rows, gts, num_classes=len(CLASS_NAMES))
    aoi_typed = evaluate_detections(aoi_rows, gts, num_classes=len(CLASS_NAMES))
    at_aoi = compare_at_matched_recall(model_rows, aoi_rows, gts)
    at_99 = compare_at_matched_recall(model_rows, aoi_rows, gts, target_recall=0.99)
    # ms per board on one thread, ONNX Runtime, both stages; the AOI alone on the same boards
    rt = vf.VerifierRuntime(a.out / "verifier.onnx", threads=1)
    ms, ms_aoi = [], []
    for c, _ in val_b[:40]:
        t = time.perf_counter(); rt.rows(c); ms.append(time.perf_counter() - t)
        t = time.perf_counter(); aoi.inspect_pair(c[..., 0], c[..., 1]); ms_aoi.append(time.perf_counter() - t)
    summary = {
        "date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "command": " ".join(sys.argv), "config": {f: getattr(cfg, f) for f in vf.VerifierTrainConfig.__dataclass_fields__},
        "weights": str(a.weights) if a.weights else None, "nms_overlap": vf.NMS_OVERLAP,
        "train_crops": int(len(tr.labels)), "val_crops": int(len(va.labels)),
        "prep_seconds": round(prep, 1), "train_seconds": round(train_time, 1),
        "typed_map": typed.map, "typed_best_f": typed.best_f, "per_class_ap": {CLASS_NAMES[c]: v for c, v in typed.ap.items()},
        "aoi_typed_map": aoi_typed.map, "aoi_typed_best_f": aoi_typed.best_f,
        "at_aoi_recall": at_aoi, "at_recall_0.99": at_99,
        "ms_per_board_two_stage": 1000 * float(np.median(ms)), "ms_per_board_aoi": 1000 * float(np.median(ms_aoi)),
    }
    (a.out / "summary.json").write_text(json.dumps(summary, indent=1, default=float) + "\n")
    print(json.dumps({k: summary[k] for k in ("typed_map", "aoi_typed_map", "train_seconds",
                                              "ms_per_board_two_stage", "ms_per_board_aoi")}, default=float))
    print("at AOI recall", json.dumps(at_aoi, default=float))
    print("at 0.99", json.dumps(at_99, default=float))
    print("best F", typed.best_f, "AOI", aoi_typed.best_f)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
