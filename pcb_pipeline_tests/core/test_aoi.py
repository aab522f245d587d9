"""Legacy AOI baseline: a drawn board with one defect of each type, alignment checks, and real Deep PCB pairs."""
from __future__ import annotations

from dataclasses import replace

import cv2
import numpy as np
import pytest

from pcb_pipeline.core.aoi import (
    BLOCK, DEFAULT_PARAMS, UNTYPED, AOIParams, MisalignedError, align, binarize, difference_components,
    estimate_shift, inspect_pair, local_shift_field, moved_share, score_aoi, shift_mask, tolerance_masks, warp_masks)
from pcb_pipeline.core.classes import CLASS_ID
from pcb_pipeline.core.deeppcb import group_split, read_split, split_file_path
from pcb_pipeline.core.detection_metrics import operating_point

WHITE, COPPER = 255, 0
SHIFT = (6, -5)  # the test image is offset from its template, as real scans are


def _template() -> np.ndarray:
    img = np.full((640, 640), WHITE, np.uint8)
    for y in (100, 160, 220, 280):
        cv2.line(img, (60, y), (580, y), COPPER, 12)
        cv2.circle(img, (60, y), 20, COPPER, -1)
        cv2.circle(img, (580, y), 20, COPPER, -1)
    for x in (150, 330, 510):
        cv2.line(img, (x, 360), (x, 590), COPPER, 14)
    cv2.circle(img, (420, 470), 26, COPPER, -1)
    return img


# (name, drawing, centre) in template coordinates; the test image is the template with these drawn, then shifted
DEFECTS = [
    ("open", lambda im: cv2.rectangle(im, (300, 90), (307, 110), WHITE, -1), (303, 100)),
    ("short", lambda im: cv2.rectangle(im, (400, 165), (407, 215), COPPER, -1), (403, 190)),
    ("copper", lambda im: cv2.circle(im, (250, 430), 6, COPPER, -1), (250, 430)),
    ("pin-hole", lambda im: cv2.circle(im, (420, 470), 5, WHITE, -1), (420, 470)),
    ("mousebite", lambda im: cv2.circle(im, (200, 227), 5, WHITE, -1), (200, 226)),
    ("spur", lambda im: cv2.rectangle(im, (330, 275), (336, 262), COPPER, -1), (333, 266)),
]


def _jpeg(img: np.ndarray) -> np.ndarray:
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 85])
    assert ok
    return cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE)


@pytest.fixture(scope="module")
def drawn_pair():
    template = _template()
    test = template.copy()
    for _, draw, _ in DEFECTS:
        draw(test)
    dx, dy = SHIFT
    test = shift_mask(test, dx, dy)
    truth = [(cx + dx - 15, cy + dy - 15, cx + dx + 15, cy + dy + 15, CLASS_ID[name]) for name, _, (cx, cy) in DEFECTS]
    return _jpeg(test), _jpeg(template), truth


def test_finds_every_drawn_defect_with_no_false_call(drawn_pair):
    test, template, truth = drawn_pair
    res = inspect_pair(test, template)
    assert (res.alignment.dx, res.alignment.dy) == SHIFT
    assert not res.misaligned
    calls = [d.row() for d in res.detections if d.score >= DEFAULT_PARAMS.threshold]
    op = operating_point([calls], [truth], DEFAULT_PARAMS.threshold, class_agnostic=True)
    assert (op.tp, op.fp, op.fn) == (len(DEFECTS), 0, 0)
    typed = operating_point([calls], [truth], DEFAULT_PARAMS.threshold)  # the rules name each defect right
    assert (typed.tp, typed.fp) == (len(DEFECTS), 0)


def test_untyped_mode_and_identical_images(drawn_pair):
    test, template, _ = drawn_pair
    res = inspect_pair(test, template, replace(DEFAULT_PARAMS, typed=False))
    assert res.detections and {d.class_id for d in res.detections} == {UNTYPED}
    assert {d.kind for d in res.detections} == {"extra", "missing"}
    assert inspect_pair(template, template).detections == []


