#!/usr/bin/env bash
# GPU training recipe for Deep PCB (issue 7 item 3): install the carried wheels, go offline, run bench/gpu_train.py.
#
# On the lent GPU machine (repo root, carry [".whl", ".gpu_data"]; prepare here first with
#   .venv/bin/python bench/gpu_pack_data.py   and the wheels in .whl, see bench/GPU_RESULTS.md):
#   bash bench/gpu_train.sh
# Local CPU check of the whole path (1 epoch at 160 on 16+8 images, the venv instead of the wheels):
#   GPU_TRAIN_SMOKE=1 PY=.venv/bin/python GPU_TRAIN_NO_WHEELS=1 OUT=/tmp/gpu_smoke_out bash bench/gpu_train.sh
#
# Environment: OUT (results folder, default /tmp/gpu_out), PY (python, default python3), GPU_TRAIN_HOURS (training
# wall cap in hours, default 0.1), GPU_DATA (packed Deep PCB, default .gpu_data/deeppcb), GPU_TRAIN_SMOKE=1,
# GPU_TRAIN_NO_WHEELS=1 (use the interpreter's own packages).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu_out}
PY=${PY:-python3}
mkdir -p "$OUT"
export OUT PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
# offline: ultralytics must not reach for the network (import-time checks, fonts, AMP-check weights, installs)
export YOLO_OFFLINE=1 YOLO_AUTOINSTALL=false ULTRALYTICS_SKIP_REQUIREMENTS_CHECKS=1 YOLO_VERBOSE=true
export HF_HUB_OFFLINE=1 WANDB_DISABLED=true CLEARML_OFF=1 COMET_MODE=disabled MLFLOW_DISABLE_TELEMETRY=true DO_NOT_TRACK=1
export YOLO_CONFIG_DIR=${YOLO_CONFIG_DIR:-/tmp/gpu_yolo_cfg}
export MPLCONFIGDIR=${MPLCONFIGDIR:-/tmp/gpu_mpl}

{
  echo "[gpu_train.sh] $(date -u +%FT%TZ) host $(hostname) python $($PY -V 2>&1)"
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  df -h /dev/shm /tmp 2>/dev/null | tail -n +2
  if [ -z "${GPU_TRAIN_NO_WHEELS:-}" ]; then
    ls .whl/*.whl >/dev/null 2>&1 || { echo "[gpu_train.sh] no wheels in .whl (carry it)"; exit 4; }
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
      || { echo "[gpu_train.sh] wheel install failed"; exit 5; }
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
    echo "[gpu_train.sh] wheels installed into /tmp/site: $(ls .whl | tr '\n' ' ')"
  fi
  # ultralytics wants Arial.ttf (dataset checks, plots) and would download it: any TTF will do
  mkdir -p "$YOLO_CONFIG_DIR/Ultralytics"
  if [ ! -f "$YOLO_CONFIG_DIR/Ultralytics/Arial.ttf" ]; then
    ttf=$($PY -c "import matplotlib, pathlib; print(pathlib.Path(matplotlib.get_data_path(), 'fonts/ttf/DejaVuSans.ttf'))" 2>/dev/null)
    if [ -n "$ttf" ] && [ -f "$ttf" ]; then cp "$ttf" "$YOLO_CONFIG_DIR/Ultralytics/Arial.ttf"; else echo "[gpu_train.sh] no TTF found: plots stay off"; fi
  fi
  $PY -c "import ultralytics, torch; print('[gpu_train.sh] ultralytics', ultralytics.__version__, 'from', ultralytics.__file__, '| torch', torch.__version__, 'cuda', torch.cuda.is_available())" \
    || { echo "[gpu_train.sh] ultralytics does not import"; exit 6; }
  $PY bench/gpu_train.py "$@"
  rc=$?
  echo "[gpu_train.sh] gpu_train.py exit $rc; files in $OUT: $(ls "$OUT" | tr '\n' ' ')"
  exit $rc
} 2>&1 | tee "$OUT/train.log"
exit "${PIPESTATUS[0]}"
