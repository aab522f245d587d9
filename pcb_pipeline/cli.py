"""`pcb-pipeline`: run the demo, query the warehouse, predict, evaluate."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pcb_pipeline import settings


def _print_table(df) -> None:
    print(df.to_string(index=False) if len(df) else "(no rows)")


def _champion_weights() -> Path:
    from pcb_pipeline.backends.factory import registry

    reg = registry()
    champ = reg.champion()
    if champ is None:
        raise SystemExit("no champion model is registered yet: run `pcb-pipeline demo` first or pass --weights")
    return reg.download_weights(champ, settings.paths().work / "champion")


def cmd_demo(args) -> int:
    from pcb_pipeline.demo import run_demo

    return run_demo(deeppcb_root=args.deeppcb_root, profile=args.profile, min_map50=args.min_map50)


def cmd_sql(args) -> int:
    from pcb_pipeline.backends.factory import warehouse
    from pcb_pipeline.knowledge.api import run_sql
    from pcb_pipeline.knowledge.sql_guard import UnsafeSQLError

    try:
        result = run_sql(args.query, warehouse())  # one read-only SELECT over the pipeline's tables
    except UnsafeSQLError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({"columns": result["columns"], "rows": result["rows"]}, default=str))
    else:
        import pandas as pd

        _print_table(pd.DataFrame(result["rows"], columns=result["columns"]))
    return 0


def cmd_ask(args) -> int:
    try:
        if args.data is not None:
            from pcb_pipeline.backends.factory import warehouse
            from pcb_pipeline.knowledge.api import ask_data

            result = ask_data(args.data, warehouse())
        else:
            from pcb_pipeline.knowledge.api import ask_manuals

            result = ask_manuals(args.manuals, category=args.category)
    except ValueError as e:  # empty question, unknown category, a typed SQL the guard refused
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result, indent=2, default=str))
    elif "answer" in result:
        print(result["answer"])
        for c in result["citations"]:
            print(f"  [{c.get('number', '')}] {c['document']} p.{c['page']} ({c['defect_category']})")
    else:
        print(result["interpretation"])
        if result.get("sql"):
            print(result["sql"])
            import pandas as pd

            _print_table(pd.DataFrame(result["rows"], columns=result["columns"]))
        for s in result.get("suggestions") or []:
            print(f"  try: {s}")
    return 0 if result.get("sql") or "answer" in result else 1


def cmd_predict(args) -> int:
    from pcb_pipeline.core.images import BadImageError
    from pcb_pipeline.vision.detector import Detector

    detector = Detector(args.weights or _champion_weights(), conf=args.conf)
    results, failed = [], 0
    for image in args.images:
        try:
            dets = detector.predict([Path(image)])[0]
            results.append({"image": image, "detections": [d.to_dict() for d in dets]})
        except BadImageError as e:
            failed += 1
            results.append({"image": image, "error": str(e)})
    if args.json:
        print(json.dumps({"backend": detector.backend, "results": results}, indent=2))
    else:
        for r in results:
            if "error" in r:
                print(f"{r['image']}: ERROR {r['error']}")
                continue
            print(f"{r['image']}: {len(r['detections'])} defect(s)")
            for d in r["detections"]:
                print(f"  {d['class_name']:<10} {d['confidence']:.2f}  [{d['x1']:.0f}, {d['y1']:.0f}, "
                      f"{d['x2']:.0f}, {d['y2']:.0f}]")
    return 1 if failed else 0


def cmd_evaluate(args) -> int:
    from pcb_pipeline.vision.evaluate import evaluate_split

    split = Path(args.split)
    if not split.is_absolute() and not split.exists():
        split = Path(args.deeppcb_root) / "PCBData" / args.split
    report = evaluate_split(Path(args.weights) if args.weights else _champion_weights(), split)
    print(json.dumps(report, indent=2) if args.json else "\n".join(f"{k}: {v}" for k, v in report.items()))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pcb-pipeline", description="PCB defect intelligence pipeline")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="materialise every asset on the configured backend and print the golden query")
    d.add_argument("--deeppcb-root", help="a Deep PCB folder (holding PCBData/); default: synthetic boards")
    d.add_argument("--profile", default="demo", help="training profile: demo (CPU), full (GPU), smoke")
    d.add_argument("--min-map50", type=float, default=None, help="promotion threshold (default 0.5)")
    d.set_defaults(func=cmd_demo)

    s = sub.add_parser("sql", help="run one read-only Snowflake-dialect SELECT on the warehouse")
    s.add_argument("query")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_sql)

    a = sub.add_parser("ask", help="plain-English questions over the defect data or the repair manuals")
    which = a.add_mutually_exclusive_group(required=True)
    which.add_argument("--data", metavar="QUESTION", help="question over DEFECT_LOGS / PCB_METADATA")
    which.add_argument("--manuals", metavar="QUESTION", help="question over the SOP / repair manuals")
    a.add_argument("--category", help="manuals only: a defect category (Etching, Soldering, ...) or class")
    a.add_argument("--json", action="store_true")
    a.set_defaults(func=cmd_ask)

    pr = sub.add_parser("predict", help="detect defects in board images")
    pr.add_argument("images", nargs="+")
    pr.add_argument("--weights", help="a .pt or .onnx file; default: the registered champion")
    pr.add_argument("--conf", type=float, default=0.25)
    pr.add_argument("--json", action="store_true")
    pr.set_defaults(func=cmd_predict)

    e = sub.add_parser("evaluate", help="evaluate weights on a Deep PCB split file")
    e.add_argument("--deeppcb-root", required=True)
    e.add_argument("--split", required=True, help="split file (path, or a name under DEEPPCB_ROOT/PCBData)")
    e.add_argument("--weights")
    e.add_argument("--json", action="store_true")
    e.set_defaults(func=cmd_evaluate)
    return p


def main(argv: list[str] | None = None) -> int:
    settings.configure()
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
