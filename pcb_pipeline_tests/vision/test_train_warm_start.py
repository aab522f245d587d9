"""`--set model=<weights>.pt` starts training from those weights (yolo12n.pt online, or an earlier run's best.pt)."""
from __future__ import annotations

import pytest
import torch


def _conv_weights(path) -> dict[str, torch.Tensor]:
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    state = (ckpt.get("ema") or ckpt["model"]).float().state_dict()
    return {k: v for k, v in state.items() if k.endswith("conv.weight")}


def _train_frozen(data, out, model: str) -> None:
    """One epoch with a learning rate of zero: the weights that come out are the weights training started from."""
    from pcb_pipeline.vision import train

    frozen = ["optimizer=SGD", "lr0=0", "momentum=0", "weight_decay=0", "warmup_epochs=0"]
    args = ["--data", str(data), "--profile", "smoke", "--out", str(out), "--no-onnx", "--set", f"model={model}"]
    train.main(args + [a for kv in frozen for a in ("--set", kv)])


@pytest.mark.parametrize("start", ["weights", "yaml"])
def test_training_starts_from_given_weights(start, smoke_weights, tmp_path):
    data = smoke_weights.parent.parent / "dataset"
    model = str(smoke_weights) if start == "weights" else "yolo12n.yaml"
    _train_frozen(data, tmp_path / "out", model)
    before, after = _conv_weights(smoke_weights), _conv_weights(tmp_path / "out" / "best.pt")
    assert before.keys() == after.keys() and len(before) > 10
    same = all(torch.allclose(before[k], after[k], atol=1e-3) for k in before)
    # From the .pt: kept exactly. From the yaml: a fresh network, not the trained one.
    assert same is (start == "weights")
