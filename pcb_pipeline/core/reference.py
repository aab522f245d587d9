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

from .aoi import _gray, binarize, estimate_shift, load_gray, shift_mask

TEST_ONLY = "test"
REFERENCE = "reference"
INPUT_MODES = (TEST_ONLY, REFERENCE)
INPUT_MODE_KEY = "pcb_input"  # names the mode in data.yaml, the .pt checkpoint and the ONNX metadata
MAX_SHIFT = 16  # pixels; the same search range as the inspector's default


class TemplateError(ValueError):
    """A board image cannot be given to a reference-aware model: a property of that image, not of the model."""


class MissingTemplateError(TemplateError):
    """A reference-aware model was given a board image without its template."""


class ReferenceMismatchError(TemplateError):
    """The template cannot be paired with the test image (different size)."""


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
        dx, dy, _ = estimate_shift(binarize(t), layout, MAX_SHIFT)
        layout = shift_mask(layout, dx, dy)
    r = np.where(layout, 0, 255).astype(np.uint8)  # copper is dark, as in the scans
    return np.ascontiguousarray(np.dstack([t, r, cv2.absdiff(t, r)]))


def sample_composite(sample) -> np.ndarray:
    """The composite of a Deep PCB pair (``deeppcb.Sample``), read from its files."""
    return reference_composite(load_gray(sample.test_image), load_gray(sample.template_image))
