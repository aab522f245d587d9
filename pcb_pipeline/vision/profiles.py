"""Training profiles. Deep PCB images are binary: colour jitter means nothing, flips and mosaic do."""
from __future__ import annotations

BINARY_BOARD_AUGMENT = {"hsv_h": 0.0, "hsv_s": 0.0, "hsv_v": 0.0, "fliplr": 0.5, "flipud": 0.5, "degrees": 0.0,
                        "mosaic": 1.0, "mixup": 0.0, "translate": 0.1, "scale": 0.3}

PROFILES: dict[str, dict] = {
    # CPU, a few minutes on 2 cores: small images, wall-clock budget enforced by ultralytics' `time` (hours).
    # Measured: mAP50 0.73 on a held-out synthetic group after 300 s (bench/RESULTS.md). batch 8: more steps/epoch.
    "demo": {"model": "yolo12n.yaml", "imgsz": 320, "epochs": 60, "batch": 8, "device": "cpu", "workers": 0,
             "time": 0.11, "patience": 100, "close_mosaic": 5, "lr0": 0.01, "warmup_epochs": 1, **BINARY_BOARD_AUGMENT},
    # One GPU (H100 / A10G): full resolution.
    "full": {"model": "yolo12n.yaml", "imgsz": 640, "epochs": 150, "batch": 32, "device": 0, "workers": 8,
             "cache": "ram", "time": 0.12, "patience": 200, "close_mosaic": 10, **BINARY_BOARD_AUGMENT},
    # Tests: seconds.
    "smoke": {"model": "yolo12n.yaml", "imgsz": 160, "epochs": 1, "batch": 8, "device": "cpu", "workers": 0,
              "patience": 100, **BINARY_BOARD_AUGMENT},
}


def resolve_profile(profile: str, overrides: dict | None = None) -> dict:
    if profile not in PROFILES:
        raise ValueError(f"unknown training profile {profile!r}: choose one of {sorted(PROFILES)}")
    return {**PROFILES[profile], **(overrides or {})}