def test_misaligned_pair_is_flagged_or_refused(drawn_pair):
    _, template, _ = drawn_pair
    stretched = cv2.warpAffine(template, cv2.getRotationMatrix2D((320, 320), 4.0, 1.05), (640, 640),
                               borderValue=WHITE)
    res = inspect_pair(stretched, template)
    assert res.misaligned
    with pytest.raises(MisalignedError, match="refusing"):
        inspect_pair(stretched, template, replace(DEFAULT_PARAMS, on_misaligned="refuse"))
    with pytest.raises(MisalignedError, match="differ in size"):
        inspect_pair(template[:320], template)


def test_boxes_are_padded_and_kept_inside_the_image():
    img = np.full((640, 640), WHITE, np.uint8)
    test = img.copy()
    cv2.circle(test, (3, 3), 3, COPPER, -1)  # a speck in the corner
    p = AOIParams(min_area=4, pad=4, min_box=30)
    (d,) = inspect_pair(test, img, p).detections
    assert (d.x1, d.y1) == (0.0, 0.0) and d.x2 == pytest.approx(30) and d.y2 == pytest.approx(30)
    assert d.class_id == CLASS_ID["copper"] and 0 < d.score < 1


def test_shift_mask_direction():
    m = np.zeros((5, 5), bool)
    m[1, 1] = True
    assert shift_mask(m, 2, 1)[2, 3]


@pytest.mark.parametrize("shift", [(0, 0), (5, -3), (-16, 11), (2, 16)])
def test_global_search_finds_the_shift_and_counts_what_it_leaves(drawn_pair, shift):
    _, template, _ = drawn_pair
    temp_cu = binarize(template)
    test_cu = shift_mask(temp_cu, *shift).copy()  # (a zero shift returns the template itself)
    test_cu[300:310, 200:240] ^= True  # a defect: 400 pixels the shift cannot explain
    dx, dy, left = estimate_shift(test_cu, temp_cu, 16)
    m = 16 + 4  # the fine search's border
    assert (dx, dy) == shift
    assert left == np.count_nonzero((test_cu ^ shift_mask(temp_cu, dx, dy))[m:-m, m:-m]) == 400


def test_an_image_too_small_to_search_is_taken_as_registered():
    small = np.zeros((30, 60), bool)
    small[10:12, 5:50] = True
    assert estimate_shift(small, shift_mask(small, 1, 1), 16) == (0, 0, 92)


def _local_shifts_oracle(test_cu, temp_cu, p):
    """The local re-registration rule written plainly (float window sums, boolean indexing): the reference that
    align's integer form must reproduce pixel for pixel. Returns the aligned template and the (dx, dy) field."""
    gdx, gdy, _ = estimate_shift(test_cu, temp_cu, p.max_shift)
    shifts = sorted(((dx, dy) for dy in range(gdy - p.local_radius, gdy + p.local_radius + 1)
                     for dx in range(gdx - p.local_radius, gdx + p.local_radius + 1)),
                    key=lambda s: ((s[0] - gdx) ** 2 + (s[1] - gdy) ** 2, s))
    k = (p.local_window, p.local_window)
    out = shift_mask(temp_cu, gdx, gdy).copy()
    field_x, field_y = np.full(test_cu.shape, gdx), np.full(test_cu.shape, gdy)
    best = cv2.boxFilter((test_cu ^ out).astype(np.float64), -1, k, normalize=False, borderType=cv2.BORDER_REFLECT)
    for dx, dy in shifts[1:]:
        shifted = shift_mask(temp_cu, dx, dy)
        cost = cv2.boxFilter((test_cu ^ shifted).astype(np.float64), -1, k, normalize=False,
                             borderType=cv2.BORDER_REFLECT)
        better = cost < best * 0.95 - 2.0
        best[better], out[better] = cost[better], shifted[better]
        field_x[better], field_y[better] = dx, dy
    return out, (field_x, field_y)


@pytest.fixture
def stretched_pair(drawn_pair):
    _, template, _ = drawn_pair
    # a scan stretched by 0.6 %: the far side is ~3 px off while the centre is not, beyond any one global shift
    stretched = cv2.warpAffine(template, np.float32([[1.006, 0, -1.9], [0, 1.006, -1.9]]), (640, 640),
                               borderValue=WHITE)
    return binarize(stretched), binarize(template)


