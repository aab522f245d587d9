"""Stage 2 of the two-stage reference inspector: a small CNN, trained from scratch, that looks at each AOI
candidate crop (test, template, difference; ``core.candidates``) and says which defect it is, or none, and where
its box lies. Together with stage 1 it is a model of its own kind ("verifier") behind the one ``Detector``.

Saved as a weights-only torch checkpoint (state dict + JSON config, no pickled code) and as ONNX (metadata
``pcb_kind=verifier``, ``pcb_input=reference``); served by ONNX Runtime.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from concurrent.futures import ProcessPoolExecutor
from typing import Callable, Sequence

import numpy as np

from pcb_pipeline.core import candidates as cands
from pcb_pipeline.core.classes import CLASS_ID, CLASS_NAMES, NUM_CLASSES, POLARITY_DUAL

VERIFIER_KIND = "verifier"
KIND_KEY = "pcb_kind"
# Suppression of overlapping calls, per predicted class: a call whose intersection with a kept call of the same type
# exceeds NMS_OVERLAP of the smaller box, both grown by MERGE_GAP pixels, is merged into it, and the kept box becomes
# the box around its whole cluster. Fragment candidates of one defect were most of the false calls under IoU 0.5
# class-agnostic NMS (overlap chosen on out-of-fold predictions of the training groups,
# bench/verifier_runs/2026-12-04_diagnosis/); the fragments of one long open or spur lie end to end, a few pixels
# apart, and each covers a part of it, so their union is the defect (the score-weighted mean box of the cluster was
# a fragment-sized box; bench/VERIFIER_RESULTS.md, 2026-12-06: fewer false calls on four models).
NMS_OVERLAP = 0.2
MERGE_GAP = 4.0
# A crop whose most likely class is below this is also judged by its other views (three flips, and its polarity dual
# when the network learnt it; > 1: every crop). On the validation groups, the 2026-12-07 demo champion:
# 13 % of the crops flipped, the same typed mAP 0.991 / F 0.9886 and false calls as flipping all (from 0.98 to 0.999
# alike; 0.95 starts to lose), 42 ms per board served instead of 58
# (bench/verifier_runs/2026-12-07_demo_verifier_blocks/flip_sure.json).
FLIP_SURE = 0.99
# Metadata key (checkpoint config and ONNX): the share of training crops shown as their polarity dual. A network
# trained with it (> 0) is also asked about the dual of an unsure crop; one trained without it never saw such a view.
INVERT_KEY = "invert"


# ------------------------------------------------------------------------------------------------ crops

@dataclass
class CropSet:
    """Candidate crops of many boards: inputs, targets, and where each came from."""

    crops: np.ndarray  # (N, 3, CROP, CROP) uint8
    scales: np.ndarray  # (N,) float32: log window side
    labels: np.ndarray  # (N,) int64: 0..5, or BACKGROUND
    boxes: np.ndarray  # (N, 4) float32: true box in window coordinates
    board: np.ndarray  # (N,) int64: index of the board
    windows: np.ndarray  # (N, 4) float64
    candidate_boxes: np.ndarray  # (N, 4) float64


def board_crops(composite: np.ndarray, ground_truth=()) -> tuple[list[cands.Candidate], np.ndarray, np.ndarray,
                                                                  np.ndarray, np.ndarray]:
    found = cands.propose(composite)
    crops = np.stack([cands.crop(composite, c.window).transpose(2, 0, 1) for c in found]) if found else \
        np.zeros((0, 3, cands.CROP, cands.CROP), np.uint8)
    scales = np.array([cands.window_scale(c.window) for c in found], dtype=np.float32)
    labels, boxes = cands.targets(found, list(ground_truth))
    return found, crops, scales, labels, boxes


def _board_parts(item, load: Callable | None):
    composite, gt = load(item) if load else item
    return board_crops(composite, gt)


def build_crop_set(boards: Sequence, log: Callable[[str], None] = print, workers: int = 1,
                   load: Callable | None = None) -> CropSet:
    """Crops and targets of many boards, in board order: `boards` holds (composite, ground truth rows) pairs, or
    items that `load` (a module-level function, so worker processes can run it) turns into such pairs."""
    from functools import partial

    from pcb_pipeline.core.progress import Progress

    parts: dict[str, list] = {k: [] for k in CropSet.__dataclass_fields__}
    progress = Progress("verifier crops", len(boards), log)
    pool = ProcessPoolExecutor(workers) if workers > 1 else None
    try:
        results = (pool.map(partial(_board_parts, load=load), boards, chunksize=8) if pool
                   else (_board_parts(b, load) for b in boards))
        for i, (found, crops, scales, labels, boxes) in enumerate(results):
            parts["crops"].append(crops)
            parts["scales"].append(scales)
            parts["labels"].append(labels)
            parts["boxes"].append(boxes)
            parts["board"].append(np.full(len(found), i, dtype=np.int64))
            parts["windows"].append(np.array([c.window for c in found], dtype=np.float64).reshape(-1, 4))
            parts["candidate_boxes"].append(np.array([c.box for c in found], dtype=np.float64).reshape(-1, 4))
            progress.step()
    finally:
        if pool:
            pool.shutdown()
    return CropSet(**{k: np.concatenate(v) for k, v in parts.items()})


# ------------------------------------------------------------------------------------------------ network

def build_network(width: int = 32, stem_stride: int = 2):
    import torch
    from torch import nn

    def block(cin, cout):
        return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                             nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))

    class Verifier(nn.Module):
        """(crops uint8-range float, log scale) -> (7 class logits, 4 box coordinates in the window, 0..1)."""

        def __init__(self):
            super().__init__()
            w = width  # a strided stem reads the 64 px crop at 32 px onwards (4x fewer operations than stride 1)
            self.features = nn.Sequential(nn.Conv2d(3, w // 2, 3, stride=stem_stride, padding=1, bias=False),
                                          nn.BatchNorm2d(w // 2), nn.ReLU(inplace=True),
                                          block(w // 2, w), nn.MaxPool2d(2), block(w, 2 * w), nn.MaxPool2d(2),
                                          block(2 * w, 4 * w), nn.AdaptiveAvgPool2d(1), nn.Flatten())
            self.head = nn.Sequential(nn.Linear(4 * w + 1, 128), nn.ReLU(inplace=True))
            self.classes = nn.Linear(128, NUM_CLASSES + 1)
            self.box = nn.Linear(128, 4)

        def forward(self, crops, scales):
            x = self.features(crops / 255.0)
            h = self.head(torch.cat([x, scales], dim=1))
            return self.classes(h), torch.sigmoid(self.box(h))

    return Verifier()


# class index -> its polarity dual's (background stays background)
DUAL_LABEL = np.array([CLASS_ID[POLARITY_DUAL[name]] for name in CLASS_NAMES] + [cands.BACKGROUND], np.int64)


def polarity_dual(crops, labels, chosen):
    """Crops `chosen` (bool, per crop) with copper and laminate swapped in the test and template channels (the
    difference channel is unchanged: |(255 - a) - (255 - b)| = |a - b|), their labels mapped to the dual type."""
    import torch

    flip = chosen[:, None, None, None] & (torch.arange(3) < 2)[None, :, None, None]
    return torch.where(flip, 255.0 - crops, crops), torch.where(chosen, torch.from_numpy(DUAL_LABEL)[labels], labels)


def polarity_inverted(crops: np.ndarray) -> np.ndarray:
    """(N, 3, H, W) crops with copper and laminate swapped in the test and template channels: `polarity_dual`'s
    pixels, for inference (numpy, no labels)."""
    out = crops.copy()
    out[:, :2] = 255 - out[:, :2]
    return out


def reads_polarity_dual(metadata: dict) -> bool:
    """Whether a saved verifier (its checkpoint config or ONNX metadata) was trained on polarity-dual crops."""
    return float(metadata.get(INVERT_KEY) or 0) > 0


def _augment(crops, boxes, generator):
    """Random flips and quarter turns of the whole batch, boxes moved with the pixels (defect types are invariant)."""
    import torch

    if torch.rand(1, generator=generator).item() < 0.5:  # horizontal flip
        crops = crops.flip(3)
        boxes = torch.stack([1 - boxes[:, 2], boxes[:, 1], 1 - boxes[:, 0], boxes[:, 3]], 1)
    if torch.rand(1, generator=generator).item() < 0.5:  # vertical flip
        crops = crops.flip(2)
        boxes = torch.stack([boxes[:, 0], 1 - boxes[:, 3], boxes[:, 2], 1 - boxes[:, 1]], 1)
    if torch.rand(1, generator=generator).item() < 0.5:  # transpose (with the flips: all 8 symmetries)
        crops = crops.transpose(2, 3)
        boxes = boxes[:, [1, 0, 3, 2]]
    return crops, boxes


@dataclass
class VerifierTrainConfig:
    epochs: int = 30
    batch: int = 128
    lr: float = 2e-3
    weight_decay: float = 1e-4
    width: int = 32
    seed: int = 0
    box_weight: float = 5.0
    # 2: the first convolution halves the crop's resolution; 1 keeps every pixel (a thin spur is 2-4 px wide) at
    # 4x the cost of the same width
    stem_stride: int = 2
    # > 0: the network scored and returned is an exponential moving average of the weights (this decay per step)
    ema: float = 0.0
    threads: int | None = None
    # Each epoch re-crops every candidate from its board with the window moved by up to `jitter` of its side and
    # scaled by up to exp(+-jitter) (needs the boards' composites), so the verifier does not learn one framing.
    jitter: float = 0.0
    # Share of training crops shown as their polarity dual (`polarity_dual`), so a layout style the training
    # groups lack (copper pour vs thin traces) is seen through the defects of the other style.
    invert: float = 0.0

    @property
    def dual_views(self) -> bool:
        """Whether the network trained is also asked about an unsure crop's polarity dual (`predict_with_flips`)."""
        return self.invert > 0


