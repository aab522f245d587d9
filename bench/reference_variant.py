"""Does the reference-aware input (test, template, difference; core.reference) beat the test image alone?

Same data, same recipe, same compute: yolo12n from yolo12n.yaml is trained twice on the Deep PCB training groups
of the group split (800 pairs), once on the test images and once on reference composites, for a fixed number of
epochs (not a wall-clock budget, so load on the machine cannot favour either run), then both are evaluated on the
held-out validation groups (200 pairs) by ``pcb-pipeline evaluate``'s code: Ultralytics mAP, the Deep PCB protocol,
and false calls at matched recall against the legacy AOI.

    .venv/bin/python bench/reference_variant.py [--deeppcb ../shared/deeppcb] [--imgsz 320] [--epochs 8]
        [--out bench/reference_runs/<date>_cpu] [--modes test,reference] [--eval-only] [--init WEIGHTS]

--init starts from a checkpoint instead of yolo12n.yaml (e.g. a 320 px run fine-tuned at 640: progressive resizing).

Each variant's figures land in OUT/<mode>/evaluation.json as soon as it is done, the comparison in OUT/summary.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pcb_pipeline.core import deeppcb  # noqa: E402
from pcb_pipeline.core.reference import INPUT_MODES  # noqa: E402
from pcb_pipeline.core.yolo_format import write_yolo_dataset  # noqa: E402


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--deeppcb", type=Path, default=ROOT.parent / "shared" / "deeppcb")
    p.add_argument("--imgsz", type=int, default=320)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--modes", default=",".join(INPUT_MODES))
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "reference_runs" / f"{date.today()}_cpu")
    p.add_argument("--work", type=Path, default=Path("/tmp/pcb-reference-bench"), help="datasets and PCB_HOME")
    p.add_argument("--eval-only", action="store_true", help="evaluate weights already in OUT/<mode>/")
    p.add_argument("--init", type=Path, default=None, help="start from these weights (one mode only)")
    return p.parse_args()


def train_variant(mode: str, dataset: Path, out: Path, args: argparse.Namespace, env: dict) -> float:
    cmd = [sys.executable, "-m", "pcb_pipeline.vision.train", "--data", str(dataset), "--profile", "demo",
           "--out", str(out), "--run-name", f"reference-bench-{mode}",
           "--set", f"imgsz={args.imgsz}", "--set", f"epochs={args.epochs}", "--set", "time=none",
           "--set", f"batch={args.batch}", "--set", f"seed={args.seed}", "--set", "close_mosaic=2"]
    if args.init:
        cmd += ["--set", f"model={args.init.resolve()}"]
    started = time.perf_counter()
    with open(out / "train.log", "w") as log:
        subprocess.run(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, check=True)
    return time.perf_counter() - started


def main() -> int:
    args = parse_args()
    modes = [m for m in args.modes.split(",") if m]
    if args.init and len(modes) != 1:
        raise SystemExit("--init names one checkpoint: pass one --modes")
    split = deeppcb.split_file_path(args.deeppcb)
    train, val = deeppcb.group_split(deeppcb.read_split(split))
    env = {**os.environ, "PCB_HOME": str(args.work / "home")}
    summary: dict = {"date": str(date.today()), "machine": f"{platform.machine()}, {os.cpu_count()} cores",
                     "command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:]), "imgsz": args.imgsz,
                     "epochs": args.epochs, "batch": args.batch, "init": str(args.init) if args.init else "yolo12n.yaml",
                     "train_pairs": len(train), "val_pairs": len(val),
                     "val_groups": sorted({s.group for s in val}), "variants": {}}
    previous = args.out / "summary.json"
    if previous.is_file():  # a run of one mode keeps the other mode's figures
        summary["variants"] = json.loads(previous.read_text()).get("variants", {})
    for mode in modes:
        out = args.out / mode
        out.mkdir(parents=True, exist_ok=True)
        if not args.eval_only:
            dataset = args.work / f"dataset_{mode}"
            write_yolo_dataset({"train": train, "val": val}, dataset, input_mode=mode)
            seconds = train_variant(mode, dataset, out, args, env)
            (out / "train_seconds.txt").write_text(f"{seconds:.1f}\n")
        from pcb_pipeline.vision.evaluate import evaluate_split

        report = evaluate_split(out / "best.pt", split, val_groups=True)
        (out / "evaluation.json").write_text(json.dumps(report, indent=1) + "\n")
        summary["variants"][mode] = {**headline(report, out), "command": summary["command"]}
        (args.out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
        print(mode, json.dumps(summary["variants"][mode]), flush=True)
    return 0


def headline(report: dict, out: Path) -> dict:
    proto = report["deeppcb_protocol"]
    red = (report.get("fpr_reduction") or {})
    seconds = out / "train_seconds.txt"
    return {
        "input_mode": report.get("input_mode"),
        "map50": report.get("map50"), "map50_95": report.get("map50_95"),
        "deeppcb_map": proto["map"], "best_f": proto["best_f"]["f"] if isinstance(proto["best_f"], dict) else None,
        "class_agnostic_ap": proto["class_agnostic"]["ap"],
        "fpr_reduction": {k: {"model_fcpb": v["model_false_calls_per_board"], "aoi_fcpb": v["aoi_false_calls_per_board"],
                              "fpr_reduction": v["fpr_reduction"]}
                          for k, v in red.items() if isinstance(v, dict) and "fpr_reduction" in v},
        "train_wall_s": float(seconds.read_text()) if seconds.is_file() else None,
    }


if __name__ == "__main__":
    sys.exit(main())
