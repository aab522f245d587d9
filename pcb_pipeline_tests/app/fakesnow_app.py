"""Test launcher: the Streamlit app on PCB_BACKEND=snowflake in this process, its Snowflake account played by fakesnow.

    python pcb_pipeline_tests/app/fakesnow_app.py SEED_DIR --port PORT [--host 127.0.0.1] [--analyst-port PORT]

Production code is untouched: `snowflake.connector.connect` is patched here with the Snowflake backend tests' shim
(fakesnow_shim.patched_snowflake: fakesnow patch mode plus the stage commands fakesnow lacks), then `streamlit run`
starts on the app's own entry script with the flags `pcb-pipeline app` uses (launch.streamlit_command), through
Streamlit's CLI in this process, so every connection the app opens lands on the same in-memory fakesnow account.

Before Streamlit starts, the rows pickled in SEED_DIR (PCB_METADATA.pkl, BOARD_INSPECTIONS.pkl, DEFECT_LOGS.pkl, as
knowledge.sample_data.generate makes them) are written the way the pipeline writes them, through the backend
factory's Snowflake warehouse adapter: `upsert` of PCB_METADATA (the pcb_metadata asset) and one `replace_batch` of
DEFECT_LOGS + BOARD_INSPECTIONS per batch (the defect_logs asset's store). The counts read back are printed.

Cortex Analyst is unreachable: fakesnow connections have no `host` or session token, so each connection is given
`host` = 127.0.0.1:ANALYST_PORT, where nothing listens, and a dummy token; the production Cortex Analyst client then
fails to connect and the app must fall back to the local engine and say so.
"""
from __future__ import annotations

import argparse
import sys
import types
import warnings
from pathlib import Path
from unittest import mock

import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "backends" / "snowflake"))

import fakesnow_shim  # noqa: E402 - the Snowflake backend tests' fakesnow shim

SEED_TABLES = ("PCB_METADATA", "BOARD_INSPECTIONS", "DEFECT_LOGS")


def read_seed(seed_dir: Path) -> dict[str, pd.DataFrame]:
    return {t: pd.read_pickle(seed_dir / f"{t}.pkl") for t in SEED_TABLES}


def write_seed(frames: dict[str, pd.DataFrame], seed_dir: Path) -> Path:
    seed_dir.mkdir(parents=True, exist_ok=True)
    for t in SEED_TABLES:
        frames[t].to_pickle(seed_dir / f"{t}.pkl")
    return seed_dir


def seed(frames: dict[str, pd.DataFrame]) -> dict[str, int]:
    """The rows through the pipeline's own write paths on the Snowflake warehouse adapter; the counts read back."""
    from pcb_pipeline.backends import factory

    wh = factory.warehouse()  # the Snowflake adapter (PCB_BACKEND=snowflake), schema ensured
    wh.upsert("PCB_METADATA", ["board_id"], frames["PCB_METADATA"])
    logs, inspections = frames["DEFECT_LOGS"], frames["BOARD_INSPECTIONS"]
    for batch in sorted(inspections["batch_id"].unique()):
        wh.replace_batch("batch_id", batch, {"DEFECT_LOGS": logs[logs["batch_id"] == batch],
                                             "BOARD_INSPECTIONS": inspections[inspections["batch_id"] == batch]})
    return {t: int(wh.query(f"SELECT COUNT(*) AS n FROM {t}")["n"][0]) for t in SEED_TABLES}


def unreachable_analyst(port: int):
    """Patch connect once more: every connection says its host is 127.0.0.1:port (nothing listening there)."""
    import snowflake.connector

    shim_connect = snowflake.connector.connect

    def connect(*args, **kwargs):
        conn = shim_connect(*args, **kwargs)
        conn.host = f"127.0.0.1:{port}"
        conn.rest = types.SimpleNamespace(token="fakesnow-has-no-session-token")
        return conn

    return mock.patch("snowflake.connector.connect", side_effect=connect)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("seed_dir", type=Path)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--analyst-port", type=int, default=9, help="where Cortex Analyst is looked for (closed)")
    a = ap.parse_args(argv)

    from streamlit.web import cli

    from pcb_pipeline.app.launch import streamlit_command

    warnings.filterwarnings("ignore", "Arrow output on a DB-API result", UserWarning)  # fakesnow's, per query
    frames = read_seed(a.seed_dir)
    with fakesnow_shim.patched_snowflake(), unreachable_analyst(a.analyst_port):
        with fakesnow_shim.connect_factory()() as conn:  # the stage the app lists (uploads, evaluation reports)
            conn.cursor().execute("CREATE STAGE IF NOT EXISTS MODEL_STAGE DIRECTORY = (ENABLE = TRUE)")
        print("seeded:", seed(frames), flush=True)
        run_args = streamlit_command(a.host, a.port)[3:]  # [python, -m, streamlit] + run ENTRY --flags
        return cli.main(args=run_args, prog_name="streamlit", standalone_mode=False) or 0


if __name__ == "__main__":
    sys.exit(main())
