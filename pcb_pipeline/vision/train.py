"""Training entrypoint: the one payload that runs locally (subprocess) and unchanged as a Snowflake ML Job.

    python -m pcb_pipeline.vision.train --data DATASET_DIR --profile demo --out OUT_DIR [--set key=value ...]

Writes OUT_DIR/best.pt, OUT_DIR/best.onnx (unless --no-onnx), OUT_DIR/metrics.json and logs params, per-epoch
metrics, plots and weights to the MLflow tracking server in MLFLOW_TRACKING_URI. A profile of kind "verifier"
trains the two-stage reference inspector (vision.verifier_training) instead of a YOLO, with the same outputs.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file (ML Job entrypoint): make the package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from pcb_pipeline import settings  # noqa: E402
from pcb_pipeline.core.classes import CLASS_NAMES  # noqa: E402
from pcb_pipeline.core.progress import clock  # noqa: E402
from pcb_pipeline.core.yolo_format import dataset_input_mode  # noqa: E402
from pcb_pipeline.vision.detector import stamp_input_mode  # noqa: E402
from pcb_pipeline.vision.profiles import resolve_profile, training_device  # noqa: E402
from pcb_pipeline.vision.verifier import VERIFIER_KIND  # noqa: E402

EXPERIMENT = os.environ.get("PCB_MLFLOW_EXPERIMENT", "pcb_defect_detector")


def _parse_value(text: str):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False, "none": None}.get(text.lower(), text)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, type=Path, help="YOLO dataset folder holding data.yaml")
    p.add_argument("--profile", default="demo")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--run-name", default=None)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="ultralytics train() override")
    p.add_argument("--no-onnx", action="store_true")
    args = p.parse_args(argv)
    try:
        args.overrides = parse_overrides(args.set)
    except ValueError as exc:
        p.error(str(exc))
    return args


def parse_overrides(pairs: list[str]) -> dict:
    """`--set KEY=VALUE` pairs as typed ultralytics train() arguments."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set takes KEY=VALUE, got {pair!r}")
        out[key.strip()] = _parse_value(value.strip())
    return out


def _mlflow_callbacks(mlflow):
    started = time.time()

    def on_fit_epoch_end(trainer):
        if os.environ.get("RANK") is not None or os.environ.get("LOCAL_RANK") is not None:
            return  # a DDP worker (callbacks are pickled into them): the parent logs results.csv instead
        step = trainer.epoch + 1
        if step > trainer.epochs:  # ultralytics' final validation of best.pt fires this once more; not an epoch
            return
        elapsed = time.time() - started
        eta = elapsed / step * (trainer.epochs - step)
        losses = trainer.label_loss_items(trainer.tloss, prefix="train")
        metrics = {**trainer.lr, **losses, **trainer.metrics}
        mlflow.log_metrics({k.replace("(", "_").replace(")", ""): float(v) for k, v in metrics.items()}, step=step)
        print(f"epoch {step}/{trainer.epochs}: box_loss {float(losses.get('train/box_loss', float('nan'))):.3f}  "
              f"mAP50 {trainer.metrics.get('metrics/mAP50(B)', float('nan')):.3f}  "
              f"mAP50-95 {trainer.metrics.get('metrics/mAP50-95(B)', float('nan')):.3f}  "
              f"elapsed {clock(elapsed)}  ETA {clock(eta)}", flush=True)

    return {"on_fit_epoch_end": on_fit_epoch_end}


def _cuda_devices() -> int:
    try:
        import torch

        return torch.cuda.device_count()
    except Exception:  # noqa: BLE001 - no torch CUDA build: CPU
        return 0


def _results_rows(save_dir: Path) -> int:
    path = save_dir / "results.csv"
    return max(0, len(path.read_text().splitlines()) - 1) if path.is_file() else 0


