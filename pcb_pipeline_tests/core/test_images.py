"""decode_image: clear errors for bad bytes, conversions for odd but valid images."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from pcb_pipeline.core.images import BadImageError, decode_image


def _png(mode: str, size=(64, 48)) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, 128 if mode == "L" else (10, 20, 30, 255)[: len(mode)]).save(buf, "PNG")
    return buf.getvalue()


def _jpeg(size=(64, 64)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (200, 10, 10)).save(buf, "JPEG")
    return buf.getvalue()


@pytest.mark.parametrize("data,match", [
    (b"", "empty"),
    (b"hello, not an image", "not an image"),
    (_jpeg()[:200], "corrupt or truncated"),
    (_png("L", (8, 8)), "too small"),
])
def test_bad_bytes_get_clear_errors(data, match):
    with pytest.raises(BadImageError, match=match):
        decode_image(data, "upload.jpg")


def test_not_an_image_is_clear_even_after_ultralytics_patches_pil():
    import ultralytics.utils.patches  # noqa: F401 - replaces PIL.Image.open with a pi-heif-installing wrapper

    with pytest.raises(BadImageError, match="not an image"):
        decode_image(b"\x00\x01 definitely not a picture", "x.jpg")


def test_huge_image_refused_before_decoding(monkeypatch):
    import pcb_pipeline.core.images as images

    monkeypatch.setattr(images, "MAX_PIXELS", 1000)
    with pytest.raises(BadImageError, match="too large"):
        decode_image(_jpeg((64, 64)), "big.jpg")


@pytest.mark.parametrize("mode", ["L", "RGBA", "RGB"])
def test_grayscale_and_rgba_become_bgr(mode):
    arr = decode_image(_png(mode), "ok.png")
    assert arr.shape == (48, 64, 3) and arr.dtype == np.uint8


def test_decompression_bomb_is_too_large_not_corrupt(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # PIL raises DecompressionBombError above 2x this
    with pytest.raises(BadImageError, match="too large"):
        decode_image(_jpeg((64, 64)), "bomb.jpg")
