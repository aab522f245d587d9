"""Batch inference: images are decoded on a worker thread while the model runs on the previous one."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator

import numpy as np

from pcb_pipeline.core.images import BadImageError, read_image


def _decode(item: tuple[str, Path]):
    name, path = item
    try:
        return name, read_image(path), None
    except BadImageError as e:
        return name, None, str(e)


def run_batch(detector, images: dict[str, Path], prefetch: int = 4
              ) -> Iterator[tuple[str, np.ndarray | None, list, str | None]]:
    """Yield (name, image, detections, error) per image, in order. Unreadable images yield an error, not a crash."""
    items = list(images.items())
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = [pool.submit(_decode, it) for it in items[:prefetch]]
        nxt = prefetch
        while pending:
            name, image, error = pending.pop(0).result()
            if nxt < len(items):
                pending.append(pool.submit(_decode, items[nxt]))
                nxt += 1
            if error:
                yield name, None, [], error
                continue
            yield name, image, detector.predict([image])[0], None