def log_results_csv(mlflow, results_csv: Path) -> int:
    """Per-epoch metrics from ultralytics' results.csv (used under DDP: the trainer runs in worker processes, where
    our callback stands down because they have no MLflow run); returns epochs logged."""
    import csv

    if not results_csv.is_file():
        return 0
    with results_csv.open() as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        step = int(float(row.get("epoch", 0)))
        metrics = {k.strip().replace("(", "_").replace(")", ""): float(v) for k, v in row.items()
                   if k and k.strip() != "epoch" and v not in ("", None)}
        mlflow.log_metrics(metrics, step=step)
    return len(rows)


def evaluation_metrics(val_metrics) -> dict[str, float]:
    """Flatten an ultralytics DetMetrics into plain floats, per-class AP50 included."""
    box = val_metrics.box
    out = {"map50": float(box.map50), "map50_95": float(box.map), "precision": float(box.mp),
           "recall": float(box.mr)}
    ap50_by_class = dict(zip(box.ap_class_index.tolist(), box.ap50.tolist()))
    ap_by_class = dict(zip(box.ap_class_index.tolist(), box.ap.tolist()))
    for i, name in enumerate(CLASS_NAMES):
        if i in ap50_by_class:
            out[f"ap50_{name}"] = float(ap50_by_class[i])
            out[f"ap50_95_{name}"] = float(ap_by_class[i])
    return out


def _ensure_experiment(mlflow) -> None:
    """With a sqlite store MLflow would put artifacts in ./mlruns of whatever folder we run in: keep them in PCB_HOME."""
    if mlflow.get_experiment_by_name(EXPERIMENT) is None:
        local_store = mlflow.get_tracking_uri().startswith("sqlite:")
        mlflow.create_experiment(EXPERIMENT, artifact_location=settings.paths().mlflow_artifacts.as_uri()
                                 if local_store else None)
    mlflow.set_experiment(EXPERIMENT)


def train(args: argparse.Namespace) -> dict:
    settings.configure()
    params = resolve_profile(args.profile, args.overrides)
    result = train_verifier(args, params) if params.get("kind") == VERIFIER_KIND else train_yolo(args, params)
    (args.out / "metrics.json").write_text(json.dumps(result, indent=2))
    print("PCB_TRAINING_RESULT " + json.dumps(result), flush=True)
    return result


def train_verifier(args: argparse.Namespace, params: dict) -> dict:
    """The two-stage reference inspector (vision.verifier_training), in an MLflow run like the YOLO's."""
    import mlflow

    from pcb_pipeline.vision.verifier_training import train_two_stage

    args.out.mkdir(parents=True, exist_ok=True)
    _ensure_experiment(mlflow)
    with mlflow.start_run(run_name=args.run_name) as run:
        mlflow.log_params({"profile": args.profile, "model": "two-stage reference inspector (AOI + verifier)",
                           "input_mode": dataset_input_mode(args.data)})
        mlflow.set_tags({"pcb.entrypoint": "pcb_pipeline.vision.train", "pcb.dataset": str(args.data),
                         "pcb.kind": VERIFIER_KIND})
        result = train_two_stage(args.data, args.out, params, mlflow, log=lambda s: print(s, flush=True))
        mlflow.log_metrics({f"final_{k}": v for k, v in result["metrics"].items()})
        for name in ("best.pt", "best.onnx"):
            mlflow.log_artifact(str(args.out / name), artifact_path="weights")
        return {"run_id": run.info.run_id, "profile": args.profile, **result}


