"""Legacy AOI baseline: the reference-comparison inspector factories use today, as a fair yardstick for the model.

For each defective board image and its aligned, defect-free template (Deep PCB gives both):
1. binarise both (copper is dark on the Deep PCB scans);
2. alignment check and registration: a coarse-to-fine XOR search finds the global shift (phase correlation was
   tried first and proved unreliable on these sparse binary layouts: peaks hundreds of pixels off for aligned
   pairs), then a dense local re-registration absorbs the stretch some Deep PCB pairs have (one side of the board
   off by 2-3 pixels, the other not). A pair that still does not register (XOR residual high, or a shift at the
   edge of the search range) is flagged as misaligned, or refused with ``on_misaligned="refuse"``: comparing
   misaligned images reports every edge as a defect;
3. difference with an edge tolerance: *extra copper* is copper in the test where the template has none within
   ``tolerance`` pixels, *missing copper* the reverse, so a one-pixel edge jitter is not a defect;
4. morphological clean-up (opening removes slivers, a small closing joins the pieces of one defect);
5. connected components above ``min_area`` become boxes, padded to the size a human labeller draws around a defect,
   scored by their area (bigger differences are surer defects), and optionally rule-typed into the six classes:
   extra copper touching two separate template conductors is a *short*, touching one a *spur*, touching none
   *copper* (spurious copper); missing copper that splits a conductor is an *open*, one enclosed by copper a
   *pin-hole*, otherwise a *mousebite*.

Parameters are tuned on training groups only (``bench/aoi_tune.py``); ``score_aoi`` scores them with the Deep PCB
protocol (``detection_metrics``).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np

from .classes import CLASS_ID
from .deeppcb import Sample, read_labels
from .detection_metrics import DEEPPCB_IOU, evaluate_detections, matched_recall, operating_point
from .images import read_gray

UNTYPED = -1  # class id of an untyped call (class-agnostic scoring only)
EXTRA, MISSING = "extra", "missing"


BLOCK = 8  # side of the blocks a local shift can be decided for (one byte of packed bits across)


class MisalignedError(ValueError):
    """The test image and its template are not aligned well enough to be compared."""


@dataclass(frozen=True)
class AOIParams:
    """Inspector settings. The defaults are the values bench/aoi_tune.py chose on the training groups of
    ``group_split`` (bench/aoi_params.json, figures in bench/aoi_results.json); keep them in step when re-tuning."""

    binarize_threshold: int = 128  # grey level below which a pixel is copper (0 = Otsu per image)
    max_shift: int = 16  # global alignment search range (pixels, each axis; 0: none, the template is registered)
    local_radius: int = 3  # dense local re-registration: shifts tried around the global one (0: global only)
    local_window: int = 41  # side of the window whose XOR decides a pixel's local shift
    local_step: int = 1  # local shifts decided per pixel (1) or per 8 x 8 block (8: ~10x cheaper, nearly the same)
    max_residual: float = 0.5  # median tile XOR per template edge pixel above which the pair is misaligned
    on_misaligned: str = "flag"  # "flag": inspect anyway and mark the result; "refuse": raise MisalignedError
    tolerance: int = 1  # edge tolerance in pixels (dilation radius of the reference before differencing)
    open_radius: int = 1  # opening radius on the difference mask (0: none)
    close_radius: int = 3  # closing radius joining fragments of one defect (0: none)
    min_area: int = 4  # smallest component (pixels) reported (calls are then cut by ``threshold``)
    pad: int = 6  # pixels added around a component's own bounding box
    min_box: int = 28  # smallest reported box side (pixels), centred on the component
    score_scale: float = 60.0  # score = 1 - exp(-area / score_scale): monotone in area, in (0, 1)
    typed: bool = True  # rule-type calls into the six classes; False: untyped (class id -1)
    context: int = 10  # pixels of context around a component for the typing rules
    threshold: float = 0.167509  # operating point: calls have score >= threshold (best F on training: area >= 11)

    def __post_init__(self) -> None:
        if self.local_step not in (1, BLOCK):
            raise ValueError(f"local_step {self.local_step}: a local shift is decided per pixel (1) or per "
                             f"{BLOCK} x {BLOCK} block ({BLOCK})")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> AOIParams:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in d.items() if k in known})


DEFAULT_PARAMS = AOIParams()


@dataclass
class AOIDetection:
    x1: float
    y1: float
    x2: float
    y2: float
    score: float
    class_id: int  # 0..5, or UNTYPED
    kind: str  # "extra" or "missing" copper
    area: int

    def row(self) -> tuple[float, float, float, float, float, int]:
        return (self.x1, self.y1, self.x2, self.y2, self.score, self.class_id)


@dataclass
class Alignment:
    dx: int  # global shift applied to the template (pixels): template pixel (x, y) lands on test (x + dx, y + dy)
    dy: int
    residual: float  # median over tiles of XOR after alignment per template edge pixel (0: identical)
    local_share: float  # share of pixels whose local re-registration chose a shift other than the global one
    misaligned: bool  # flagged: residual too high, or the shift at the edge of the search range

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class AOIResult:
    detections: list[AOIDetection]
    alignment: Alignment

    @property
    def misaligned(self) -> bool:
        return self.alignment.misaligned

    def rows(self) -> list[tuple[float, float, float, float, float, int]]:
        return [d.row() for d in self.detections]


# ------------------------------------------------------------------------------------------------ helpers


def _gray(img: np.ndarray) -> np.ndarray:
    if img.ndim == 3:
        return cv2.cvtColor(img, cv2.COLOR_BGR2GRAY) if img.shape[2] == 3 else img[:, :, 0]
    return img


def load_gray(path: Path | str) -> np.ndarray:
    """A scan as grey pixels, through the one decoder (``core.images``): clear errors, bit depth scaled."""
    return read_gray(path)


def _disk(r: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))


def binarize(gray: np.ndarray, threshold: int = 128) -> np.ndarray:
    """Copper mask (copper is dark). ``threshold <= 0``: Otsu's threshold per image."""
    gray = _gray(gray)
    if threshold <= 0:
        _, m = cv2.threshold(gray, 0, 1, cv2.THRESH_BINARY_INV | cv2.THRESH_OTSU)
        return m.astype(bool)
    return gray < threshold


