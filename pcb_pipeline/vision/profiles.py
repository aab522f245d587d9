"""Training profiles. Deep PCB images are binary: colour jitter means nothing, flips and mosaic do."""
from __future__ import annotations

from pcb_pipeline.core.reference import REFERENCE
from pcb_pipeline.vision.verifier import VERIFIER_KIND

BINARY_BOARD_AUGMENT = {"hsv_h": 0.0, "hsv_s": 0.0, "hsv_v": 0.0, "fliplr": 0.5, "flipud": 0.5, "degrees": 0.0,
                        "mosaic": 1.0, "mixup": 0.0, "translate": 0.1, "scale": 0.3}

PROFILES: dict[str, dict] = {
    # CPU, the embedded demo: a fixed, seeded amount of work (no wall-clock budget), so every machine trains the same
    # model and only the time differs. Synthetic reference pairs at 320 converge fast: 20 epochs reach mAP50 ~0.95 on
    # the held-out synthetic group, ~9.5 min on 2 cores (bench/RESULTS.md, "Demo model quality").
    "demo": {"model": "yolo12n.yaml", "imgsz": 320, "epochs": 20, "batch": 8, "device": "cpu", "workers": 0,
             "patience": 100, "close_mosaic": 5, "lr0": 0.01, "warmup_epochs": 1, "seed": 0, "deterministic": True,
             **BINARY_BOARD_AUGMENT},
    # One GPU (H100 / A10G), the recipe of bench/gpu_train.sh: full resolution and more (defects are small), a fixed
    # epoch count, early stop on patience, mosaic closed for the last third. Train on reference composites
    # (input_mode=reference) when boards come with templates.
    "full": {"model": "yolo12n.yaml", "imgsz": 960, "epochs": 90, "batch": 32, "device": 0, "workers": 8,
             "cache": "ram", "patience": 50, "close_mosaic": 30, "seed": 0, **BINARY_BOARD_AUGMENT},
    # The two-stage reference inspector (vision.verifier_training): the legacy AOI proposes candidates, a small CNN
    # trained from scratch on their crops calls each one a defect type or "no defect". Needs a reference-mode
    # dataset (boards with templates). CPU, a fixed number of epochs; the epoch with the best val mAP50 is kept
    # (with ema, the last one).
    # ema: the scored and kept network is a moving average of the weights (bench/VERIFIER_RESULTS.md, 2026-12-06:
    # +0.007 typed mAP, fewer false calls at both recalls, same training cost). invert: 30 % of the training crops
    # are shown as their polarity dual (copper and laminate swapped, types mapped): without it 4-6 of the 6 shorts
    # of a copper-pour validation group were missed, and there were 40-50 % more false calls (same file). A network
    # trained with it is stamped so, and serving also asks it about an unsure crop's dual (2026-12-08: typed F +0.002
    # on average over four networks).
    "verifier": {"kind": "verifier", "epochs": 40, "width": 32, "batch": 128, "lr": 2e-3, "seed": 0, "workers": 2,
                 "ema": 0.998, "invert": 0.3},
    # Tests: seconds.
    "verifier_smoke": {"kind": "verifier", "epochs": 2, "width": 8, "batch": 64, "lr": 2e-3, "seed": 0, "workers": 1},
    "smoke": {"model": "yolo12n.yaml", "imgsz": 160, "epochs": 1, "batch": 8, "device": "cpu", "workers": 0,
              "patience": 100, **BINARY_BOARD_AUGMENT},
}


def resolve_profile(profile: str, overrides: dict | None = None) -> dict:
    if profile not in PROFILES:
        raise ValueError(f"unknown training profile {profile!r}: choose one of {sorted(PROFILES)}")
    return {**PROFILES[profile], **(overrides or {})}


def check_profile_for_dataset(profile: str, input_mode: str) -> dict:
    """The resolved profile, or ValueError when it cannot train on a dataset of this input mode (the two-stage
    inspector compares each board with its template: it needs reference composites)."""
    params = resolve_profile(profile)
    if params.get("kind") == VERIFIER_KIND and input_mode != REFERENCE:
        raise ValueError(f"profile {profile!r} trains the two-stage reference inspector, which compares each board "
                         f"with its template, but the dataset holds {input_mode!r} images: build it with "
                         f"input_mode=reference (yolo_dataset's config)")
    return params


def training_device(requested, cuda_devices: int, batch: int) -> tuple[str | int, int, str]:
    """(device, batch, why) for ultralytics' train(): a GPU profile on a node with several GPUs trains on all of
    them (ultralytics' DDP mode, device "0,1,2,3"; the batch rounded to a multiple of the GPU count, as DDP splits
    it evenly); without a GPU it says so and trains on the CPU; "cpu" and explicit lists ("0,1") are kept."""
    text = str(requested).strip().lower()
    if text == "cpu" or "," in text:
        return requested, batch, f"device {requested} as configured"
    if cuda_devices <= 0:
        return "cpu", batch, f"device {requested} requested but no CUDA device is visible: training on the CPU"
    if cuda_devices == 1 or text not in ("0", "cuda", "auto", ""):
        return (0 if text in ("cuda", "auto", "") else requested), batch, "one GPU"
    if batch < 1:  # ultralytics' auto-batch: left as asked (ultralytics itself refuses it under DDP, clearly)
        return ",".join(str(i) for i in range(cuda_devices)), batch, f"all {cuda_devices} GPUs of this node (DDP)"
    per_gpu = max(1, int(batch) // cuda_devices)
    return ",".join(str(i) for i in range(cuda_devices)), per_gpu * cuda_devices, \
        f"all {cuda_devices} GPUs of this node (DDP), batch {per_gpu * cuda_devices}"
