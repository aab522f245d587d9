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


# ------------------------------------------------------------------ one decoder: fast path, bit depth, orientation

def _reference_pixels(path):
    """What PIL alone decodes (decode_image): the fast OpenCV path must give exactly these pixels."""
    return decode_image(path.read_bytes(), str(path))


def test_fast_path_gives_the_decoders_pixels(synthetic_samples, tmp_path):
    import cv2

    from pcb_pipeline.core.images import read_gray, read_image

    for s in synthetic_samples[::5]:  # grey and 3-channel JPEGs
        assert np.array_equal(read_image(s.test_image), _reference_pixels(s.test_image))
        assert np.array_equal(read_gray(s.test_image), cv2.imread(str(s.test_image), cv2.IMREAD_GRAYSCALE))
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (50, 70, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "c.png"), img)
    cv2.imwrite(str(tmp_path / "g.png"), img[:, :, 0])
    cv2.imwrite(str(tmp_path / "c.jpg"), img)
    Image.fromarray(img[:, :, 0]).convert("P").save(tmp_path / "p.png")  # palette: the decoder's path
    Image.fromarray(np.dstack([img, img[:, :, :1]])).save(tmp_path / "a.png")  # RGBA: the decoder's path
    Image.fromarray(img).save(tmp_path / "b.bmp")
    for name in ("c.png", "g.png", "c.jpg", "p.png", "a.png", "b.bmp"):
        out = read_image(tmp_path / name)
        assert out.dtype == np.uint8 and np.array_equal(out, _reference_pixels(tmp_path / name)), name


def test_fast_path_errors_are_the_decoders_errors(synthetic_samples, tmp_path):
    import cv2

    from pcb_pipeline.core.images import read_gray, read_image

    data = synthetic_samples[0].test_image.read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])  # truncated: refused, never grey-padded
    (tmp_path / "tiny.png").write_bytes(cv2.imencode(".png", np.zeros((8, 8), np.uint8))[1].tobytes())
    (tmp_path / "text.jpg").write_text("hello")
    (tmp_path / "empty.jpg").write_bytes(b"")
    for name, match in (("cut.jpg", "corrupt or truncated"), ("tiny.png", "too small"), ("text.jpg", "not an image"),
                        ("empty.jpg", "empty"), ("missing.jpg", "no such file")):
        for reader in (read_image, read_gray):
            with pytest.raises(BadImageError, match=match) as err:
                reader(tmp_path / name)
            assert name in str(err.value)


@pytest.mark.parametrize("suffix", [".tif", ".png"])
def test_sixteen_bit_scans_are_scaled_not_clipped(tmp_path, suffix):
    import cv2

    from pcb_pipeline.core.aoi import load_gray
    from pcb_pipeline.core.images import read_image

    rng = np.random.default_rng(1)
    grey8 = rng.integers(0, 256, (60, 80), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / f"g16{suffix}"), grey8.astype(np.uint16) * 257)
    cv2.imwrite(str(tmp_path / f"c16{suffix}"), np.dstack([grey8] * 3).astype(np.uint16) * 257)
    for name in (f"g16{suffix}", f"c16{suffix}"):
        bgr = read_image(tmp_path / name)
        assert np.array_equal(bgr[:, :, 1], grey8), name  # the same picture as the 8-bit scan
        assert np.array_equal(load_gray(tmp_path / name), grey8), name


def test_exif_orientation_is_applied(tmp_path):
    from pcb_pipeline.core.images import read_image

    upright = np.zeros((40, 80, 3), np.uint8)  # wide, with a bright left edge
    upright[:, :10] = 255
    im = Image.fromarray(upright)
    exif = im.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to view": the camera was held sideways
    im.save(tmp_path / "phone.jpg", exif=exif, quality=95)
    out = read_image(tmp_path / "phone.jpg")
    assert out.shape[:2] == (80, 40)  # tall, as viewed
    assert out[:10].mean() > 200 and out[-10:].mean() < 50  # the bright edge is now on top


@pytest.mark.parametrize("array,match", [
    (np.full((40, 40), 0.5, np.float32), "floating-point"),
    (np.full((40, 40), 70000, np.int32), "32-bit integer"),
])
def test_unsupported_depths_are_refused_by_name(tmp_path, array, match):
    from pcb_pipeline.core.images import read_image

    Image.fromarray(array).save(tmp_path / "deep.tif")
    with pytest.raises(BadImageError, match=match):
        read_image(tmp_path / "deep.tif")