def shift_mask(mask: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """``out[y, x] = mask[y - dy, x - dx]``, edges replicated."""
    if dx == 0 and dy == 0:
        return mask
    h, w = mask.shape
    p = max(abs(dx), abs(dy))
    # OpenCV's replicated border: the same pixels as np.pad(mode="edge"), several times faster (alignment calls
    # this ~50 times a board); bool masks travel as their uint8 view
    src = mask.view(np.uint8) if mask.dtype == bool else mask
    padded = cv2.copyMakeBorder(src, p, p, p, p, cv2.BORDER_REPLICATE)[p - dy:p - dy + h, p - dx:p - dx + w]
    return padded.view(bool) if mask.dtype == bool else padded


def estimate_shift(test_cu: np.ndarray, temp_cu: np.ndarray, max_shift: int = 16) -> tuple[int, int, int]:
    """Global integer shift (dx, dy) of the template that best explains the test image, and the XOR count left.

    Coarse-to-fine XOR search (binary board images: phase correlation was unreliable on sparse layouts, reporting
    shifts of hundreds of pixels for pairs that were aligned). Coarse: 1/4 scale, whole range; fine: +-3 pixels,
    counted inside a border the shift cannot reach past, so every shifted template is a view, never a padded copy.
    """
    f = 4
    h, w = test_cu.shape
    m = max_shift + f  # the fine search's border
    if min(h, w) <= 2 * m:  # too small to search: taken as registered
        return 0, 0, int(np.count_nonzero(test_cu ^ temp_cu))
    a = cv2.resize(test_cu.astype(np.float32), (w // f, h // f), interpolation=cv2.INTER_AREA)
    b = cv2.resize(temp_cu.astype(np.float32), (w // f, h // f), interpolation=cv2.INTER_AREA)
    r = max(1, -(-max_shift // f))
    hs, ws = a.shape
    inner = a[r:hs - r, r:ws - r]
    best = (np.inf, 0, 0)
    for cy in range(-r, r + 1):
        for cx in range(-r, r + 1):
            # one OpenCV pass per shift, no temporary; exact: the downscaled values are sixteenths
            cost = cv2.norm(inner, b[r - cy:hs - r - cy, r - cx:ws - r - cx], cv2.NORM_L1) + 1e-3 * (cx * cx + cy * cy)
            best = min(best, (cost, cx, cy))
    gx, gy = best[1] * f, best[2] * f
    # XOR counts on bits packed along the rows (eight pixels a byte), as Hamming distances: the template packed
    # once per column shift
    test_bits = np.packbits(test_cu[m:h - m, m:w - m], axis=1)
    fine = (np.inf, 0, 0)
    for dx in range(max(gx - f + 1, -max_shift), min(gx + f, max_shift + 1)):
        temp_bits = np.packbits(temp_cu[:, m - dx:w - m - dx], axis=1)
        for dy in range(max(gy - f + 1, -max_shift), min(gy + f, max_shift + 1)):
            cost = int(cv2.norm(test_bits, temp_bits[m - dy:h - m - dy], cv2.NORM_HAMMING))
            fine = min(fine, (cost + 1e-3 * (dx * dx + dy * dy), dx, dy))
    return fine[1], fine[2], int(fine[0])


def _tile_sums(mask: np.ndarray, tile: int) -> np.ndarray:
    """Count of set pixels per ``tile`` x ``tile`` tile of a bool mask (the last row and column of tiles may be
    narrower), summed in int32 from the mask's bytes."""
    h, w = mask.shape
    idx_y, idx_x = np.arange(0, h, tile), np.arange(0, w, tile)
    return np.add.reduceat(np.add.reduceat(mask.view(np.uint8), idx_y, axis=0, dtype=np.int32), idx_x, axis=1)


def tile_residual(xor: np.ndarray, temp_cu: np.ndarray, tile: int = 80, min_edges: int = 60) -> float:
    """Median over tiles (with enough trace edge) of XOR pixels per template edge pixel.

    About 1 per edge pixel and per pixel of misregistration; the median ignores the few tiles a defect sits in. 0
    when no tile has enough edge to tell (a blank board registers trivially).
    """
    edges = cv2.morphologyEx(temp_cu.astype(np.uint8), cv2.MORPH_GRADIENT, _disk(1)).astype(bool)
    e, x = _tile_sums(edges, tile), _tile_sums(xor, tile)
    ok = e >= min_edges
    return float(np.median(x[ok] / e[ok])) if ok.any() else 0.0


def _local_candidates(gdx: int, gdy: int, radius: int) -> list[tuple[int, int]]:
    """Shifts within ``radius`` of the global one, nearest first (the order that breaks ties towards it)."""
    return sorted(((dx, dy) for dy in range(gdy - radius, gdy + radius + 1)
                   for dx in range(gdx - radius, gdx + radius + 1)),
                  key=lambda s: ((s[0] - gdx) ** 2 + (s[1] - gdy) ** 2, s))


def local_shift_field(test_cu: np.ndarray, temp_cu: np.ndarray, gdx: int, gdy: int,
                      params: AOIParams = DEFAULT_PARAMS) -> tuple[np.ndarray, np.ndarray]:
    """Local shift (dx, dy maps, int32) of the template, per pixel (``local_step`` 1) or per 8 x 8 block (8; the
    maps are then ceil(h / 8) x ceil(w / 8)): among shifts within ``local_radius`` of the global one, the one whose
    XOR over a ``local_window`` square is clearly smallest.

    A local shift must beat the incumbent clearly: 2 pixels per window plus 5 % (noise, JPEG edges), i.e.
    cost < 0.95 best - 2 on the windows' XOR counts, kept in integers as 20 cost + 40 < 19 best. ``local_step`` 1
    decides every pixel (`_pixel_costs`); ``local_step`` 8 decides each 8 x 8 block (`_block_costs`, ~10x cheaper),
    which is what the candidate stage uses: the stretch it follows is smooth, far wider than a block.
    """
    p = params
    h, w = test_cu.shape
    shifts = _local_candidates(gdx, gdy, p.local_radius)
    # the template padded once (edges replicated, as shift_mask does): each shift is then a view, not a copy
    m = max(abs(gdx), abs(gdy)) + p.local_radius
    padded = cv2.copyMakeBorder(temp_cu.view(np.uint8), m, m, m, m, cv2.BORDER_REPLICATE).view(bool)
    window_costs = _pixel_costs(test_cu, padded, m, p.local_window) if p.local_step == 1 else \
        _block_costs(test_cu, padded, m, p.local_window)
    costs = (window_costs(dx, dy) for dx, dy in shifts)
    bar = next(costs)
    kind = bar.dtype.type
    c19, c20, c40 = kind(19), kind(20), kind(40)
    bar = bar * c19
    choice = np.zeros(bar.shape, dtype=np.uint8)
    for i, cost in enumerate(costs, start=1):
        better = cost * c20 + c40 < bar
        if better.any():  # masked copies (np.copyto) rather than boolean indexing: the same, faster
            np.copyto(bar, cost * c19, where=better)
            np.copyto(choice, np.uint8(i), where=better)
    table = np.asarray(shifts, dtype=np.int32)
    return table[choice, 0], table[choice, 1]


def _pixel_costs(test_cu: np.ndarray, padded: np.ndarray, m: int,
                 window: int) -> Callable[[int, int], np.ndarray]:
    """For a shift (dx, dy) of the template (``padded`` by ``m``): the XOR count over the ``window`` square centred
    on each pixel (borders reflected); uint16 while the counts allow it (half the memory traffic of float32), else
    exact float32."""
    h, w = test_cu.shape
    depth = cv2.CV_16U if 20 * window * window + 40 < 2 ** 16 else cv2.CV_32F

    def costs(dx: int, dy: int) -> np.ndarray:
        shifted = padded[m - dy:m - dy + h, m - dx:m - dx + w]
        return cv2.boxFilter((test_cu ^ shifted).view(np.uint8), depth, (window, window), normalize=False,
                             borderType=cv2.BORDER_REFLECT)
    return costs


def _block_costs(test_cu: np.ndarray, padded: np.ndarray, m: int,
                 window: int) -> Callable[[int, int], np.ndarray]:
    """For a shift (dx, dy) of the template (``padded`` by ``m``): the XOR count, for each 8 x 8 block, over the
    square of n x n blocks centred on it (n the odd number of blocks nearest ``window`` pixels), clipped at the
    image's edge (every shift is compared on the same pixels, so clipping is fair).

    On bits packed along the rows, a block is one byte wide: XOR and count the bits of bytes (eight pixels at once),
    then sum each block's eight rows. The template is packed once per column shift."""
    h, w = test_cu.shape
    hb, wb = -(-h // BLOCK), -(-w // BLOCK)
    n = max(1, round(window / BLOCK))
    n += 1 - n % 2
    # uint16 window counts while the rule's 20 cost + 40 stays below 2 ** 16 (5 x 5 blocks: 32 040), else float32
    depth = cv2.CV_16U if 20 * n * n * BLOCK * BLOCK + 40 < 2 ** 16 else cv2.CV_32F
    test_bits = np.packbits(test_cu, axis=1)  # (h, wb): a row's last byte padded with zeros
    counts = np.zeros((hb * BLOCK, wb), dtype=np.uint8)  # rows padded with zeros to whole blocks
    packed: dict[int, np.ndarray] = {}

    def costs(dx: int, dy: int) -> np.ndarray:
        if dx not in packed:
            packed[dx] = np.packbits(padded[:, m - dx:m - dx + w], axis=1)
        np.bitwise_count(test_bits ^ packed[dx][m - dy:m - dy + h], out=counts[:h])
        blocks = counts.reshape(hb, BLOCK, wb).sum(1, dtype=np.uint8)  # at most 64 pixels a block
        return cv2.boxFilter(blocks, depth, (n, n), normalize=False, borderType=cv2.BORDER_CONSTANT)
    return costs


def warp_masks(masks: Sequence[np.ndarray], dx: np.ndarray, dy: np.ndarray) -> list[np.ndarray]:
    """``out[y, x] = mask[y - dy[y, x], x - dx[y, x]]`` for each mask, edges replicated (``shift_mask`` per
    pixel). A field per pixel (the masks' shape): one nearest-neighbour remap of all the masks stacked; a field per
    BLOCK x BLOCK block: `_warp_blocks`."""
    h, w = masks[0].shape
    if dx.shape != (h, w):
        return [_warp_blocks(m, dx, dy) for m in masks]
    map_x = (np.arange(w, dtype=np.int32)[None, :] - dx).astype(np.float32)
    map_y = (np.arange(h, dtype=np.int32)[:, None] - dy).astype(np.float32)
    stacked = np.dstack([m.view(np.uint8) if m.dtype == bool else m for m in masks])
    out = cv2.remap(stacked, map_x, map_y, cv2.INTER_NEAREST, borderMode=cv2.BORDER_REPLICATE)
    out = out.reshape(h, w, len(masks))
    planes = [np.ascontiguousarray(out[..., i]) for i in range(len(masks))]
    return [plane.view(bool) if m.dtype == bool else plane for plane, m in zip(planes, masks)]  # 0/1 bytes


def _warp_blocks(mask: np.ndarray, dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """`warp_masks` with one shift per BLOCK x BLOCK block (``dx``, ``dy``: ceil(h / BLOCK) x ceil(w / BLOCK)): the
    mask padded once (edges replicated, whole blocks), then each block that moves is one strided gather of the
    pixels it reads (on Deep PCB pairs ~16 % of the blocks; half the cost of remapping every pixel)."""
    h, w = mask.shape
    hb, wb = dx.shape
    r = int(max(np.abs(dx).max(), np.abs(dy).max()))
    src = mask.view(np.uint8) if mask.dtype == bool else mask
    padded = cv2.copyMakeBorder(src, r, r + hb * BLOCK - h, r, r + wb * BLOCK - w, cv2.BORDER_REPLICATE)
    out = padded[r:r + hb * BLOCK, r:r + wb * BLOCK].copy()
    by, bx = np.nonzero(dx | dy)
    reads = np.lib.stride_tricks.sliding_window_view(padded, (BLOCK, BLOCK))
    out.reshape(hb, BLOCK, wb, BLOCK).transpose(0, 2, 1, 3)[by, bx] = \
        reads[by * BLOCK - dy[by, bx] + r, bx * BLOCK - dx[by, bx] + r]
    out = np.ascontiguousarray(out[:h, :w])
    return out.view(bool) if mask.dtype == bool else out


def moved_share(dx: np.ndarray, dy: np.ndarray, gdx: int, gdy: int, shape: tuple[int, int]) -> float:
    """Share of the image's pixels whose local shift (a field per pixel or per block) is not the global one."""
    moved = (dx != gdx) | (dy != gdy)
    if moved.shape == shape:
        return float(moved.mean())
    h, w = shape  # a block field: each block weighs its pixels (the last row and column of blocks may be partial)
    rows = np.minimum(BLOCK, h - BLOCK * np.arange(moved.shape[0]))
    cols = np.minimum(BLOCK, w - BLOCK * np.arange(moved.shape[1]))
    return float(rows @ moved @ cols) / (h * w)


def register(test_cu: np.ndarray, temp_cu: np.ndarray, params: AOIParams,
             masks: Sequence[np.ndarray]) -> tuple[int, int, tuple[np.ndarray, np.ndarray] | None, list[np.ndarray]]:
    """The template's global shift (dx, dy), its local shift field (None without local re-registration) and
    ``masks`` (the template, or masks drawn from it such as its tolerance band) moved by them; no verdict (`align`)."""
    p = params
    gdx, gdy = estimate_shift(test_cu, temp_cu, p.max_shift)[:2] if p.max_shift > 0 else (0, 0)
    if p.local_radius <= 0:  # copies: shift_mask(m, 0, 0) is m itself, and callers may write
        return gdx, gdy, None, [shift_mask(m, gdx, gdy).copy() for m in masks]
    field = local_shift_field(test_cu, temp_cu, gdx, gdy, p)
    return gdx, gdy, field, warp_masks(masks, *field)


def align(test_cu: np.ndarray, temp_cu: np.ndarray, params: AOIParams = DEFAULT_PARAMS,
          extra: Sequence[np.ndarray] = ()) -> tuple[Alignment, np.ndarray, list[np.ndarray]]:
    """Register the template mask to the test mask: global shift, then dense local re-registration.

    Deep PCB templates are aligned only roughly: some pairs are stretched so that one side is off by 2-3 pixels and
    the other not at all. Each pixel (or block, ``local_step``) takes, among shifts within ``local_radius`` of the
    global one, the shift whose XOR over a ``local_window`` square around it is smallest (ties and near-ties keep the
    shift nearest the global one, so featureless areas follow the global shift; ``local_shift_field``). A window
    holds far more trace edge than a defect has pixels, so a shift cannot "explain away" a defect. ``extra`` masks
    (e.g. the dilated/eroded template) are warped alike. ``max_shift`` 0: no global search (the template is
    registered already, as in a reference composite). Returns the alignment verdict, the aligned template and the
    aligned extras.
    """
    p = params
    gdx, gdy, field, (out, *outs) = register(test_cu, temp_cu, p, [temp_cu, *extra])
    local_share = 0.0 if field is None else moved_share(*field, gdx, gdy, test_cu.shape)
    residual = tile_residual(test_cu ^ out, temp_cu)
    misaligned = residual > p.max_residual or (p.max_shift > 0 and max(abs(gdx), abs(gdy)) >= p.max_shift)
    return Alignment(gdx, gdy, float(residual), local_share, bool(misaligned)), out, outs


def _box(x: int, y: int, w: int, h: int, p: AOIParams, size: tuple[int, int]) -> tuple[float, float, float, float]:
    H, W = size
    cx, cy = x + w / 2, y + h / 2
    bw = max(w + 2 * p.pad, p.min_box)
    bh = max(h + 2 * p.pad, p.min_box)
    x1, x2 = cx - bw / 2, cx + bw / 2
    y1, y2 = cy - bh / 2, cy + bh / 2
    # slide back inside the image rather than clip (keeps the size a labeller would draw at the border)
    if x1 < 0:
        x1, x2 = 0.0, min(float(W), x2 - x1)
    if x2 > W:
        x1, x2 = max(0.0, x1 - (x2 - W)), float(W)
    if y1 < 0:
        y1, y2 = 0.0, min(float(H), y2 - y1)
    if y2 > H:
        y1, y2 = max(0.0, y1 - (y2 - H)), float(H)
    return float(x1), float(y1), float(x2), float(y2)


def component_stats(mask: np.ndarray) -> tuple[int, np.ndarray, np.ndarray]:
    """8-connected components of a uint8 mask: (count with the background, labels, stats). With statistics and
    int32 labels, OpenCV's default, Spaghetti, Bolelli and SAUF took 3.0-3.3 ms on the candidate stage's 640 x 640
    difference masks of Deep PCB boards, Grana (BBDT) 0.9 ms."""
    n, labels, stats, _ = cv2.connectedComponentsWithStatsWithAlgorithm(mask, 8, cv2.CV_32S, cv2.CCL_GRANA)
    return n, labels, stats


def _type_defect(kind: str, comp: np.ndarray, test_cu: np.ndarray, temp_cu: np.ndarray) -> int:
    """Rule typing on a local window (all arrays cropped to it; ``temp_cu`` aligned). ``comp``: the cleaned defect.

    The cleaned component lies inside the tolerance band; the rules look at the whole raw difference it belongs to
    (the pieces of the untolerated difference that overlap it), so a cut across a trace reaches both edges.
    """
    raw = (test_cu & ~temp_cu) if kind == EXTRA else (~test_cu & temp_cu)
    n, lab = cv2.connectedComponents(raw.astype(np.uint8), connectivity=8)
    near = cv2.dilate(comp.astype(np.uint8), _disk(1)).astype(bool)
    ids = set(np.unique(lab[near & raw]).tolist()) - {0}
    comp = comp | np.isin(lab, list(ids))
    touch = cv2.dilate(comp.astype(np.uint8), _disk(2)).astype(bool)
    if kind == EXTRA:
        _, lab = cv2.connectedComponents((temp_cu & ~touch).astype(np.uint8), connectivity=8)
        ring = cv2.dilate(touch.astype(np.uint8), _disk(1)).astype(bool) & ~touch
        touched = len(set(np.unique(lab[ring & temp_cu]).tolist()) - {0})
        if touched >= 2:
            return CLASS_ID["short"]
        if touched == 1:
            return CLASS_ID["spur"]
        return CLASS_ID["copper"]
    # missing copper: enclosed by copper is a pin-hole; cutting a conductor into more pieces is an open; a bite
    # out of an edge is a mousebite
    ring = touch & ~comp
    if ring.any() and temp_cu[ring].mean() > 0.97:
        return CLASS_ID["pin-hole"]
    cut = cv2.dilate(comp.astype(np.uint8), _disk(2)).astype(bool)
    n, lab, stats, _ = cv2.connectedComponentsWithStats(temp_cu.astype(np.uint8), connectivity=8)
    hit = set(np.unique(lab[cut & temp_cu]).tolist()) - {0}
    conductor = np.isin(lab, list(hit))
    n2, _, stats2, _ = cv2.connectedComponentsWithStats((conductor & ~cut).astype(np.uint8), connectivity=8)
    pieces = int((stats2[1:, cv2.CC_STAT_AREA] >= 10).sum())
    if pieces > len(hit):
        return CLASS_ID["open"]
    return CLASS_ID["mousebite"]


# ---------------------------------------------------------------------------------------------- inspector


@dataclass
class Component:
    """One cleaned difference region: its bounding box (x, y, w, h), pixel area, copper kind and rule type."""

    kind: str
    x: int
    y: int
    w: int
    h: int
    area: int
    class_id: int = UNTYPED


def find_components(test_cu: np.ndarray, temp_cu: np.ndarray, params: AOIParams = DEFAULT_PARAMS,
                    aligned: tuple[Alignment, np.ndarray, list[np.ndarray]] | None = None,
                    ) -> tuple[Alignment, list[Component]]:
    """Align, difference with tolerance, clean up, label: components of at least ``min_area`` pixels.

    ``aligned``: a precomputed ``align`` result whose extras are the dilated and eroded template for
    ``params.tolerance`` (tuning reuses it); computed here otherwise.
    """
    p = params
    if test_cu.shape != temp_cu.shape:
        raise MisalignedError(f"test image {test_cu.shape} and template {temp_cu.shape} differ in size")
    if aligned is None:
        aligned = align(test_cu, temp_cu, p, extra=tolerance_masks(temp_cu, p.tolerance))
    alignment, temp_al, (temp_grow, temp_shrink) = aligned
    if alignment.misaligned and p.on_misaligned == "refuse":
        raise MisalignedError(
            f"template does not register (shift {alignment.dx}, {alignment.dy} px, residual {alignment.residual:.2f});"
            " refusing to compare")
    return alignment, difference_components(test_cu, temp_grow, temp_shrink, p, temp_al)


def difference_components(test_cu: np.ndarray, temp_grow: np.ndarray, temp_shrink: np.ndarray,
                          params: AOIParams = DEFAULT_PARAMS, temp_al: np.ndarray | None = None) -> list[Component]:
    """Difference with tolerance against the registered template grown and shrunk, clean up, label: components of
    at least ``min_area`` pixels; rule-typed when ``params.typed`` (which reads the registered template ``temp_al``)."""
    p = params
    if p.typed and temp_al is None:
        raise ValueError("typing the components reads the registered template: pass temp_al")
    masks = {EXTRA: test_cu & ~temp_grow, MISSING: ~test_cu & temp_shrink}
    comps: list[Component] = []
    H, W = test_cu.shape
    for kind, m in masks.items():
        m = m.astype(np.uint8)
        if p.open_radius > 0:
            m = cv2.morphologyEx(m, cv2.MORPH_OPEN, _disk(p.open_radius))
        if p.close_radius > 0:
            m = cv2.morphologyEx(m, cv2.MORPH_CLOSE, _disk(p.close_radius))
        n, lab, stats = component_stats(m)
        for i in range(1, n):
            x, y, w, h, area = (int(v) for v in stats[i])
            if area < p.min_area:
                continue
            cls = UNTYPED
            if p.typed:
                c = p.context
                xa, ya, xb, yb = max(0, x - c), max(0, y - c), min(W, x + w + c), min(H, y + h + c)
                cls = _type_defect(kind, lab[ya:yb, xa:xb] == i, test_cu[ya:yb, xa:xb], temp_al[ya:yb, xa:xb])
            comps.append(Component(kind, x, y, w, h, area, cls))
    return comps


def to_detections(comps: Iterable[Component], params: AOIParams = DEFAULT_PARAMS,
                  size: tuple[int, int] = (640, 640)) -> list[AOIDetection]:
    """Boxes a labeller would draw (padded, at least ``min_box``), scored by area, highest score first."""
    p = params
    dets = [AOIDetection(*_box(c.x, c.y, c.w, c.h, p, size), score=1.0 - math.exp(-c.area / p.score_scale),
                         class_id=c.class_id if p.typed else UNTYPED, kind=c.kind, area=c.area)
            for c in comps if c.area >= p.min_area]
    dets.sort(key=lambda d: -d.score)
    return dets


def tolerance_masks(temp_cu: np.ndarray, tolerance: int) -> tuple[np.ndarray, np.ndarray]:
    """The template grown and shrunk by the edge tolerance (copper may move that far without being a defect)."""
    if tolerance <= 0:
        return temp_cu, temp_cu
    k = _disk(tolerance)
    m = temp_cu.astype(np.uint8)
    return cv2.dilate(m, k).astype(bool), cv2.erode(m, k).astype(bool)


def inspect_masks(test_cu: np.ndarray, temp_cu: np.ndarray, params: AOIParams = DEFAULT_PARAMS) -> AOIResult:
    """Inspect binarised masks (copper = True)."""
    alignment, comps = find_components(test_cu, temp_cu, params)
    return AOIResult(to_detections(comps, params, test_cu.shape), alignment)


def inspect_pair(test: np.ndarray, template: np.ndarray, params: AOIParams = DEFAULT_PARAMS) -> AOIResult:
    """Compare one test image with its template (grey or colour arrays); scored boxes and the alignment verdict."""
    return inspect_masks(binarize(test, params.binarize_threshold), binarize(template, params.binarize_threshold),
                         params)


def inspect_sample(sample: Sample, params: AOIParams = DEFAULT_PARAMS) -> AOIResult:
    return inspect_pair(load_gray(sample.test_image), load_gray(sample.template_image), params)


# ------------------------------------------------------------------------------------------------ scoring


@dataclass
class LoadedPair:
    sample: Sample
    test: np.ndarray
    template: np.ndarray
    ground_truth: list = field(default_factory=list)  # rows (x1, y1, x2, y2, class_id)


def load_pairs(samples: Iterable[Sample]) -> list[LoadedPair]:
    """Read images and labels once (a tuning grid then re-inspects them from memory)."""
    out = []
    for s in samples:
        gt = [(b.x1, b.y1, b.x2, b.y2, b.class_id) for b in read_labels(s.label_file)]
        out.append(LoadedPair(s, load_gray(s.test_image), load_gray(s.template_image), gt))
    return out


def predict_aoi(pairs: Sequence[LoadedPair | Sample], params: AOIParams = DEFAULT_PARAMS) -> list[list[tuple]]:
    """Prediction rows per image, aligned with ``pairs``."""
    rows = []
    for pr in pairs:
        res = inspect_pair(pr.test, pr.template, params) if isinstance(pr, LoadedPair) else inspect_sample(pr, params)
        rows.append(res.rows())
    return rows


def score_aoi(samples: Sequence[LoadedPair | Sample], params: AOIParams = DEFAULT_PARAMS,
              iou_threshold: float = DEEPPCB_IOU, target_recall: float = 0.90) -> dict:
    """Deep PCB protocol figures of the inspector on ``samples`` (Samples, read one at a time, or preloaded pairs).

    Class-agnostic (was each defect found): AP, best F and its operating point, the point at the tuned
    ``params.threshold`` (``operating``: the honest figure on held-out data, the threshold having been chosen on
    training groups), the point at ``target_recall``, and the point with every call kept. Typed (when
    ``params.typed``): per-class AP and mAP of the typing rules. ``misaligned``: pairs flagged by the alignment check.
    """
    preds, gts, flagged = [], [], []
    for s in samples:
        if isinstance(s, LoadedPair):
            res, gt, sid = inspect_pair(s.test, s.template, params), s.ground_truth, s.sample.image_id
        else:
            res = inspect_sample(s, params)
            gt, sid = [(b.x1, b.y1, b.x2, b.y2, b.class_id) for b in read_labels(s.label_file)], s.image_id
        preds.append(res.rows())
        gts.append(gt)
        if res.misaligned:
            flagged.append(sid)
    agn = evaluate_detections(preds, gts, iou_threshold, class_agnostic=True)
    out = {
        "params": params.to_dict(),
        "n_images": len(preds),
        "misaligned": flagged,
        "operating": operating_point(preds, gts, params.threshold, iou_threshold, class_agnostic=True).to_dict(),
        "matched_recall": matched_recall(preds, gts, target_recall, iou_threshold, class_agnostic=True).to_dict(),
        "all_calls": operating_point(preds, gts, 0.0, iou_threshold, class_agnostic=True).to_dict(),
        "class_agnostic": agn.to_dict(),
    }
    if params.typed:
        from .classes import CLASS_NAMES

        typed = evaluate_detections(preds, gts, iou_threshold, class_agnostic=False, num_classes=len(CLASS_NAMES))
        out["typed"] = typed.to_dict(class_names=CLASS_NAMES)
    return out
