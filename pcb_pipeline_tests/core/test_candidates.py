"""Stage 1 of the two-stage inspector: AOI candidates, their context windows, crops and training targets."""
from __future__ import annotations

import numpy as np

from pcb_pipeline.core import candidates as cands
from pcb_pipeline.core import deeppcb
from pcb_pipeline.core.detection_metrics import box_iou
from pcb_pipeline.core.reference import sample_composite


def _boards(synthetic_root):
    samples = deeppcb.read_split(deeppcb.split_file_path(synthetic_root))
    for s in samples:
        gt = [(b.x1, b.y1, b.x2, b.y2, b.class_id) for b in deeppcb.read_labels(s.label_file)]
        yield sample_composite(s), gt


def test_candidates_cover_the_true_defects(synthetic_root):
    covered = total = 0
    for composite, gt in _boards(synthetic_root):
        found = cands.propose(composite)
        total += len(gt)
        if found and gt:
            iou = box_iou(np.array([c.box for c in found]), np.array([g[:4] for g in gt], dtype=float))
            covered += int((iou.max(0) > cands.MATCH_IOU).sum())
    assert total > 50 and covered / total >= 0.95


def test_a_board_identical_to_its_template_has_no_candidate(synthetic_root):
    composite, _ = next(_boards(synthetic_root))
    same = composite.copy()
    same[..., 0] = same[..., 1]
    same[..., 2] = 0
    assert cands.propose(same) == []


def test_window_is_square_with_context_and_round_trips_boxes():
    box = (100.0, 200.0, 110.0, 240.0)  # 10 x 40: the window is 2 x 40 = 80 px, centred
    window = cands.context_window(box)
    assert window == (65.0, 180.0, 145.0, 260.0)
    assert cands.context_window((5, 5, 7, 7))[2] - cands.context_window((5, 5, 7, 7))[0] == cands.MIN_CONTEXT
    rel = cands.to_window(box, window)
    assert np.allclose(cands.from_window(rel, window), box)
    assert cands.window_scale(window) > 0 > cands.window_scale((0, 0, 32, 32))


def test_a_crop_off_the_board_reads_as_empty_laminate():
    composite = np.zeros((100, 100, 3), np.uint8)  # all copper
    patch = cands.crop(composite, (-64, -64, 0, 0))  # wholly outside the top-left corner
    assert patch.shape == (cands.CROP, cands.CROP, 3)
    assert (patch == (255, 255, 0)).all()
    half = cands.crop(composite, (-32, 0, 32, 64))  # left half outside
    assert (half[:, :20] == (255, 255, 0)).all() and (half[:, -20:] == 0).all()


def test_targets_match_by_overlap_and_leave_the_rest_background():
    found = [cands.Candidate((10, 10, 20, 20), cands.context_window((10, 10, 20, 20))),
             cands.Candidate((300, 300, 310, 310), cands.context_window((300, 300, 310, 310)))]
    labels, boxes = cands.targets(found, [(11, 11, 21, 21, 3)])
    assert labels.tolist() == [3, cands.BACKGROUND]
    assert np.allclose(cands.from_window(boxes[0], found[0].window), (11, 11, 21, 21))
    assert (boxes[1] == 0).all()
    labels, _ = cands.targets(found, [])
    assert (labels == cands.BACKGROUND).all()