def jittered_crops(composites: Sequence[np.ndarray], cs: CropSet, idx: np.ndarray, jitter: float,
                   rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(crops, log scales, true boxes in the new windows) of crop-set entries `idx`, each re-cropped from its board
    (composites[cs.board[i]]) through a randomly moved and scaled window."""
    n = len(idx)
    windows = cs.windows[idx]
    side = windows[:, 2] - windows[:, 0]
    new_side = side * np.exp(rng.uniform(-jitter, jitter, n))
    centre = (windows[:, :2] + windows[:, 2:]) / 2 + rng.uniform(-jitter, jitter, (n, 2)) * side[:, None]
    new = np.concatenate([centre - new_side[:, None] / 2, centre + new_side[:, None] / 2], 1)
    crops = np.stack([cands.crop(composites[cs.board[i]], w).transpose(2, 0, 1) for i, w in zip(idx, new)])
    scales = np.array([cands.window_scale(w) for w in new], dtype=np.float32)
    boxes = np.array([cands.to_window(cands.from_window(b, w), nw) if lab != cands.BACKGROUND else np.zeros(4)
                      for b, w, nw, lab in zip(cs.boxes[idx], windows, new, cs.labels[idx])], dtype=np.float32)
    return crops, scales, boxes


def _class_weights(labels):
    """Classes are unbalanced (many background candidates): weights by inverse square-root frequency, mean 1."""
    import torch

    counts = torch.bincount(labels, minlength=NUM_CLASSES + 1).float().clamp(min=1)
    weight = (counts.sum() / counts).sqrt()
    return weight / weight.mean()


def train_verifier(train: CropSet, cfg: VerifierTrainConfig, val: CropSet | None = None,
                   on_epoch: Callable[[int, dict, object], None] | None = None,
                   composites: Sequence[np.ndarray] | None = None):
    """A fixed, seeded amount of work (epochs), the same on any machine. Returns the network (eval mode);
    `on_epoch(epoch, metrics, net)` sees the network after each epoch (in eval mode; training resumes after).
    `composites` (the boards of `train`, by board index) are needed for `cfg.jitter`."""
    import torch
    from torch.nn import functional as F

    torch.manual_seed(cfg.seed)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    gen = torch.Generator().manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    if cfg.jitter and composites is None:
        raise ValueError("window jitter re-crops candidates from their boards: pass the training composites")
    net = build_network(cfg.width, cfg.stem_stride)
    averaged = WeightAverage(net, cfg.ema) if cfg.ema else None
    x = torch.from_numpy(train.crops).float()
    s = torch.from_numpy(train.scales)[:, None]
    y = torch.from_numpy(train.labels)
    b = torch.from_numpy(train.boxes)

    def batch_inputs(idx):
        if not cfg.jitter:
            return x[idx], s[idx], b[idx]
        crops, scales, targets = jittered_crops(composites, train, idx.numpy(), cfg.jitter, rng)
        return torch.from_numpy(crops).float(), torch.from_numpy(scales)[:, None], torch.from_numpy(targets)

    class_weight = _class_weights(y)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps = cfg.epochs * max(1, (len(x) + cfg.batch - 1) // cfg.batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=steps, pct_start=0.15)
    for epoch in range(1, cfg.epochs + 1):
        net.train()
        order = torch.randperm(len(x), generator=gen)
        total = {"loss": 0.0, "cls_loss": 0.0, "box_loss": 0.0}
        for i in range(0, len(x), cfg.batch):
            idx = order[i:i + cfg.batch]
            xb, sb, bb = batch_inputs(idx)
            xb, bb = _augment(xb, bb, gen)
            yb = y[idx]
            if cfg.invert:
                xb, yb = polarity_dual(xb, yb, torch.rand(len(idx), generator=gen) < cfg.invert)
            logits, boxes = net(xb, sb)
            cls_loss = F.cross_entropy(logits, yb, weight=class_weight)
            pos = yb != cands.BACKGROUND
            box_loss = F.l1_loss(boxes[pos], bb[pos]) if pos.any() else boxes.sum() * 0
            loss = cls_loss + cfg.box_weight * box_loss
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            if averaged:
                averaged.update(net)
            n = len(idx)
            total["loss"] += loss.item() * n
            total["cls_loss"] += cls_loss.item() * n
            total["box_loss"] += box_loss.item() * n
        metrics = {k: v / len(x) for k, v in total.items()}
        scored = averaged.net if averaged else net
        if val is not None and len(val.labels):
            probs, _ = predict_crops(scored, val.crops, val.scales, dual=cfg.dual_views)
            metrics["val_accuracy"] = float((probs.argmax(1) == val.labels).mean())
        if on_epoch:
            scored.eval()
            on_epoch(epoch, metrics, scored)
    scored = averaged.net if averaged else net
    scored.eval()
    return scored


class WeightAverage:
    """An exponential moving average of a network's weights (batch-norm statistics averaged too), in a copy of it.

    The decay warms up as min(decay, (1 + n) / (10 + n)) over the n updates so far: with a fixed 0.998 from step
    one the random initial weights would still weigh a third after 500 steps, and an average of weights that far
    apart is not a working network.
    """

    def __init__(self, net, decay: float):
        import copy

        self.net, self.decay, self.updates = copy.deepcopy(net), decay, 0
        for p in self.net.parameters():
            p.requires_grad_(False)

    def current_decay(self) -> float:
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    def update(self, net) -> None:
        import torch

        decay = self.current_decay()
        self.updates += 1
        with torch.no_grad():
            for avg, cur in zip(self.net.state_dict().values(), net.state_dict().values()):
                if avg.dtype.is_floating_point:
                    avg.mul_(decay).add_(cur.detach(), alpha=1 - decay)
                else:
                    avg.copy_(cur)


def flipped_views(crops: np.ndarray) -> np.ndarray:
    """(3N, 3, H, W): (N, 3, H, W) crops flipped left-right, top-bottom, and both (a defect's type does not change
    under a flip)."""
    return np.concatenate([crops[..., ::-1], crops[..., ::-1, :], crops[..., ::-1, ::-1]])


def predict_with_flips(run: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]], crops: np.ndarray,
                       scales: np.ndarray, sure: float = FLIP_SURE,
                       dual: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Class probabilities (N, 7) and boxes (N, 4) of crops through ``run`` (crops, scales) -> (probabilities,
    boxes): a crop whose most likely class is below ``sure`` takes the mean probabilities over itself and its three
    flips (`flipped_views`), and with ``dual`` (a network trained on polarity duals, `reads_polarity_dual`) also over
    its polarity dual, whose call is mapped back to the crop's types (`DUAL_LABEL`: the dual of a short reads as an
    open). The box is always the crop's own. ``sure`` > 1: every crop.

    Flips on every crop: on the validation groups, one model, typed mAP 0.989 -> 0.991, F 0.987 -> 0.990, false calls
    per board at recall 0.99 0.055 -> 0.045 (bench/VERIFIER_RESULTS.md, 2026-12-06), at 4x the network's cost. A crop
    the network is sure of keeps its call under the flips, so only the others pay for them (`FLIP_SURE`). The dual
    view: on four networks trained with the dual, typed F +0.002 on average (-0.0004 to +0.0025), mAP +0.001; the
    dual's flips as well gained more on three and lost 0.003 on the fourth (bench/VERIFIER_RESULTS.md, 2026-12-08)."""
    probs, boxes = run(crops, scales)
    unsure = np.flatnonzero(probs.max(1) < sure)
    if unsure.size:
        views = flipped_views(crops[unsure])
        if dual:
            views = np.concatenate([views, polarity_inverted(crops[unsure])])
        n = len(views) // unsure.size
        seen, _ = run(views, np.tile(scales[unsure], n))
        seen = seen.reshape(n, unsure.size, -1)
        if dual:
            seen[3] = seen[3][:, DUAL_LABEL]
        probs[unsure] = (probs[unsure] + seen.sum(0)) / (n + 1)
    return probs, boxes


def predict_crops(net, crops: np.ndarray, scales: np.ndarray, batch: int = 256, sure: float = FLIP_SURE,
                  dual: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Class probabilities (N, 7) and boxes in window coordinates (N, 4) from the torch network
    (`predict_with_flips`)."""
    import torch

    def run(views: np.ndarray, view_scales: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        probs, boxes = [], []
        for i in range(0, len(views), batch):
            logits, bx = net(torch.from_numpy(np.ascontiguousarray(views[i:i + batch])).float(),
                             torch.from_numpy(view_scales[i:i + batch])[:, None])
            probs.append(torch.softmax(logits, 1).numpy())
            boxes.append(bx.numpy())
        return np.concatenate(probs), np.concatenate(boxes)

    if not len(crops):
        return np.zeros((0, NUM_CLASSES + 1), np.float32), np.zeros((0, 4), np.float32)
    net.eval()
    with torch.no_grad():
        return predict_with_flips(run, crops, scales.astype(np.float32), sure, dual)


# ------------------------------------------------------------------------------------------------ decoding

def decode(found: list[cands.Candidate], probs: np.ndarray, rel_boxes: np.ndarray, conf: float = 0.001,
           size: tuple[int, int] | None = None) -> np.ndarray:
    """(M, 6) rows x1 y1 x2 y2 score class of one board, best first: refined boxes, score = P(defect), class = most
    likely defect type; overlapping calls of one type merged into one (`merge_overlapping`)."""
    if not found:
        return np.zeros((0, 6), np.float32)
    score = 1.0 - probs[:, cands.BACKGROUND]
    cls = probs[:, :cands.BACKGROUND].argmax(1)
    boxes = np.array([cands.from_window(r, c.window) for r, c in zip(rel_boxes, found)], dtype=np.float32)
    # the box head predicts four coordinates independently: order each pair (an early model may swap them)
    boxes = np.concatenate([np.minimum(boxes[:, :2], boxes[:, 2:]), np.maximum(boxes[:, :2], boxes[:, 2:])], 1)
    if size is not None:
        h, w = size
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, w)
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, h)
    keep = (score >= conf) & (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])  # no area: no call
    boxes, score, cls = boxes[keep], score[keep], cls[keep]
    kept = [m[k] for m, k in ((m, merge_overlapping(boxes, score, m)) for m in
                              (np.flatnonzero(cls == c) for c in np.unique(cls)))]
    order = np.concatenate(kept) if kept else np.zeros(0, np.int64)
    order = order[np.argsort(-score[order], kind="stable")]
    return np.column_stack([boxes[order], score[order], cls[order]]).astype(np.float32)


def rows_by_board(cs: CropSet, probs: np.ndarray, rel_boxes: np.ndarray, sizes: Sequence[tuple[int, int]],
                  conf: float = 0.001) -> list[np.ndarray]:
    """`decode` of every board of a crop set (board i has size sizes[i]), from predictions of all its crops."""
    out = []
    for i, size in enumerate(sizes):
        sel = np.flatnonzero(cs.board == i)
        found = [cands.Candidate(tuple(cs.candidate_boxes[j]), tuple(cs.windows[j])) for j in sel]
        out.append(decode(found, probs[sel], rel_boxes[sel], conf, size))
    return out


def merge_overlapping(boxes: np.ndarray, score: np.ndarray, members: np.ndarray, overlap: float = NMS_OVERLAP,
                      gap: float = MERGE_GAP) -> np.ndarray:
    """Greedy, highest score first, among `members` (indices of one class): each kept call absorbs the calls whose
    intersection exceeds `overlap` of the smaller box (boxes grown by `gap` pixels for the test), and takes the box
    around all it absorbed (written into `boxes`). Returns the positions in `members` that are kept."""
    b = boxes[members].astype(np.float64)
    g = b + np.array([-gap, -gap, gap, gap])
    s = score[members].astype(np.float64)
    area = (g[:, 2] - g[:, 0]) * (g[:, 3] - g[:, 1])
    order, kept = np.argsort(-s, kind="stable"), []
    while order.size:
        i, rest = order[0], order[1:]
        inter = np.clip(np.minimum(g[i, 2], g[rest, 2]) - np.maximum(g[i, 0], g[rest, 0]), 0, None) * \
            np.clip(np.minimum(g[i, 3], g[rest, 3]) - np.maximum(g[i, 1], g[rest, 1]), 0, None)
        smaller = np.minimum(area[i], area[rest])
        hit = inter > overlap * np.where(smaller > 0, smaller, np.inf)
        cluster = np.r_[i, rest[hit]]
        boxes[members[i]] = np.r_[b[cluster, :2].min(0), b[cluster, 2:].max(0)]
        kept.append(i)
        order = rest[~hit]
    return np.asarray(kept, np.int64)


# ------------------------------------------------------------------------------------------------ files

def save_checkpoint(net, cfg: VerifierTrainConfig, path: Path, extra: dict | None = None) -> None:
    """Weights only: a dict of tensors plus a JSON string (torch.load(weights_only=True) reads it)."""
    import torch

    meta = {KIND_KEY: VERIFIER_KIND, "width": cfg.width, "stem_stride": cfg.stem_stride, "crop": cands.CROP,
            INVERT_KEY: cfg.invert, **(extra or {})}
    torch.save({"state_dict": net.state_dict(), "config": json.dumps(meta)}, path)


def load_checkpoint(path: Path):
    import torch

    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    meta = json.loads(ckpt["config"])
    net = build_network(int(meta["width"]), int(meta.get("stem_stride", 2)))
    net.load_state_dict(ckpt["state_dict"])
    net.eval()
    return net, meta


def is_verifier_checkpoint(checkpoint: Path | dict) -> bool:
    """Whether a .pt file (or a checkpoint already loaded from one) is the verifier's weights-only checkpoint."""
    import torch

    if not isinstance(checkpoint, dict):
        try:
            checkpoint = torch.load(checkpoint, map_location="cpu", weights_only=True)
        except Exception:  # an ultralytics checkpoint pickles classes: not ours
            return False
    return isinstance(checkpoint, dict) and VERIFIER_KIND in str(checkpoint.get("config", ""))


def onnx_kind(path: Path | str) -> str | None:
    """The `pcb_kind` an ONNX file was stamped with (VERIFIER_KIND for the two-stage inspector), else None."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return next((p.value for p in model.metadata_props if p.key == KIND_KEY), None)


def export_onnx(net, path: Path, metadata: dict) -> None:
    import onnx
    import torch

    net.eval()
    crops = torch.zeros(1, 3, cands.CROP, cands.CROP)
    scales = torch.zeros(1, 1)
    torch.onnx.export(net, (crops, scales), str(path), input_names=["crops", "scales"],
                      output_names=["logits", "boxes"], dynamic_axes={"crops": {0: "n"}, "scales": {0: "n"},
                                                                      "logits": {0: "n"}, "boxes": {0: "n"}},
                      opset_version=17, dynamo=False)
    model = onnx.load(str(path))
    for k, v in {KIND_KEY: VERIFIER_KIND, **metadata}.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = k, str(v)
    onnx.save(model, str(path))


class VerifierRuntime:
    """The two-stage inspector on ONNX Runtime: candidates (AOI) -> crops -> verifier -> refined, scored boxes."""

    def __init__(self, path: Path | str, threads: int | None = None, sure: float = FLIP_SURE):
        import onnxruntime as ort

        from pcb_pipeline.vision.onnx_runtime import default_threads

        so = ort.SessionOptions()
        so.intra_op_num_threads = threads or default_threads()
        so.inter_op_num_threads = 1
        self.path = Path(path)
        self.session = ort.InferenceSession(str(self.path), sess_options=so, providers=["CPUExecutionProvider"])
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)
        self.sure = sure
        self.dual = reads_polarity_dual(self.metadata)

    def rows(self, composite: np.ndarray, conf: float = 0.001) -> np.ndarray:
        found, crops, scales, _, _ = board_crops(composite)
        if not found:
            return np.zeros((0, 6), np.float32)
        probs, boxes = predict_with_flips(self._run, crops, scales, self.sure, self.dual)
        return decode(found, probs, boxes, conf, composite.shape[:2])

    def _run(self, crops: np.ndarray, scales: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        logits, boxes = self.session.run(None, {"crops": crops.astype(np.float32), "scales": scales[:, None]})
        e = np.exp(logits - logits.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True), boxes

