"""The model is loaded once per process on the fastest path and shared safely; `launch()` runs streamlit headless."""
from __future__ import annotations

import threading
import time

import numpy as np

from pcb_pipeline.app import launch as launch_mod
from pcb_pipeline.app.model import SerializedDetector


def test_champion_loaded_once_per_process_on_onnx_runtime(use_app_home):
    from pcb_pipeline.app import ui

    d1, v1 = ui.get_detector()
    d2, v2 = ui.get_detector()
    assert d1 is d2 and v1 == v2
    assert d1.backend == "onnxruntime" and d1.weights.suffix == ".onnx"
    dets = d1.predict([np.zeros((64, 64, 3), np.uint8)], conf=0.001)
    assert isinstance(dets, list) and len(dets) == 1


def test_shared_detector_calls_take_turns():
    active, peak = [0], [0]
    lock = threading.Lock()

    class Slow:
        backend = "stub"

        def predict(self, images, conf=None):
            with lock:
                active[0] += 1
                peak[0] = max(peak[0], active[0])
            time.sleep(0.02)
            with lock:
                active[0] -= 1
            return [[] for _ in images]

    shared = SerializedDetector(Slow())
    threads = [threading.Thread(target=shared.predict, args=([0],)) for _ in range(6)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert peak[0] == 1 and shared.backend == "stub"


def test_launch_runs_streamlit_headless_without_telemetry(monkeypatch):
    seen = {}

    class FakeProc:
        def __init__(self, cmd, env=None):
            seen["cmd"], seen["env"] = cmd, env

        def wait(self, timeout=None):
            return 0

    monkeypatch.setattr(launch_mod.subprocess, "Popen", FakeProc)
    assert launch_mod.launch(host="127.0.0.1", port=8765) == 0
    cmd = seen["cmd"]
    assert cmd[1:4] == ["-m", "streamlit", "run"] and cmd[4].endswith("pcb_pipeline/app/streamlit_app.py")
    opts = dict(zip(cmd[5::2], cmd[6::2]))
    assert opts["--server.address"] == "127.0.0.1" and opts["--server.port"] == "8765"
    assert opts["--server.headless"] == "true" and opts["--browser.gatherUsageStats"] == "false"
    assert seen["env"]["STREAMLIT_BROWSER_GATHER_USAGE_STATS"] == "false"
