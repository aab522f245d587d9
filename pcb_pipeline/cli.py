"""`pcb-pipeline`: run the demo, query the warehouse, predict, evaluate."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from pcb_pipeline import settings
from pcb_pipeline.core.reference import INPUT_MODES, REFERENCE


def _print_table(df) -> None:
    print(df.to_string(index=False) if len(df) else "(no rows)")


def _champion_weights() -> Path:
    from pcb_pipeline.backends.champion import champion_weights, require_champion
    from pcb_pipeline.backends.factory import registry

    reg = registry()
    return champion_weights(reg, require_champion(reg, "run `pcb-pipeline demo` first or pass --weights"))


def cmd_demo(args) -> int:
    from pcb_pipeline.demo import run_demo

    from pcb_pipeline.vision.train import parse_overrides

    return run_demo(deeppcb_root=args.deeppcb_root, profile=args.profile, min_map50=args.min_map50,
                    input_mode=args.input_mode, overrides=parse_overrides(args.set))


def cmd_sql(args) -> int:
    from pcb_pipeline.backends.base import QueryTimeoutError
    from pcb_pipeline.backends.factory import warehouse
    from pcb_pipeline.knowledge.api import run_sql
    from pcb_pipeline.knowledge.sql_guard import UnsafeSQLError

    try:  # one read-only SELECT over the pipeline's tables, on a read-only connection, bounded in time and rows
        result = run_sql(args.query, warehouse(read_only=True))
    except (UnsafeSQLError, QueryTimeoutError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({"columns": result["columns"], "rows": result["rows"]}, default=str))
    else:
        import pandas as pd

        _print_table(pd.DataFrame(result["rows"], columns=result["columns"]))
    return 0


def cmd_ask(args) -> int:
    """Data questions: the backend's question -> SQL engine on its warehouse; manual questions: the backend's manual
    search (local index, or Cortex Search + AI_COMPLETE on PCB_BACKEND=snowflake). The question is checked before
    anything is loaded or connected."""
    from pcb_pipeline.backends import factory
    from pcb_pipeline.backends.base import QueryTimeoutError
    from pcb_pipeline.knowledge.api import ask_data, ask_manuals, check_question

    try:
        if args.data is not None:
            result = ask_data(check_question(args.data), factory.warehouse(read_only=True),
                             analyst=factory.data_analyst())
        else:
            from pcb_pipeline.knowledge.search import resolve_category

            question = check_question(args.manuals)
            resolve_category(args.category)  # an unknown category is refused before the search is opened
            result = ask_manuals(question, category=args.category, search=factory.manual_search())
    except (ValueError, factory.BackendConfigError, QueryTimeoutError) as e:  # empty question, unknown category,
        # missing settings, a query stopped at its time limit
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
    from pcb_pipeline.core.deeppcb import template_beside
    from pcb_pipeline.core.images import BadImageError
    from pcb_pipeline.core.reference import TemplateError
    from pcb_pipeline.vision.detector import Detector

    if args.template and len(args.template) != len(args.images):
        print(f"error: {len(args.images)} image(s) but {len(args.template)} --template(s): give one per image, in "
              f"order, or none (a <id>_test.jpg then finds <id>_temp.jpg beside it)", file=sys.stderr)
        return 2
    detector = Detector(args.weights or _champion_weights(), conf=args.conf)
    templates = args.template or [template_beside(Path(i)) for i in args.images]
    results, failed = [], 0
    for image, template in zip(args.images, templates):
        try:
            kwargs = {"templates": [Path(template) if template else None]} if detector.needs_template else {}
            dets = detector.predict([Path(image)], **kwargs)[0]
            results.append({"image": image, "detections": [d.to_dict() for d in dets]})
        except (BadImageError, TemplateError) as e:
            failed += 1
            results.append({"image": image, "error": str(e)})
    if args.json:
        print(json.dumps({"backend": detector.backend, "input_mode": detector.input_mode, "results": results},
                         indent=2))
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
    from pcb_pipeline.vision.evaluate import DEFAULT_TARGET_RECALLS, evaluate_split

    split = Path(args.split)
    if not split.is_absolute() and not split.exists():
        split = Path(args.deeppcb_root) / "PCBData" / args.split
    if not split.is_file():
        print(f"error: split file not found: {split}", file=sys.stderr)
        return 2
    if args.publish and args.weights:
        print("error: --publish stores the report beside the registered champion; leave out --weights",
              file=sys.stderr)
        return 2
    weights = Path(args.weights) if args.weights else _champion_weights()
    if not weights.is_file():
        print(f"error: model weights not found: {weights}", file=sys.stderr)
        return 2
    report = evaluate_split(weights, split, val_groups=args.val_groups, val_fraction=args.val_fraction,
                            aoi=not args.no_aoi, target_recalls=tuple(args.target_recall or DEFAULT_TARGET_RECALLS),
                            aoi_workers=args.aoi_workers)
    text = json.dumps(report, indent=2, default=str)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    if args.publish:  # where the dashboard looks for the false-call figures (app.data.load_false_call_figures)
        import tempfile

        from pcb_pipeline.backends.factory import registry, stage

        run_id = registry().champion().run_id
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(tmp) / "evaluation.json"
            local.write_text(text + "\n")
            report["published"] = stage().put_file(local, f"models/{run_id}/evaluation.json")
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    else:
        _print_evaluation(report)
    return 0


def _print_evaluation(r: dict) -> None:
    """A short human-readable summary (the full figures: --json)."""
    print(f"{r['images']} images ({r['subset']}), weights {r['weights']}, backend {r['backend']}")
    if "map50" in r:  # ultralytics' val (not for the two-stage inspector)
        print(f"ultralytics: mAP50 {r['map50']:.3f}  mAP50-95 {r['map50_95']:.3f}  P {r['precision']:.3f}  "
              f"R {r['recall']:.3f}")
        for name, v in r["per_class"].items():
            print(f"  {name:<10} AP50 {v['ap50']:.3f}  AP50-95 {v['ap50_95']:.3f}")
    d = r["deeppcb_protocol"]
    bf = d["best_f"]
    print(f"Deep PCB protocol (IoU > {d['iou_threshold']}): mAP {d['map']:.3f}  best F {bf['f']:.3f} at score >= "
          f"{bf['threshold'] if bf['threshold'] is None else round(bf['threshold'], 4)}  class-agnostic AP "
          f"{d['class_agnostic']['ap']:.3f}")
    f = r["false_calls_per_board"]
    print(f"false calls per board (class-agnostic): model at conf 0.25 {f['model_at_default_conf']:.3f}, at best F "
          f"{f['model_at_best_f'] if f['model_at_best_f'] is None else round(f['model_at_best_f'], 3)}")
    if r.get("aoi_baseline") is None:
        print(f"legacy AOI baseline: not run ({r.get('aoi_skipped', 'no templates')})")
        return
    op = r["aoi_baseline"]["operating"]
    print(f"legacy AOI ({r['aoi_baseline']['n_images']} pairs): recall {op['recall']:.3f}  precision "
          f"{op['precision']:.3f}  false calls/board {op['false_calls_per_board']:.3f}")
    for k, v in r["fpr_reduction"].items():
        if isinstance(v, dict):
            red = "n/a" if v["fpr_reduction"] is None else f"{v['fpr_reduction']:+.2f}"
            boards = (f"; boards with a false call model {v['model_boards_with_false_call']:.3f} vs AOI "
                      f"{v['aoi_boards_with_false_call']:.3f}" if v.get("model_boards_with_false_call") is not None
                      and v.get("aoi_boards_with_false_call") is not None else "")
            print(f"  {k} (recall {v['target_recall']:.3f}): false calls/board model "
                  f"{v['model_false_calls_per_board']:.3f} vs AOI {v['aoi_false_calls_per_board']:.3f}; fpr model "
                  f"{v['model_fpr']:.3f} vs AOI {v['aoi_fpr']:.3f}; fpr_reduction {red}{boards}")
    ms = r.get("ms_per_board") or {}
    if ms.get("model") is not None:
        print(f"ms per board (this run, decoding included): model {ms['model']:.1f}, AOI "
              f"{ms['aoi'] if ms.get('aoi') is None else round(ms['aoi'], 1)}")


def cmd_deploy_app(args) -> int:
    """The app as Streamlit in Snowflake (container runtime): upload the package, CREATE STREAMLIT, make it live."""
    import tempfile

    from pcb_pipeline.backends.snowflake import app_deploy
    from pcb_pipeline.backends.snowflake.config import from_env
    from pcb_pipeline.backends.snowflake.connect import connection_factory

    s = from_env()  # names every missing SNOWFLAKE_* variable; nothing connects yet
    overrides = {k: v for k, v in (("app_name", args.app_name), ("compute_pool", args.compute_pool),
                                   ("external_access_integration", args.eai)) if v}
    dep = app_deploy.AppDeployment.from_settings(s, **overrides)
    with tempfile.TemporaryDirectory(prefix="pcb-app-") as tmp:
        statements = app_deploy.deploy_statements(dep, app_deploy.build_app_folder(Path(tmp)))
        if args.dry_run:
            print(";\n".join(statements) + ";")
            return 0
        app_deploy.deploy(connection_factory(s), statements,
                          log=lambda st: print(st if not st.startswith("PUT ") else st[:160], flush=True))
    print(f"deployed Streamlit app {dep.qualified(dep.app_name)} (live version from @{dep.qualified(dep.stage)}/app)")
    return 0


def cmd_app(args) -> int:
    from pcb_pipeline.app.launch import launch

    return launch(host=args.host, port=args.port)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pcb-pipeline", description="PCB defect intelligence pipeline")
    p.add_argument("--debug", action="store_true", help="show the full traceback when a command fails (anywhere "
                                                      "on the line; or PCB_DEBUG=1)")
    sub = p.add_subparsers(dest="command", required=True)
    _add_demo(sub)

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

    ap = sub.add_parser("app", help="start the Streamlit app (Executive Dashboard, Vision Lab)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8501)
    ap.set_defaults(func=cmd_app)

    da = sub.add_parser("deploy-app", help="deploy the app as Streamlit in Snowflake (container runtime), from the "
                                           "SNOWFLAKE_* settings; run sql/setup/03_streamlit_app.sql first")
    da.add_argument("--dry-run", action="store_true", help="print every statement instead of running it")
    da.add_argument("--app-name", help="Streamlit object name (default PCB_DEFECT_APP)")
    da.add_argument("--compute-pool", help="CPU compute pool of the container runtime (default PCB_APP_POOL)")
    da.add_argument("--eai", help="external access integration to PyPI (default PCB_PYPI_EAI)")
    da.set_defaults(func=cmd_deploy_app)

    pr = sub.add_parser("predict", help="detect defects in board images")
    pr.add_argument("images", nargs="+")
    pr.add_argument("--weights", help="a .pt or .onnx file; default: the registered champion")
    pr.add_argument("--conf", type=float, default=0.25)
    pr.add_argument("--template", action="append", metavar="PATH",
                    help="a reference-aware model's template for each image, in order (default: <id>_temp.jpg or "
                         ".png beside <id>_test.jpg); test-image models ignore it")
    pr.add_argument("--json", action="store_true")
    pr.set_defaults(func=cmd_predict)

    _add_evaluate(sub)
    return p


def _add_demo(sub) -> None:
    d = sub.add_parser(
        "demo", help="run the whole pipeline once, in this process, on the embedded local default",
        description="Materialise every asset in one Dagster run on the embedded local default (DuckDB, a stage "
                    "folder, MLflow on sqlite, CPU training), whatever PCB_BACKEND says: land boards (seeded "
                    "synthetic ones unless --deeppcb-root), build the YOLO dataset, train, gate and register the "
                    "model, write DEFECT_LOGS for the held-out boards, build the SOP search corpus, then print the "
                    "champion and the golden query. State lives under PCB_HOME.")
    d.add_argument("--deeppcb-root", help="a Deep PCB folder (holding PCBData/); default: synthetic boards")
    d.add_argument("--profile", default=None,
                   help="training profile: verifier (the two-stage reference inspector, CPU; the default with "
                        "--deeppcb-root), demo (YOLOv12, CPU, 20 epochs at 320, ~10 min on 2 cores; the default on "
                        "synthetic boards), full (YOLOv12, GPU), smoke / verifier_smoke (tests)")
    d.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override one training setting of the profile, e.g. --set epochs=40 (ultralytics train args)")
    d.add_argument("--min-map50", type=float, default=None, help="promotion threshold (default 0.5)")
    d.add_argument("--input-mode", choices=INPUT_MODES, default=REFERENCE,
                   help="reference (default): the model sees board + template; test: the board image alone "
                        "(README, 'Reference-aware models')")
    d.set_defaults(func=cmd_demo)


def _add_evaluate(sub) -> None:
    e = sub.add_parser("evaluate", help="evaluate weights on a Deep PCB split file (ultralytics mAP, the Deep PCB "
                                        "protocol, the legacy AOI baseline at matched recall)")
    e.add_argument("--deeppcb-root", required=True)
    e.add_argument("--split", required=True, help="split file (path, or a name under DEEPPCB_ROOT/PCBData)")
    e.add_argument("--weights", help="a .pt or .onnx file; default: the registered champion")
    e.add_argument("--val-groups", action="store_true",
                   help="evaluate only the group-split validation part of the split (deeppcb.group_split)")
    e.add_argument("--val-fraction", type=float, default=0.2, help="with --val-groups: share of boards (0.2)")
    e.add_argument("--target-recall", type=float, action="append", metavar="R",
                   help="matched recall for the model-vs-AOI comparison besides the AOI's own (repeatable; default "
                        "0.90 and 0.99)")
    e.add_argument("--no-aoi", action="store_true", help="skip the legacy AOI baseline")
    e.add_argument("--aoi-workers", type=int, default=None, help="processes for the AOI baseline (default 2)")
    e.add_argument("--out", help="also write the JSON report to this file")
    e.add_argument("--publish", action="store_true",
                   help="store the report beside the champion on the stage (models/<run_id>/evaluation.json), "
                        "where the dashboard reads the false-call figures")
    e.add_argument("--json", action="store_true")
    e.set_defaults(func=cmd_evaluate)


def main(argv: list[str] | None = None) -> int:
    """Every failure ends in one sentence on stderr (exit 1); ``--debug`` (anywhere on the line) or PCB_DEBUG=1
    shows the traceback instead."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("PCB_DEBUG", "").strip().lower() in ("1", "true", "yes")
    argv = [a for a in argv if a != "--debug"]
    settings.configure()
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - the user gets one sentence; --debug gets the traceback
        if debug:
            raise
        print(f"error: {one_sentence(e)} (run with --debug for the traceback)", file=sys.stderr)
        return 1


def one_sentence(e: BaseException) -> str:
    """A failure as one line a user can act on: known causes in plain words, otherwise the message's first line."""
    from pcb_pipeline.backends.locks import is_lock_error

    if is_lock_error(e):
        return ("the warehouse is busy: another process (a pipeline run, the app) holds it for writing; try again "
                "when it finishes")
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    text = lines[0] if lines else type(e).__name__
    text = text if len(text) <= 300 else text[:297] + "..."
    ours = type(e).__module__.startswith("pcb_pipeline")  # our own errors are written as sentences already
    return text if ours or type(e).__name__ in text else f"{type(e).__name__}: {text}"


if __name__ == "__main__":
    sys.exit(main())
