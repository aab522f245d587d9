"""The champion detector for the app: found in the registry, downloaded once, loaded once per process (the page
wraps `load_detector` in st.cache_resource). ONNX Runtime is used when best.onnx sits beside best.pt."""
from __future__ import annotations

import sys
import threading
from pathlib import Path

import numpy as np



from pcb_pipeline.backends.champion import NoChampionError  # noqa: F401 - the page catches it from here


def champion_version():
    """The registry's champion (a ModelVersion), or raise NoChampionError with what to do."""
    from pcb_pipeline.backends.champion import require_champion
    from pcb_pipeline.backends.factory import registry

    return require_champion(registry(), "run `pcb-pipeline demo` (or the Dagster `registered_model` asset) to "
                                        "train and register one, then reload this page")


def champion_weights(version=None) -> Path:
    from pcb_pipeline.backends import champion
    from pcb_pipeline.backends.factory import registry

    return champion.champion_weights(registry(), version or champion_version())


class SerializedDetector:
    """One Detector shared by every browser session of the process: Streamlit runs sessions in threads, and an
    Ultralytics model's predictor is not safe to call from two threads at once, so calls take turns."""

    def __init__(self, detector):
        self._detector = detector
        self._lock = threading.Lock()

    def predict(self, images, conf=None, templates=None):
        kwargs = {"templates": templates} if templates is not None else {}
        with self._lock:
            return self._detector.predict(images, conf=conf, **kwargs)

    def __getattr__(self, name):  # backend, imgsz, weights, model, conf
        return getattr(self._detector, name)


def load_detector(weights: Path, warm_up: bool = True) -> SerializedDetector:
    """Detector on the fastest available path; one warm-up inference so the first upload is not the slow one."""
    from pcb_pipeline.vision.detector import Detector

    detector = SerializedDetector(Detector(weights))
    if detector.backend == "onnxruntime" and "torch" in sys.modules:
        # ONNX Runtime uses the cores itself; torch (loaded by something else in this process) stays out of its way
        sys.modules["torch"].set_num_threads(1)
    if warm_up:
        blank = np.zeros((detector.imgsz, detector.imgsz, 3), dtype=np.uint8)
        detector.predict([blank], templates=[blank] if detector.needs_template else None)
    return detector
