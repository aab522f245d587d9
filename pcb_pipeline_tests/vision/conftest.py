"""Fixtures for the vision tests: tiny smoke weights (.pt + .onnx) trained once per test session."""
from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def smoke_weights(tmp_path_factory, synthetic_root) -> Path:
    """best.pt (and best.onnx beside it) from the training entrypoint, smoke profile (1 epoch, imgsz 160), on the
    session's synthetic boards split by group. The model is barely trained: its boxes have low confidence, which is
    all parity and plumbing tests need."""
    from pcb_pipeline.core import deeppcb, yolo_format
    from pcb_pipeline.vision import train

    work = tmp_path_factory.mktemp("smoke_model")
    samples = deeppcb.read_split(synthetic_root / "PCBData" / "trainval.txt")
    tr, val = deeppcb.group_split(samples)
    ds = yolo_format.write_yolo_dataset({"train": tr, "val": val}, work / "dataset")
    out = work / "out"
    train.main(["--data", str(ds.root), "--profile", "smoke", "--out", str(out), "--run-name", "vision-tests"])
    assert (out / "best.pt").is_file() and (out / "best.onnx").is_file()
    return out / "best.pt"


@pytest.fixture(scope="session")
def smoke_onnx(smoke_weights) -> Path:
    return smoke_weights.with_suffix(".onnx")

