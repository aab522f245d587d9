"""Stage 2 of the two-stage inspector: the crop verifier trains, saves weights only, exports ONNX and serves the
same boxes through ONNX Runtime."""
from __future__ import annotations

import numpy as np
import pytest

from pcb_pipeline.core import candidates as cands
from pcb_pipeline.core import deeppcb
from pcb_pipeline.core.reference import sample_composite
from pcb_pipeline.vision import verifier as vf


def _with_dust(composite: np.ndarray, y: int, x: int) -> np.ndarray:
    """An unlabelled 3x3 speck on the test scan: what real AOI false calls look like (dust, scan noise)."""
    out = composite.copy()
    out[y:y + 3, x:x + 3, 0] = 255 - out[y:y + 3, x:x + 3, 1]
    out[..., 2] = np.abs(out[..., 0].astype(int) - out[..., 1]).astype(np.uint8)
    return out


@pytest.fixture(scope="module")
def boards(synthetic_root):
    out = []
    for i, s in enumerate(deeppcb.read_split(deeppcb.split_file_path(synthetic_root))):
        gt = [(b.x1, b.y1, b.x2, b.y2, b.class_id) for b in deeppcb.read_labels(s.label_file)]
        composite = sample_composite(s)
        out.append((_with_dust(composite, 20 + 17 * i, 600 - 13 * i) if i % 2 else composite, gt))
    return out


@pytest.fixture(scope="module")
def trained(boards):
    crop_set = vf.build_crop_set(boards, log=lambda _: None)
    seen = []
    net = vf.train_verifier(crop_set, vf.VerifierTrainConfig(epochs=3, batch=32, width=8, threads=1), crop_set,
                            on_epoch=lambda e, m, _net: seen.append((e, m)))
    return crop_set, net, seen


def test_crop_set_lines_up_inputs_and_targets(boards, trained):
    crop_set, _, _ = trained
    n = len(crop_set.labels)
    assert n > len(boards)  # several candidates per board
    assert crop_set.crops.shape == (n, 3, cands.CROP, cands.CROP) and crop_set.crops.dtype == np.uint8
    assert crop_set.scales.shape == crop_set.board.shape == (n,)
    positive = crop_set.labels != cands.BACKGROUND
    assert 0 < positive.sum() < n  # true defects and false candidates alike
    # a candidate learns a defect it overlaps, and lies inside its window: the defect's box meets the window (it may
    # reach past it when the candidate is a fragment of a long defect)
    x1, y1, x2, y2 = crop_set.boxes[positive].T
    assert ((x1 < 1) & (y1 < 1) & (x2 > 0) & (y2 > 0) & (x2 > x1) & (y2 > y1)).all()
    assert (crop_set.boxes[~positive] == 0).all()
    assert set(crop_set.board.tolist()) <= set(range(len(boards)))


def test_training_reports_every_epoch_and_learns(trained):
    _, _, seen = trained
    assert [e for e, _ in seen] == [1, 2, 3]
    assert all({"loss", "cls_loss", "box_loss", "val_accuracy"} <= m.keys() for _, m in seen)
    assert seen[-1][1]["loss"] < seen[0][1]["loss"]


def test_training_is_seeded(boards):
    crop_set = vf.build_crop_set(boards[:6], log=lambda _: None)
    cfg = vf.VerifierTrainConfig(epochs=1, batch=32, width=8, threads=1)
    a = vf.predict_crops(vf.train_verifier(crop_set, cfg), crop_set.crops, crop_set.scales)[0]
    b = vf.predict_crops(vf.train_verifier(crop_set, cfg), crop_set.crops, crop_set.scales)[0]
    assert np.allclose(a, b, atol=1e-5)


