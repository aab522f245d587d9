"""Start the Streamlit app headless, telemetry off: `pcb-pipeline app` calls `launch()`."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from pcb_pipeline import settings
from pcb_pipeline.core.stage_layout import MAX_UPLOAD_BYTES

ENTRY = Path(__file__).resolve().parent / "streamlit_app.py"
MAX_UPLOAD_MB = MAX_UPLOAD_BYTES // 2**20 + 1  # Streamlit's own cap, just above ours: our clear message comes first


def streamlit_command(host: str = "127.0.0.1", port: int = 8501, extra_args: list[str] | tuple = ()) -> list[str]:
    return [sys.executable, "-m", "streamlit", "run", str(ENTRY),
            "--server.address", host, "--server.port", str(int(port)),
            "--server.headless", "true", "--browser.gatherUsageStats", "false",
            "--server.maxUploadSize", str(MAX_UPLOAD_MB), "--server.fileWatcherType", "none",
            "--global.developmentMode", "false", "--client.toolbarMode", "minimal", *extra_args]


def launch(host: str = "127.0.0.1", port: int = 8501, extra_args: list[str] | tuple = ()) -> int:
    """Run `streamlit run` on the app in the foreground on the configured backend; returns its exit code."""
    settings.configure()
    env = {**os.environ, "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false", "STREAMLIT_SERVER_HEADLESS": "true"}
    print(f"PCB app on http://{host}:{port}  (PCB_HOME {settings.pcb_home()}, backend "
          f"{os.environ.get('PCB_BACKEND', 'local')})", flush=True)
    proc = subprocess.Popen(streamlit_command(host, port, extra_args), env=env)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        try:
            return proc.wait(timeout=10) or 0
        except subprocess.TimeoutExpired:
            proc.kill()
            return 130


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8501)
    a = ap.parse_args()
    sys.exit(launch(a.host, a.port))
