"""Batch inference as a three-stage pipeline: decoding, inference and the caller's writes overlap.

    decoder thread(s)  ──►  inference thread  ──►  the caller (build rows, draw, write plots, ...)
      read_image(i+k)         detector(i+1)            handles result i

Images are decoded ``prefetch`` ahead on a small thread pool, the model runs on its own thread, and results come back
to the caller in input order through a bounded queue, so while the caller writes the rows and plots of one image the
next image is already being inferred and the ones after it decoded. The heavy parts (JPEG decoding, ONNX Runtime,
cv2) release the GIL, so the stages really run side by side.

Errors: an image that cannot be decoded yields ``(name, None, [], message)`` and the batch goes on; an exception in
the model itself is not a property of one image, so it stops the batch and is raised to the caller.
"""
from __future__ import annotations

import queue
import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator

import numpy as np

from pcb_pipeline.core.images import BadImageError, read_image
from pcb_pipeline.core.reference import TemplateError

_DONE = object()


def _decode(item: tuple[str, Path, Path | None], prepare=None):
    """(name, image, model input, error). With ``prepare`` (a reference-aware detector's ``model_input``) the
    template is read too and the composite is built here, on the decoder thread, not on the inference thread."""
    name, path, template = item
    current = path
    try:
        image = read_image(path)
        if prepare is None:
            return name, image, image, None
        current = template
        return name, image, prepare(image, read_image(template) if template is not None else None), None
    except BadImageError as e:
        return name, None, None, str(e)
    except TemplateError as e:
        return name, None, None, f"{path}: {e}"
    except (OSError, MemoryError) as e:  # unreadable file, out of memory for one absurd image: that image only
        return name, None, None, f"{current}: cannot read image ({type(e).__name__}: {e})"


def run_batch(detector, images: dict[str, Path], prefetch: int = 4, decode_workers: int = 1, conf: float | None = None,
              templates: dict[str, Path] | None = None) -> Iterator[tuple[str, np.ndarray | None, list, str | None]]:
    """Yield (name, image, detections, error) per image, in input order.

    ``detector`` is anything with ``predict(list_of_bgr_arrays, conf=None) -> list[list[Detection]]``. Unreadable
    images yield an error message instead of a crash; the batch continues. ``prefetch`` bounds how many decoded
    images (and finished results) wait in memory. Closing the generator early stops the worker threads.
    A reference-aware detector (``needs_template``) gets each image's template from ``templates`` (same keys),
    decoded alongside it; an image without a usable template is an error of that image.
    """
    prepare = detector.model_input if getattr(detector, "needs_template", False) else None
    templates = templates if prepare else None  # a test-image model never reads them
    items = [(name, path, (templates or {}).get(name)) for name, path in images.items()]
    prefetch = max(1, int(prefetch))
    results: queue.Queue = queue.Queue(maxsize=prefetch)
    stop = threading.Event()

    def put(obj) -> bool:
        while not stop.is_set():
            try:
                results.put(obj, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def infer_worker() -> None:
        try:
            with ThreadPoolExecutor(max_workers=max(1, decode_workers), thread_name_prefix="pcb-decode") as pool:
                pending: deque = deque(pool.submit(_decode, it, prepare) for it in items[:prefetch])
                nxt = len(pending)
                try:
                    while pending and not stop.is_set():
                        name, image, model_input, error = pending.popleft().result()
                        if nxt < len(items):
                            pending.append(pool.submit(_decode, items[nxt], prepare))
                            nxt += 1
                        if error:
                            out = (name, None, [], error)
                        else:
                            kwargs = {"conf": conf} if conf is not None else {}
                            dets = (detector.predict_inputs([model_input], **kwargs) if prepare
                                    else detector.predict([image], **kwargs))[0]
                            out = (name, image, dets, None)
                        if not put(out):
                            return
                finally:
                    for f in pending:
                        f.cancel()
            put(_DONE)
        except BaseException as e:  # noqa: BLE001 - handed to the caller's thread and raised there
            put(e)

    worker = threading.Thread(target=infer_worker, name="pcb-infer", daemon=True)
    worker.start()
    try:
        while True:
            got = results.get()
            if got is _DONE:
                break
            if isinstance(got, BaseException):
                raise got
            yield got
    finally:
        stop.set()
        worker.join(timeout=30)