def test_checkpoint_is_weights_only_and_round_trips(trained, tmp_path):
    crop_set, net, _ = trained
    path = tmp_path / "verifier.pt"
    vf.save_checkpoint(net, vf.VerifierTrainConfig(width=8), path, {"map50": 0.5})
    loaded, meta = vf.load_checkpoint(path)
    assert meta[vf.KIND_KEY] == vf.VERIFIER_KIND and meta["map50"] == 0.5 and meta["width"] == 8
    assert np.allclose(vf.predict_crops(net, crop_set.crops, crop_set.scales)[0],
                       vf.predict_crops(loaded, crop_set.crops, crop_set.scales)[0], atol=1e-6)
    assert vf.is_verifier_checkpoint(path)
    other = tmp_path / "other.pt"
    other.write_bytes(b"not a checkpoint")
    assert not vf.is_verifier_checkpoint(other)


def test_a_full_resolution_stem_is_kept_by_the_checkpoint(boards, tmp_path):
    crop_set = vf.build_crop_set(boards[:4], log=lambda _: None)
    cfg = vf.VerifierTrainConfig(epochs=1, batch=32, width=8, threads=1, stem_stride=1)
    net = vf.train_verifier(crop_set, cfg)
    assert net.features[0].stride == (1, 1)
    vf.save_checkpoint(net, cfg, tmp_path / "s1.pt")
    loaded, meta = vf.load_checkpoint(tmp_path / "s1.pt")
    assert meta["stem_stride"] == 1 and loaded.features[0].stride == (1, 1)
    assert np.allclose(vf.predict_crops(net, crop_set.crops, crop_set.scales)[0],
                       vf.predict_crops(loaded, crop_set.crops, crop_set.scales)[0], atol=1e-6)


def test_weight_average_follows_the_trained_weights_at_its_decay():
    import torch

    net = vf.build_network(8)
    average = vf.WeightAverage(net, decay=0.75)
    average.updates = 1000  # past the warm-up: the decay is the configured one
    start = {k: v.clone() for k, v in average.net.state_dict().items()}
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)
        net.features[1].running_mean.add_(2.0)
        net.features[1].num_batches_tracked.fill_(7)
    average.update(net)
    got = average.net.state_dict()
    weight = "features.0.weight"
    assert torch.allclose(got[weight], start[weight] + 0.25)  # 0.75 x old + 0.25 x (old + 1)
    assert torch.allclose(got["features.1.running_mean"], start["features.1.running_mean"] + 0.5)
    assert int(got["features.1.num_batches_tracked"]) == 7  # counters copied, not averaged
    assert not any(p.requires_grad for p in average.net.parameters())


def test_weight_average_warms_its_decay_up_so_the_initial_weights_fade():
    average = vf.WeightAverage(vf.build_network(8), decay=0.998)
    warm = []
    for _ in range(5000):
        warm.append(average.current_decay())
        average.updates += 1
    assert warm[0] == 0.1 and all(a <= b for a, b in zip(warm, warm[1:]))
    assert warm[-1] == 0.998  # reached after ~4500 steps
    assert np.prod(warm[1:500]) < 0.05  # the initial weights' share after 500 steps (0.998 ** 500 = 0.37)


def test_training_with_a_weight_average_returns_the_average(boards):
    crop_set = vf.build_crop_set(boards[:6], log=lambda _: None)
    plain = vf.VerifierTrainConfig(epochs=2, batch=8, width=8, threads=1)
    seen = []
    averaged = vf.train_verifier(crop_set, vf.VerifierTrainConfig(**{**plain.__dict__, "ema": 0.9}),
                                 on_epoch=lambda e, m, n: seen.append(n))
    trained = vf.train_verifier(crop_set, plain)
    assert seen == [averaged, averaged]  # epochs are scored on the average too
    a = vf.predict_crops(averaged, crop_set.crops, crop_set.scales)[0]
    b = vf.predict_crops(trained, crop_set.crops, crop_set.scales)[0]
    assert not np.allclose(a, b, atol=1e-4)  # same seed, same steps: only the averaging differs


