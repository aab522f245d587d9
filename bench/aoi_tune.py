"""Tune the legacy AOI baseline on the TRAINING board groups only, then score it on held-out groups and trainval.

    .venv/bin/python bench/aoi_tune.py [--data ../shared/deeppcb] [--out bench/aoi_params.json]
                                       [--results bench/aoi_results.json] [--every N]

A small grid over the local re-registration (search radius, window), the difference/clean-up parameters (edge
tolerance, opening and closing radii) and the box parameters (smallest component, padding, smallest box side). Objective: class-agnostic AP under the Deep PCB protocol (IoU > 0.33)
on the training groups of ``group_split``; ties broken by the best F-score. The operating threshold is the
best-F threshold on the training groups. The validation groups are scored once, with the chosen parameters.
Alignment is computed once per pair and per alignment setting, components once per (tolerance, opening,
closing) on top; the box parameters are applied afterwards, so the grid costs about 15 minutes on two cores.
"""
from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pcb_pipeline.core.aoi import (  # noqa: E402
    DEFAULT_PARAMS, align, binarize, find_components, load_gray, score_aoi, to_detections,
    tolerance_masks)
from pcb_pipeline.core.deeppcb import group_split, read_labels, read_split, split_file_path  # noqa: E402
from pcb_pipeline.core.detection_metrics import evaluate_detections  # noqa: E402

GRID_ALIGN = {"local_radius": [2, 3], "local_window": [41, 61]}
GRID_MORPH = {"tolerance": [1, 2], "open_radius": [0, 1], "close_radius": [1, 2, 3]}
GRID_BOX = {"min_area": [4, 6, 10, 14], "pad": [2, 4, 6, 8], "min_box": [24, 28, 32]}


def _strip(report: dict) -> dict:
    """Drop the bulky parts of a score_aoi report for printing."""
    keep = ("n_images", "misaligned", "operating", "matched_recall", "all_calls")
    out = {k: report[k] for k in keep}
    out["ap_class_agnostic"] = report["class_agnostic"]["map"]
    out["best_f"] = report["class_agnostic"]["best_f"]
    if "typed" in report:
        out["typed_ap"] = report["typed"]["ap"]
        out["typed_map"] = report["typed"]["map"]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "deeppcb")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "aoi_params.json")
    ap.add_argument("--results", type=Path, default=ROOT / "bench" / "aoi_results.json")
    ap.add_argument("--every", type=int, default=1, help="use every N-th training pair for the grid (speed)")
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    samples = read_split(split_file_path(args.data, "trainval"))
    train, val = group_split(samples)
    grid_samples = train[:: args.every]
    print(f"trainval {len(samples)} pairs; train groups {sorted({s.group for s in train})} ({len(train)}), "
          f"val groups {sorted({s.group for s in val})} ({len(val)}); grid on {len(grid_samples)} training pairs",
          flush=True)

    base = replace(DEFAULT_PARAMS, typed=False, min_area=min(GRID_BOX["min_area"]))
    align_keys = list(itertools.product(*GRID_ALIGN.values()))
    morph_keys = [a + m for a in align_keys for m in itertools.product(*GRID_MORPH.values())]
    names = list(GRID_ALIGN) + list(GRID_MORPH)
    comps: dict[tuple, list] = {k: [] for k in morph_keys}
    gts = []
    for n, s in enumerate(grid_samples):
        test_cu = binarize(load_gray(s.test_image), base.binarize_threshold)
        temp_cu = binarize(load_gray(s.template_image), base.binarize_threshold)
        gts.append([(b.x1, b.y1, b.x2, b.y2, b.class_id) for b in read_labels(s.label_file)])
        for lr, lw in align_keys:
            pa = replace(base, local_radius=lr, local_window=lw)
            tols = GRID_MORPH["tolerance"]
            extras = [m for tol in tols for m in tolerance_masks(temp_cu, tol)]
            alignment, temp_al, warped = align(test_cu, temp_cu, pa, extra=extras)
            for ti, tol in enumerate(tols):
                aligned = (alignment, temp_al, warped[2 * ti:2 * ti + 2])
                for op, cl in itertools.product(GRID_MORPH["open_radius"], GRID_MORPH["close_radius"]):
                    p = replace(pa, tolerance=tol, open_radius=op, close_radius=cl)
                    comps[(lr, lw, tol, op, cl)].append(find_components(test_cu, temp_cu, p, aligned=aligned)[1])
        if (n + 1) % 100 == 0:
            print(f"  components: {n + 1}/{len(grid_samples)} pairs, {time.perf_counter() - t0:.0f} s", flush=True)

    trials = []
    for mk in morph_keys:
        for bk in itertools.product(*GRID_BOX.values()):
            p = replace(base, **dict(zip(names, mk)), **dict(zip(GRID_BOX, bk)))
            preds = [[d.row() for d in to_detections(c, p)] for c in comps[mk]]
            rep = evaluate_detections(preds, gts, class_agnostic=True)
            trials.append((rep.map, rep.best_f["f"], p, rep.best_f))
        best_here = max(trials[-len(list(itertools.product(*GRID_BOX.values()))):], key=lambda t: (t[0], t[1]))
        print(f"  {'/'.join(names)} {mk}: best train AP {best_here[0]:.4f} F {best_here[1]:.4f} "
              f"(min_area {best_here[2].min_area}, pad {best_here[2].pad}, min_box {best_here[2].min_box})",
              flush=True)
    ap_best, f_best, chosen, bf = max(trials, key=lambda t: (t[0], t[1]))
    chosen = replace(chosen, typed=True, threshold=round(float(bf["threshold"]), 6))
    print(f"chosen on training groups: AP {ap_best:.4f}, best F {f_best:.4f} at threshold {chosen.threshold} "
          f"(precision {bf['precision']:.4f}, recall {bf['recall']:.4f})", flush=True)
    print(json.dumps(chosen.to_dict(), indent=1), flush=True)
    args.out.write_text(json.dumps(chosen.to_dict(), indent=1) + "\n")

    results = {
        "command": "python bench/aoi_tune.py" + (f" --every {args.every}" if args.every != 1 else ""),
        "date": dt.date.today().isoformat(),
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}, Python {platform.python_version()}",
        "protocol": "Deep PCB: IoU > 0.33, greedy by confidence, class-agnostic unless 'typed'",
        "grid": {**GRID_ALIGN, **GRID_MORPH, **GRID_BOX}, "grid_trials": len(trials),
        "train_groups": sorted({s.group for s in train}), "val_groups": sorted({s.group for s in val}),
        "chosen_params": chosen.to_dict(),
        "train_objective": {"ap": ap_best, "best_f": bf},
    }
    for name, subset in (("val", val), ("train", train), ("trainval", samples)):
        rep = _strip(score_aoi(subset, chosen))
        results[name] = rep
        op, mr = rep["operating"], rep["matched_recall"]
        print(f"{name:9s} n={rep['n_images']:4d} AP {rep['ap_class_agnostic']:.4f} | at tuned threshold: recall "
              f"{op['recall']:.4f} precision {op['precision']:.4f} false calls/board {op['false_calls_per_board']:.3f}"
              f" | at recall 0.90: precision {mr['precision']:.4f} false calls/board "
              f"{mr['false_calls_per_board']:.3f} | typed mAP {rep.get('typed_map', float('nan')):.4f} | "
              f"misaligned {len(rep['misaligned'])}", flush=True)
    results["seconds"] = round(time.perf_counter() - t0, 1)
    args.results.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {args.out} and {args.results} in {results['seconds']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
