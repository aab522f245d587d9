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

from verifier_bench import validation_set  # noqa: E402

from pcb_pipeline.vision import verifier as vf  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("weights", type=Path, nargs="+")
    p.add_argument("--out", type=Path, help="write the table as JSON here")
    a = p.parse_args()
    val = validation_set()
    va = val.crops
    table = []
    for weights in a.weights:
        net, meta = vf.load_checkpoint(weights)
        for dual in (False, True):
            probs, rel = vf.predict_crops(net, va.crops, va.scales, dual=dual)
            row = {"weights": str(weights), "stamped_invert": meta.get(vf.INVERT_KEY),
                   "views": "flips + dual" if dual else "flips", **val.score(probs, rel)}
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