def test_onnx_runtime_serves_what_torch_computes(boards, trained, tmp_path):
    _, net, _ = trained
    path = tmp_path / "verifier.onnx"
    vf.export_onnx(net, path, {"pcb_input": "reference"})
    runtime = vf.VerifierRuntime(path, threads=1)
    assert runtime.metadata[vf.KIND_KEY] == vf.VERIFIER_KIND and runtime.metadata["pcb_input"] == "reference"
    composite = boards[0][0]
    found, crops, scales, _, _ = vf.board_crops(composite)
    probs, rel = vf.predict_crops(net, crops, scales)
    expected = vf.decode(found, probs, rel, 0.001, composite.shape[:2])
    served = runtime.rows(composite)
    assert served.shape == expected.shape and served.shape[1] == 6
    assert np.allclose(served, expected, atol=1e-3)
    assert (served[:, 0] >= 0).all() and (served[:, 2] <= composite.shape[1]).all()
    assert ((served[:, 5] >= 0) & (served[:, 5] < cands.BACKGROUND)).all()
    blank = composite.copy()
    blank[..., 0], blank[..., 2] = blank[..., 1], 0
    assert runtime.rows(blank).shape == (0, 6)
    # a network stamped as trained on polarity duals is also asked about them, served as in torch
    vf.export_onnx(net, tmp_path / "dual.onnx", {"pcb_input": "reference", vf.INVERT_KEY: 0.3})
    dual = vf.VerifierRuntime(tmp_path / "dual.onnx", threads=1, sure=2.0)
    assert dual.dual and not runtime.dual
    probs, rel = vf.predict_crops(net, crops, scales, sure=2.0, dual=True)
    assert np.allclose(dual.rows(composite), vf.decode(found, probs, rel, 0.001, composite.shape[:2]), atol=1e-3)
    assert not np.allclose(probs, vf.predict_crops(net, crops, scales, sure=2.0)[0], atol=1e-4)


def test_flips_judge_only_the_crops_the_network_is_not_sure_of():
    rng = np.random.default_rng(0)
    crops = rng.integers(0, 256, (3, 3, 5, 5)).astype(np.uint8)
    crops[0, 0] = 255  # crop 0 reads as sure from every view; crops 1 and 2 as unsure
    scales = np.array([0.0, 0.5, 1.0], np.float32)
    seen = []

    def run(views, view_scales):  # the "network" reads each view's top-left pixel of channel 0
        seen.append(len(views))
        v = views[:, 0, 0, 0].astype(np.float64) / 255
        probs = np.zeros((len(views), cands.BACKGROUND + 1))
        probs[:, 0], probs[:, cands.BACKGROUND] = v, 1 - v
        return probs, np.column_stack([view_scales] * 4)

    probs, boxes = vf.predict_with_flips(run, crops, scales, sure=0.999)
    assert seen == [3, 6]  # the three crops, then three flips of each unsure crop
    corners = crops[:, 0][:, [0, 0, -1, -1], [0, -1, 0, -1]] / 255  # a crop's top-left pixel under each flip
    assert probs[0, 0] == 1.0 and np.allclose(probs[1:, 0], corners[1:].mean(1))
    assert np.allclose(probs.sum(1), 1) and np.array_equal(boxes[:, 0], scales)  # the box is the crop's own
    seen.clear()
    every = vf.predict_with_flips(run, crops, scales, sure=2.0)[0]
    assert seen == [3, 9] and np.allclose(every[:, 0], corners.mean(1))


def test_the_dual_views_are_read_back_as_the_crops_own_types():
    from pcb_pipeline.core.classes import CLASS_ID

    rng = np.random.default_rng(1)
    crops = rng.integers(1, 255, (2, 3, 5, 5)).astype(np.uint8)
    scales = np.zeros(2, np.float32)
    seen = []

    def run(views, view_scales):  # P(open) is a view's top-left test pixel, the rest "no defect"
        seen.append(len(views))
        v = views[:, 0, 0, 0].astype(np.float64) / 255
        probs = np.zeros((len(views), cands.BACKGROUND + 1))
        probs[:, CLASS_ID["open"]], probs[:, cands.BACKGROUND] = v, 1 - v
        return probs, np.zeros((len(views), 4))

    probs, _ = vf.predict_with_flips(run, crops, scales, sure=2.0, dual=True)
    assert seen == [2, 8]  # each crop, then its three flips and its dual
    corners = crops[:, 0][:, [0, 0, -1, -1], [0, -1, 0, -1]] / 255
    # the dual reads 1 - corner as "open", which is the crop's "short" (copper and laminate swapped)
    assert np.allclose(probs[:, CLASS_ID["open"]], corners.sum(1) / 5)
    assert np.allclose(probs[:, CLASS_ID["short"]], (1 - corners[:, 0]) / 5)
    assert np.allclose(probs.sum(1), 1)
    assert vf.reads_polarity_dual({vf.INVERT_KEY: "0.3"}) and not vf.reads_polarity_dual({})
    inverted = vf.polarity_inverted(crops)
    assert np.array_equal(inverted[:, :2], 255 - crops[:, :2]) and np.array_equal(inverted[:, 2], crops[:, 2])