def test_local_registration_follows_a_stretched_scan_and_matches_the_plain_rule(stretched_pair):
    test_cu, temp_cu = stretched_pair
    alignment, aligned, _ = align(test_cu, temp_cu)
    global_only = np.count_nonzero(test_cu ^ shift_mask(temp_cu, alignment.dx, alignment.dy))
    assert alignment.local_share > 0.05 and not alignment.misaligned
    assert np.count_nonzero(test_cu ^ aligned) < 0.5 * global_only
    assert np.array_equal(aligned, _local_shifts_oracle(test_cu, temp_cu, DEFAULT_PARAMS)[0])
    wide = replace(DEFAULT_PARAMS, local_window=61)  # window counts past uint16's exact range: the float32 path
    assert np.array_equal(align(test_cu, temp_cu, wide)[1], _local_shifts_oracle(test_cu, temp_cu, wide)[0])


def _block_shifts_oracle(test_cu, temp_cu, gdx, gdy, p):
    """The block rule written plainly: each block's window of n x n blocks (n odd, nearest local_window pixels),
    clipped at the image's edge, summed by slicing; the float rule; the shift painted over the block's pixels."""
    h, w, s = *test_cu.shape, p.local_step
    n = max(1, round(p.local_window / s))
    n += 1 - n % 2
    shifts = sorted(((dx, dy) for dy in range(gdy - p.local_radius, gdy + p.local_radius + 1)
                     for dx in range(gdx - p.local_radius, gdx + p.local_radius + 1)),
                    key=lambda t: ((t[0] - gdx) ** 2 + (t[1] - gdy) ** 2, t))
    xors = [test_cu ^ shift_mask(temp_cu, dx, dy) for dx, dy in shifts]
    field_x, field_y = np.zeros((h, w), int), np.zeros((h, w), int)
    for by in range(0, h, s):
        for bx in range(0, w, s):
            y0, x0 = max(0, by - (n // 2) * s), max(0, bx - (n // 2) * s)
            y1, x1 = by + (n // 2 + 1) * s, bx + (n // 2 + 1) * s
            costs = [int(x[y0:y1, x0:x1].sum()) for x in xors]
            best, pick = costs[0], 0
            for i, c in enumerate(costs[1:], start=1):
                if c < best * 0.95 - 2.0:
                    best, pick = c, i
            field_x[by:by + s, bx:bx + s], field_y[by:by + s, bx:bx + s] = shifts[pick]
    return field_x, field_y


def test_block_registration_matches_the_plain_block_rule(stretched_pair):
    test_cu, temp_cu = (m[:203, 405:602] for m in stretched_pair)  # a corner far from the centre; odd sizes
    p = replace(DEFAULT_PARAMS, local_step=8)
    gdx, gdy, _ = estimate_shift(test_cu, temp_cu, p.max_shift)
    dx, dy = local_shift_field(test_cu, temp_cu, gdx, gdy, p)
    assert dx.shape == dy.shape == (26, 25)  # one decision per 8 x 8 block, the last ones partial
    oracle_x, oracle_y = _block_shifts_oracle(test_cu, temp_cu, gdx, gdy, p)
    assert np.array_equal(_per_pixel(dx, test_cu.shape), oracle_x)
    assert np.array_equal(_per_pixel(dy, test_cu.shape), oracle_y)
    assert len(set(zip(dx.ravel(), dy.ravel()))) > 1  # the stretch really asks for several shifts


def test_a_block_size_the_registration_cannot_decide_is_refused_by_name():
    with pytest.raises(ValueError, match="local_step 4"):
        replace(DEFAULT_PARAMS, local_step=4)


def test_block_registration_follows_the_stretch_as_the_pixel_rule_does(stretched_pair):
    test_cu, temp_cu = stretched_pair
    block = align(test_cu, temp_cu, replace(DEFAULT_PARAMS, local_step=8))[1]
    per_pixel = align(test_cu, temp_cu, replace(DEFAULT_PARAMS, local_step=1))[1]
    global_only = np.count_nonzero(test_cu ^ shift_mask(temp_cu, *estimate_shift(test_cu, temp_cu)[:2]))
    assert np.count_nonzero(test_cu ^ block) < 0.5 * global_only
    assert np.count_nonzero(block ^ per_pixel) < 0.01 * block.size


def test_warp_masks_is_shift_mask_per_pixel():
    rng = np.random.default_rng(3)
    masks = [rng.random((37, 53)) > 0.5, rng.integers(0, 255, (37, 53), dtype=np.uint8)]
    dx, dy = rng.integers(-3, 4, (37, 53)).astype(np.int32), rng.integers(-3, 4, (37, 53)).astype(np.int32)
    warped = warp_masks(masks, dx, dy)
    for mask, out in zip(masks, warped):
        assert out.dtype == mask.dtype and out.shape == mask.shape
        for y, x in [(0, 0), (5, 7), (36, 52), (20, 0), (0, 40)]:
            assert out[y, x] == shift_mask(mask, int(dx[y, x]), int(dy[y, x]))[y, x]


def _per_pixel(block_field, shape):
    return np.repeat(np.repeat(block_field, BLOCK, axis=0), BLOCK, axis=1)[:shape[0], :shape[1]]


def test_a_block_field_warps_as_the_same_field_painted_per_pixel():
    rng = np.random.default_rng(4)
    masks = [rng.random((37, 53)) > 0.5, rng.integers(0, 255, (37, 53), dtype=np.uint8)]
    dx, dy = rng.integers(-3, 4, (5, 7)).astype(np.int32), rng.integers(-3, 4, (5, 7)).astype(np.int32)
    dx[0, 0] = dy[0, 0] = 0  # blocks that stay are copied, not gathered
    by_block = warp_masks(masks, dx, dy)
    by_pixel = warp_masks(masks, _per_pixel(dx, (37, 53)), _per_pixel(dy, (37, 53)))
    for mask, block, pixel in zip(masks, by_block, by_pixel):
        assert block.dtype == mask.dtype and block.flags.c_contiguous and np.array_equal(block, pixel)
    still = warp_masks(masks, np.zeros((5, 7), np.int32), np.zeros((5, 7), np.int32))
    assert all(np.array_equal(out, m) and out is not m for out, m in zip(still, masks))


def test_moved_share_weighs_each_block_by_its_pixels():
    rng = np.random.default_rng(5)
    dx, dy = rng.integers(-1, 2, (5, 7)).astype(np.int32), rng.integers(-1, 2, (5, 7)).astype(np.int32)
    per_pixel = moved_share(_per_pixel(dx, (37, 53)), _per_pixel(dy, (37, 53)), 1, 0, (37, 53))
    assert moved_share(dx, dy, 1, 0, (37, 53)) == pytest.approx(per_pixel, abs=1e-12)
    assert 0 < per_pixel < 1


def test_typing_components_needs_the_registered_template(drawn_pair):
    test, template, truth = drawn_pair
    test_cu, temp_cu = binarize(test), shift_mask(binarize(template), *SHIFT)
    grow, shrink = tolerance_masks(temp_cu, 1)
    with pytest.raises(ValueError, match="registered template"):
        difference_components(test_cu, grow, shrink, DEFAULT_PARAMS)
    untyped = difference_components(test_cu, grow, shrink, replace(DEFAULT_PARAMS, typed=False))
    assert len(untyped) >= len(truth) and {c.class_id for c in untyped} == {UNTYPED}


def test_registered_template_skips_the_global_search(stretched_pair):
    test_cu, temp_cu = stretched_pair
    # max_shift 0: the template is taken as registered (a reference composite); no range-edge misalignment verdict
    alignment, aligned, _ = align(test_cu, temp_cu, replace(DEFAULT_PARAMS, max_shift=0))
    assert (alignment.dx, alignment.dy) == (0, 0) and not alignment.misaligned
    assert np.count_nonzero(test_cu ^ aligned) < np.count_nonzero(test_cu ^ temp_cu)


@pytest.mark.deeppcb
def test_real_deeppcb_held_out_pairs(deeppcb_root):
    _, val = group_split(read_split(split_file_path(deeppcb_root)))
    sample = val[::10][:20]
    rep = score_aoi(sample, DEFAULT_PARAMS)
    op = rep["operating"]
    assert rep["n_images"] == 20
    assert op["recall"] >= 0.8 and op["precision"] >= 0.8, op
