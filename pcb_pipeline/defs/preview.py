"""Small inline preview images for asset metadata."""
from __future__ import annotations

import base64

import cv2
import dagster as dg
import numpy as np


def preview_markdown(images: list[np.ndarray], caption: str = "", tile: int = 192) -> dg.MetadataValue:
    """A row of thumbnails (BGR arrays) embedded as a PNG data URI."""
    tiles = [cv2.resize(im if im.ndim == 3 else cv2.cvtColor(im, cv2.COLOR_GRAY2BGR), (tile, tile),
                        interpolation=cv2.INTER_AREA) for im in images[:4]]
    strip = np.hstack(tiles) if tiles else np.full((tile, tile, 3), 255, np.uint8)
    ok, png = cv2.imencode(".png", strip)
    if not ok:
        raise ValueError("could not encode preview")
    data = base64.b64encode(png.tobytes()).decode()
    return dg.MetadataValue.md(f"![{caption}](data:image/png;base64,{data})\n\n{caption}")