def _calls(boxes, classes, scores):
    """decode() inputs for calls at given board boxes: one 100 px window at the origin, boxes relative to it."""
    found = [cands.Candidate(tuple(b), (0.0, 0.0, 100.0, 100.0)) for b in boxes]
    probs = np.zeros((len(boxes), cands.BACKGROUND + 1), np.float32)
    for i, (c, p) in enumerate(zip(classes, scores)):
        probs[i, c], probs[i, cands.BACKGROUND] = p, 1.0 - p
    return found, probs, np.asarray(boxes, np.float32) / 100.0


def test_fragments_of_one_defect_become_one_call_with_the_box_around_them():
    # two fragments of one defect: IoU 0.33 (kept apart by IoU 0.5 NMS), intersection 100 % of the smaller box;
    # a third lies end to end with the first, 3 px apart (within MERGE_GAP); a fourth of the type 20 px away stays
    found, probs, rel = _calls([(10, 10, 30, 20), (10, 10, 20, 20), (33, 11, 45, 21), (60, 60, 70, 70)],
                               [2, 2, 2, 2], [0.9, 0.3, 0.5, 0.8])
    rows = vf.decode(found, probs, rel, 0.001)
    assert rows.shape == (2, 6) and list(rows[:, 4]) == pytest.approx([0.9, 0.8])
    assert rows[0, :4] == pytest.approx([10, 10, 45, 21])  # the union of the cluster
    assert rows[1, :4] == pytest.approx([60, 60, 70, 70])
    boxes = np.asarray([f.box for f in found], np.float32)
    assert len(vf.merge_overlapping(boxes, probs[:, 2], np.arange(4), gap=0.0)) == 3  # without the gap the end-to-end fragment is a call of its own


def test_overlapping_calls_of_different_types_both_stay():
    found, probs, rel = _calls([(10, 10, 30, 30), (12, 12, 30, 30)], [0, 2], [0.9, 0.7])
    rows = vf.decode(found, probs, rel, 0.001)
    assert sorted(rows[:, 5].astype(int)) == [0, 2] and rows[0, 4] == pytest.approx(0.9)


def test_swapped_coordinates_are_ordered_and_boxes_without_area_dropped():
    # an early model's box head may put x2 left of x1; a box squeezed to nothing at the board edge is no call
    found, probs, rel = _calls([(30, 20, 10, 10), (80, 40, 90, 50)], [1, 3], [0.9, 0.8])
    rows = vf.decode(found, probs, rel, 0.001, size=(60, 60))
    assert rows.shape == (1, 6) and rows[0, :4] == pytest.approx([10, 10, 30, 20]) and rows[0, 5] == 1


