"""Which views an unsure crop is judged by, on saved verifiers (no retraining): the three flips alone, or the flips
and the crop's polarity dual (`verifier.predict_with_flips`, ``dual``).

    .venv/bin/python bench/verifier_views.py WEIGHTS.pt [WEIGHTS.pt ...] [--out views.json]

For each network, on the validation groups of trainval: typed Deep PCB mAP and best F, false calls per board against
the legacy AOI at the AOI's recall and at recall 0.99, both ways (``FLIP_SURE`` as served). The dual views mean
something only for a network trained on polarity duals (``invert`` > 0); a checkpoint saved before it carried that
stamp is evaluated both ways all the same.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from verifier_bench import load_boards  # noqa: E402

from pcb_pipeline.core import aoi, deeppcb  # noqa: E402
from pcb_pipeline.core.detection_metrics import compare_at_matched_recall, evaluate_detections  # noqa: E402
from pcb_pipeline.vision import verifier as vf  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("weights", type=Path, nargs="+")
    p.add_argument("--out", type=Path, help="write the table as JSON here")
    a = p.parse_args()
    _, val_s = deeppcb.group_split(deeppcb.read_split(deeppcb.split_file_path(ROOT.parent / "shared" / "deeppcb")))
    val_b = load_boards(val_s, 2)
    va = vf.build_crop_set(val_b, log=lambda _: None, workers=2)
    gts, sizes = [g for _, g in val_b], [c.shape[:2] for c, _ in val_b]
    aoi_rows = aoi.predict_aoi([aoi.LoadedPair(s, c[..., 0], c[..., 1], g) for s, (c, g) in zip(val_s, val_b)])
    table = []
    for weights in a.weights:
        net, meta = vf.load_checkpoint(weights)
        for dual in (False, True):
            probs, rel = vf.predict_crops(net, va.crops, va.scales, dual=dual)
            rows = [[tuple(r) for r in b] for b in vf.rows_by_board(va, probs, rel, sizes)]
            t = evaluate_detections(rows, gts, num_classes=6)
            at_aoi = compare_at_matched_recall(rows, aoi_rows, gts)
            at_99 = compare_at_matched_recall(rows, aoi_rows, gts, target_recall=0.99)
            row = {"weights": str(weights), "stamped_invert": meta.get(vf.INVERT_KEY),
                   "views": "flips + dual" if dual else "flips", "typed_map": t.map, "typed_best_f": t.best_f["f"],
                   "fc_per_board_at_aoi_recall": at_aoi["model"]["false_calls_per_board"],
                   "fpr_reduction_at_aoi_recall": at_aoi["fpr_reduction"],
                   "fc_per_board_at_0.99": at_99["model"]["false_calls_per_board"],
                   "fpr_reduction_at_0.99": at_99["fpr_reduction"]}
            table.append(row)
            print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}), flush=True)
    if a.out:
        a.out.write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "command": " ".join(sys.argv),
                                     "machine": f"{platform.machine()} {platform.processor()}, {os.cpu_count()} cores",
                                     "flip_sure": vf.FLIP_SURE, "val_crops": int(len(va.labels)), "table": table},
                                    indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
