"""Decoding board images from files or bytes with clear errors for bad input."""
from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

MAX_PIXELS = 40_000_000  # a 6000x6000 scan is fine; beyond this we refuse rather than exhaust memory
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}


class BadImageError(ValueError):
    pass


def _pil_open(fp):
    """PIL's own Image.open. Importing ultralytics replaces it with a wrapper that, on a file that is not an image,
    tries to install and import pi-heif (absent offline) and raises ModuleNotFoundError instead of a clear error."""
    opener = Image.open
    module = getattr(opener, "__module__", "") or ""
    if module.startswith("ultralytics"):
        opener = getattr(sys.modules.get(module), "_image_open", opener)
    return opener(fp)


def decode_image(data: bytes, name: str = "image") -> np.ndarray:
    """Bytes -> HxWx3 uint8 BGR (the layout OpenCV and ultralytics expect). Grayscale and RGBA are converted."""
    if not data:
        raise BadImageError(f"{name}: the file is empty")
    try:
        with _pil_open(io.BytesIO(data)) as im:
            if im.width * im.height > MAX_PIXELS:
                raise BadImageError(f"{name}: {im.width}x{im.height} is too large (limit {MAX_PIXELS:,} pixels)")
            im.load()  # raises on truncated data instead of returning grey padding
            rgb = im.convert("RGB")
    except BadImageError:
        raise
    except Image.DecompressionBombError:
        raise BadImageError(f"{name}: image is too large (limit {MAX_PIXELS:,} pixels)") from None
    except UnidentifiedImageError:
        raise BadImageError(f"{name}: not an image (no known image format)") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise BadImageError(f"{name}: corrupt or truncated image ({e})") from None
    if min(rgb.size) < 32:
        raise BadImageError(f"{name}: {rgb.width}x{rgb.height} is too small to inspect (minimum 32 px per side)")
    return np.ascontiguousarray(np.asarray(rgb)[:, :, ::-1])


def read_image(path: Path) -> np.ndarray:
    path = Path(path)
    if not path.is_file():
        raise BadImageError(f"{path}: no such file")
    return decode_image(path.read_bytes(), str(path))
