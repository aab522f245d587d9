"""How the two-stage inspector's overlapping calls are merged, on saved verifiers (no retraining).

    .venv/bin/python bench/verifier_merge_variants.py WEIGHTS.pt [WEIGHTS.pt ...]

For each verifier, on the validation groups of trainval: typed Deep PCB mAP and best F, and false calls per board
against the legacy AOI at the AOI's recall and at recall 0.99, for the cluster box as the score-weighted mean of the
cluster (the decode before 2026-12-06) or the union of it, with boxes grown by 0, 4 or 8 px for the overlap test,
and overlap thresholds 0.1 / 0.2 / 0.3. `verifier.decode` runs "union, gap 4, overlap 0.2" since 2026-12-06.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from verifier_bench import load_boards  # noqa: E402

from pcb_pipeline.core import aoi, deeppcb  # noqa: E402
from pcb_pipeline.core.detection_metrics import compare_at_matched_recall, evaluate_detections  # noqa: E402
from pcb_pipeline.vision import verifier as vf  # noqa: E402

VARIANTS = {  # name: (overlap, gap px, union box)
    "mean, gap 0, overlap 0.2 (before)": (0.2, 0, False), "union, gap 0": (0.2, 0, True),
    "mean, gap 4": (0.2, 4, False), "union, gap 4 (now)": (0.2, 4, True), "mean, gap 8": (0.2, 8, False),
    "union, gap 8": (0.2, 8, True), "mean, overlap 0.1": (0.1, 0, False), "mean, overlap 0.3": (0.3, 0, False),
}


def mean_merge(boxes, score, members, overlap, gap):
    """The pre-2026-12-06 rule (score-weighted mean box of the cluster), with the same overlap test as the product."""
    b = boxes[members].astype(np.float64)
    s = score[members].astype(np.float64)
    g = b + np.array([-gap, -gap, gap, gap])
    area = (g[:, 2] - g[:, 0]) * (g[:, 3] - g[:, 1])
    order, out = np.argsort(-s, kind="stable"), []
    while order.size:
        i, rest = order[0], order[1:]
        inter = np.clip(np.minimum(g[i, 2], g[rest, 2]) - np.maximum(g[i, 0], g[rest, 0]), 0, None) * \
            np.clip(np.minimum(g[i, 3], g[rest, 3]) - np.maximum(g[i, 1], g[rest, 1]), 0, None)
        hit = inter > overlap * np.minimum(area[i], area[rest])
        cluster = np.r_[i, rest[hit]]
        boxes[members[i]] = (b[cluster] * s[cluster, None]).sum(0) / max(s[cluster].sum(), 1e-12)
        out.append(i)
        order = rest[~hit]
    return np.asarray(out, np.int64)


def main() -> int:
    _, val_s = deeppcb.group_split(deeppcb.read_split(deeppcb.split_file_path(ROOT.parent / "shared" / "deeppcb")))
    val_b = load_boards(val_s, 2)
    va = vf.build_crop_set(val_b, log=lambda _: None, workers=2)
    gts, sizes = [g for _, g in val_b], [c.shape[:2] for c, _ in val_b]
    aoi_rows = aoi.predict_aoi([aoi.LoadedPair(s, c[..., 0], c[..., 1], g) for s, (c, g) in zip(val_s, val_b)])
    product = vf.merge_overlapping
    for weights in sys.argv[1:]:
        net, meta = vf.load_checkpoint(Path(weights))
        probs, rel = vf.predict_crops(net, va.crops, va.scales, dual=vf.reads_polarity_dual(meta))
        print(weights)
        for name, (overlap, gap, union) in VARIANTS.items():
            vf.merge_overlapping = (
                (lambda bx, sc, m, *_, o=overlap, g=gap: product(bx, sc, m, o, g)) if union else
                (lambda bx, sc, m, *_, o=overlap, g=gap: mean_merge(bx, sc, m, o, g)))
            rows = [[tuple(r) for r in b] for b in vf.rows_by_board(va, probs, rel, sizes)]
            vf.merge_overlapping = product
            t = evaluate_detections(rows, gts, num_classes=6)
            a = compare_at_matched_recall(rows, aoi_rows, gts)
            b = compare_at_matched_recall(rows, aoi_rows, gts, target_recall=0.99)
            print(f"  {name:36s} mAP {t.map:.4f}  F {t.best_f['f']:.4f} | at the AOI's recall: "
                  f"{a['model']['false_calls_per_board']:.3f} per board (fpr_reduction {a['fpr_reduction']:.3f}) | "
                  f"at 0.99: {b['model']['false_calls_per_board']:.3f} ({b['fpr_reduction']:.3f})", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
