"""Reference-aware model input: the test image, its registered template and their difference as three channels.

Factories inspect against a golden board, and Deep PCB ships each test image with its defect-free template. A
detector that only sees the test image must learn from scratch what a correct layout looks like; given the template
beside it, a defect is simply where the two disagree. The composite is an ordinary 3-channel image (B = test,
G = registered template, R = |test - template|), so Ultralytics trains and predicts on it unchanged: flips, mosaic and
scaling move all three channels together. Colour jitter would mix the channels' meanings and stays off (it is off
for binary boards anyway).

The template enters as its binary layout (copper / no copper, ``aoi.binarize``): the golden board is a layout, its
scan's JPEG noise is not information, and a template library then stores 1-bit PNGs (about 4 KB per Deep PCB
template against 50 KB as JPEG), which is what lets all templates travel to the GPU machine. Registration uses the
legacy inspector's global XOR search (``aoi.estimate_shift``); the model absorbs the residual 1-3 px stretch some Deep
PCB pairs have, since it sees both images rather than only a thresholded difference.
"""
from __future__ import annotations

import cv2
import numpy as np

from .aoi import _gray, binarize, estimate_shift, load_gray, shift_mask, tile_residual

TEST_ONLY = "test"
REFERENCE = "reference"
INPUT_MODES = (TEST_ONLY, REFERENCE)
INPUT_MODE_KEY = "pcb_input"  # names the mode in data.yaml, the .pt checkpoint and the ONNX metadata
MAX_SHIFT = 16  # pixels; the same search range as the inspector's default
# A template is refused when, after the best global shift, the median XOR per template edge pixel (the inspector's
# tile residual) is above this: every one of the 1000 Deep PCB trainval pairs is below 3.6 (median 0.3), most
# templates of another board are above it (median 11.7; measured 2026-12-05). What local stretch is left below it
# the inspector's local re-registration and the models absorb.
MAX_TEMPLATE_RESIDUAL = 4.0


class TemplateError(ValueError):
    """A board image cannot be given to a reference-aware model: a property of that image, not of the model."""


class MissingTemplateError(TemplateError):
    """A reference-aware model was given a board image without its template."""


class ReferenceMismatchError(TemplateError):
    """The template cannot be paired with the test image (different size)."""


class MisregisteredTemplateError(TemplateError):
    """The template does not line up with the test image within the registration's reach (another board's
    template, or one shifted or rotated beyond the search)."""


def check_input_mode(mode: str) -> str:
    if mode not in INPUT_MODES:
        raise ValueError(f"unknown model input mode {mode!r}: choose one of {INPUT_MODES}")
    return mode


def reference_composite(test: np.ndarray, template: np.ndarray, register: bool = True) -> np.ndarray:
    """HxWx3 uint8 (BGR order: test, registered template, absolute difference) from grey or colour images."""
    t, r = _gray(test), _gray(template)
    if t.shape != r.shape:
        raise ReferenceMismatchError(f"template is {r.shape[1]}x{r.shape[0]} but the test image is "
                                     f"{t.shape[1]}x{t.shape[0]}: they must be scans of the same size")
    layout = binarize(r)
    if register:
        test_cu = binarize(t)
        dx, dy, _ = estimate_shift(test_cu, layout, MAX_SHIFT)
        layout = shift_mask(layout, dx, dy)
        residual = tile_residual(test_cu ^ layout, layout)
        if residual > MAX_TEMPLATE_RESIDUAL:
            raise MisregisteredTemplateError(
                f"the template does not line up with this board: {residual:.1f} differing pixels per trace edge "
                f"pixel after the best shift within {MAX_SHIFT} px (at most {MAX_TEMPLATE_RESIDUAL} for a board "
                f"and its own template); is it this board's template?")
    r = np.where(layout, 0, 255).astype(np.uint8)  # copper is dark, as in the scans
    return np.ascontiguousarray(np.dstack([t, r, cv2.absdiff(t, r)]))


def sample_composite(sample) -> np.ndarray:
    """The composite of a Deep PCB pair (``deeppcb.Sample``), read from its files."""
    return reference_composite(load_gray(sample.test_image), load_gray(sample.template_image))