def test_the_detector_interface_serves_the_two_stage_inspector(synthetic_root, trained, tmp_path):
    """Detector(weights) on a verifier export: callers get Detections from a board and its template, as from YOLO."""
    from pcb_pipeline.core.reference import MissingTemplateError
    from pcb_pipeline.vision.detector import Detector

    _, net, _ = trained
    path = tmp_path / "verifier.onnx"
    vf.export_onnx(net, path, {"pcb_input": "reference"})
    vf.save_checkpoint(net, vf.VerifierTrainConfig(width=8), tmp_path / "verifier.pt")
    detector = Detector(tmp_path / "verifier.pt", conf=0.001, threads=1)  # the .onnx beside it is served
    assert detector.kind == vf.VERIFIER_KIND and detector.needs_template and detector.backend == "onnxruntime"
    sample = deeppcb.read_split(deeppcb.split_file_path(synthetic_root))[0]
    [found] = detector.predict([sample.test_image], templates=[sample.template_image])
    expected = vf.VerifierRuntime(path, threads=1).rows(sample_composite(sample), 0.001)
    assert [(d.class_id, d.confidence) for d in found] == [(int(r[5]), round(float(r[4]), 4)) for r in expected]
    with pytest.raises(MissingTemplateError):
        detector.predict([sample.test_image])
    path.unlink()
    with pytest.raises(ValueError, match="two-stage inspector"):
        Detector(tmp_path / "verifier.pt")


def test_window_jitter_moves_crops_and_keeps_their_boxes_on_the_defect(boards):
    composites = [c for c, _ in boards]
    crop_set = vf.build_crop_set(boards, log=lambda _: None)
    idx = np.arange(len(crop_set.labels))
    crops, scales, rel = vf.jittered_crops(composites, crop_set, idx, 0.15, np.random.default_rng(0))
    assert crops.shape == crop_set.crops.shape and crops.dtype == np.uint8 and not np.array_equal(crops, crop_set.crops)
    positive = crop_set.labels != cands.BACKGROUND
    for i in np.flatnonzero(positive):  # the same true box on the board, whatever window framed it
        before = cands.from_window(crop_set.boxes[i], crop_set.windows[i])
        side = np.exp(scales[i]) * cands.MIN_CONTEXT
        assert side == pytest.approx((crop_set.windows[i, 2] - crop_set.windows[i, 0]), rel=0.17)
        assert rel[i, 2] - rel[i, 0] == pytest.approx((before[2] - before[0]) / side, rel=1e-4)
    assert (rel[~positive] == 0).all()
    with pytest.raises(ValueError, match="composites"):
        vf.train_verifier(crop_set, vf.VerifierTrainConfig(epochs=1, width=8, jitter=0.1))
    net = vf.train_verifier(crop_set, vf.VerifierTrainConfig(epochs=1, batch=32, width=8, threads=1, jitter=0.1),
                            composites=composites)
    assert vf.predict_crops(net, crop_set.crops, crop_set.scales)[0].shape == (len(idx), cands.BACKGROUND + 1)


def test_the_polarity_dual_swaps_copper_and_laminate_and_the_defect_types():
    import torch

    from pcb_pipeline.core.classes import CLASS_ID, POLARITY_DUAL

    assert all(POLARITY_DUAL[POLARITY_DUAL[name]] == name != POLARITY_DUAL[name] for name in POLARITY_DUAL)
    crops = torch.zeros(3, 3, 4, 4)
    crops[:, 0], crops[:, 1], crops[:, 2] = 10.0, 200.0, 190.0  # test, template, |difference|
    labels = torch.tensor([CLASS_ID["short"], CLASS_ID["spur"], cands.BACKGROUND])
    out, dual = vf.polarity_dual(crops, labels, torch.tensor([True, True, False]))
    assert dual.tolist() == [CLASS_ID["open"], CLASS_ID["mousebite"], cands.BACKGROUND]
    assert out[0, :, 0, 0].tolist() == [245.0, 55.0, 190.0]  # the difference of the swapped pair is the same
    assert torch.equal(out[2], crops[2])


def test_class_probabilities_do_not_change_when_a_crop_is_flipped(boards, trained):
    _, net, _ = trained
    found, crops, scales, _, _ = vf.board_crops(boards[0][0])
    probs, boxes = vf.predict_crops(net, crops, scales, sure=2.0)  # every crop judged by its flips too
    for flipped in (crops[..., ::-1], crops[..., ::-1, :], crops[..., ::-1, ::-1]):
        p, _ = vf.predict_crops(net, np.ascontiguousarray(flipped), scales, sure=2.0)
        assert np.allclose(p, probs, atol=1e-5)  # the mean over the four flips is the same set of views