def train_yolo(args: argparse.Namespace, params: dict) -> dict:
    """YOLOv12 by ultralytics, from its yaml (or a warm-start .pt)."""
    import mlflow
    from ultralytics import YOLO
    from ultralytics import settings as yolo_settings

    # Its own integrations would open a second MLflow run (in ./mlflow.db) and phone home; we log ourselves.
    quiet = {"mlflow": False, "wandb": False, "tensorboard": False, "clearml": False, "comet": False, "dvc": False,
             "raytune": False, "sync": False, "vscode_msg": False, "openvino_msg": False}
    yolo_settings.update({k: v for k, v in quiet.items() if k in yolo_settings})
    params["device"], params["batch"], why = training_device(params["device"], _cuda_devices(), params["batch"])
    print(f"training on {why}", flush=True)
    model_cfg = params.pop("model")
    data_yaml = (args.data / "data.yaml").resolve()
    if not data_yaml.is_file():
        raise FileNotFoundError(f"no data.yaml in {args.data}")
    input_mode = dataset_input_mode(args.data)  # what the images are: test images or reference composites
    args.out.mkdir(parents=True, exist_ok=True)
    project = (args.out / "ultralytics").resolve()
    shutil.rmtree(project, ignore_errors=True)

    _ensure_experiment(mlflow)
    with mlflow.start_run(run_name=args.run_name) as run:
        mlflow.log_params({"profile": args.profile, "model": model_cfg, "input_mode": input_mode, **params})
        mlflow.set_tags({"pcb.entrypoint": "pcb_pipeline.vision.train", "pcb.dataset": str(args.data)})
        model = YOLO(model_cfg)
        # A weights file (yolo12n.pt, an earlier best.pt) is a warm start: with pretrained=False ultralytics would
        # rebuild the network from its yaml and silently drop those weights.
        warm_start = Path(str(model_cfg)).suffix == ".pt"
        for event, fn in _mlflow_callbacks(mlflow).items():
            model.add_callback(event, fn)
        started = time.time()
        # amp=False: on CUDA ultralytics' AMP check downloads yolo26n.pt, which fails offline.
        model.train(data=str(data_yaml), project=str(project), name="train", exist_ok=True, amp=params.pop("amp", False),
                    pretrained=warm_start, plots=True, verbose=False, **params)
        train_seconds = time.time() - started
        save_dir = Path(model.trainer.save_dir)
        if "," in str(params["device"]):  # DDP: the callbacks ran in the workers, not here
            log_results_csv(mlflow, save_dir / "results.csv")
        best = save_dir / "weights" / "best.pt"
        shutil.copyfile(best, args.out / "best.pt")
        stamp_input_mode(args.out / "best.pt", input_mode)  # the Detector reads it: a reference model needs templates

        best_model = YOLO(str(args.out / "best.pt"))
        val = best_model.val(data=str(data_yaml), split="val", imgsz=params["imgsz"], batch=params["batch"],
                             device=str(params["device"]).split(",")[0], plots=False, verbose=False,
                             project=str(project), name="val")  # validation runs on one device
        metrics = evaluation_metrics(val)
        metrics["train_seconds"] = train_seconds
        # under DDP the parent never runs the epoch loop (no trainer.epoch): count results.csv's rows
        metrics["epochs_completed"] = float(getattr(model.trainer, "epoch", _results_rows(save_dir) - 1) + 1)
        mlflow.log_metrics({f"final_{k}": v for k, v in metrics.items()})

        onnx_path = None
        if not args.no_onnx:
            exported = best_model.export(format="onnx", imgsz=params["imgsz"], dynamic=False, simplify=True,
                                         device="cpu")
            onnx_path = args.out / "best.onnx"
            if Path(exported).resolve() != onnx_path.resolve():
                shutil.copyfile(exported, onnx_path)
            stamp_input_mode(onnx_path, input_mode)
        for f in save_dir.glob("*"):
            if f.suffix in {".png", ".jpg", ".csv", ".yaml"}:
                mlflow.log_artifact(str(f), artifact_path="training")
        mlflow.log_artifact(str(args.out / "best.pt"), artifact_path="weights")
        if onnx_path:
            mlflow.log_artifact(str(onnx_path), artifact_path="weights")
        return {"run_id": run.info.run_id, "metrics": metrics, "imgsz": params["imgsz"], "profile": args.profile,
                "input_mode": input_mode, "kind": "yolo", "weights": "best.pt",
                "onnx": "best.onnx" if onnx_path else None}


def main(argv: list[str] | None = None) -> int:
    train(parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
