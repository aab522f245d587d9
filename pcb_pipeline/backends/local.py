"""The embedded local default: a stage directory, a DuckDB warehouse, subprocess training, the MLflow registry."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Callable

import duckdb
import pandas as pd

from .base import StageFile, TrainingRequest, TrainingResult
from .sqlutil import read_sql_file, to_duckdb


class StagePathError(ValueError):
    pass


def clean_stage_path(stage_path: str) -> str:
    """Normalise a stage path and refuse anything that would escape the stage (absolute, '..', empty)."""
    p = PurePosixPath(str(stage_path).replace("\\", "/"))
    if p.is_absolute() or ".." in p.parts or str(p) in ("", "."):
        raise StagePathError(f"stage path {stage_path!r} must be relative and stay inside the stage")
    return str(p)


def file_md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class LocalStage:
    """A directory standing in for a Snowflake internal stage."""

    def __init__(self, root: Path):
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, stage_path: str) -> Path:
        return self.root / clean_stage_path(stage_path)

    def put_file(self, local: Path, stage_path: str) -> str:
        target = self.path(stage_path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.part")
        shutil.copyfile(local, tmp)
        os.replace(tmp, target)  # readers never see a half-written file
        return clean_stage_path(stage_path)

    def put_dir(self, local_dir: Path, stage_prefix: str) -> int:
        local_dir = Path(local_dir)
        n = 0
        for f in sorted(local_dir.rglob("*")):
            if f.is_file():
                self.put_file(f, f"{clean_stage_path(stage_prefix)}/{f.relative_to(local_dir).as_posix()}")
                n += 1
        return n

    def get_file(self, stage_path: str, local: Path) -> Path:
        src = self.path(stage_path)
        if not src.is_file():
            raise FileNotFoundError(f"not on the stage: {stage_path}")
        local = Path(local)
        local.parent.mkdir(parents=True, exist_ok=True)
        if local.resolve() != src:
            shutil.copyfile(src, local)
        return local

    def get_dir(self, stage_prefix: str, local_dir: Path) -> Path:
        for f in self.list(stage_prefix):
            rel = PurePosixPath(f.path).relative_to(clean_stage_path(stage_prefix))
            self.get_file(f.path, Path(local_dir) / rel)
        return Path(local_dir)

    def list(self, prefix: str = "") -> list[StageFile]:
        base = self.path(prefix) if prefix else self.root
        if base.is_file():
            files = [base]
        elif base.is_dir():
            files = [f for f in base.rglob("*") if f.is_file() and not f.name.startswith(".")]
        else:
            return []
        out = []
        for f in sorted(files):
            st = f.stat()
            out.append(StageFile(f.relative_to(self.root).as_posix(), st.st_size,
                                 datetime.fromtimestamp(st.st_mtime, tz=timezone.utc)))
        return out

    def uri(self, stage_path: str) -> str:
        return self.path(stage_path).as_uri()

    def remove_prefix(self, stage_prefix: str) -> int:
        target = self.path(stage_prefix)
        if target.is_file():
            target.unlink()
            return 1
        n = sum(1 for f in target.rglob("*") if f.is_file()) if target.is_dir() else 0
        shutil.rmtree(target, ignore_errors=True)
        return n


class DuckDBWarehouse:
    """DuckDB file; every statement arrives in Snowflake dialect and is transpiled. One writer at a time."""

    _locks: dict[str, threading.Lock] = {}

    def __init__(self, path: Path | str, read_only: bool = False):
        self.path = str(path)
        self.read_only = read_only
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._memory_con = duckdb.connect(":memory:") if self.path == ":memory:" else None
        self._lock = self._locks.setdefault(self.path, threading.Lock())

    def _connect(self):
        if self._memory_con is not None:
            return self._memory_con.cursor()
        return duckdb.connect(self.path, read_only=self.read_only and Path(self.path).exists())

    def ensure_schema(self) -> None:
        for stmt in read_sql_file("tables.sql"):
            self.execute(stmt)

    def execute(self, sql: str) -> None:
        with self._lock:
            con = self._connect()
            try:
                con.execute(to_duckdb(sql))
            finally:
                con.close()

    def query(self, sql: str) -> pd.DataFrame:
        with self._lock:
            con = self._connect()
            try:
                return con.execute(to_duckdb(sql)).fetchdf()
            finally:
                con.close()

    def replace_rows(self, table: str, key_column: str, key_value: str, rows: pd.DataFrame) -> int:
        _check_identifier(table, key_column, *rows.columns)
        with self._lock:
            con = self._connect()
            try:
                con.execute("BEGIN TRANSACTION")
                con.execute(f'DELETE FROM {table} WHERE "{key_column}" = ?', [key_value])
                if len(rows):
                    con.register("incoming", rows)
                    cols = ", ".join(f'"{c}"' for c in rows.columns)
                    con.execute(f"INSERT INTO {table} ({cols}) SELECT {cols} FROM incoming")
                    con.unregister("incoming")
                con.execute("COMMIT")
            except Exception:
                con.execute("ROLLBACK")
                raise
            finally:
                con.close()
        return len(rows)

    def upsert(self, table: str, key_columns: list[str], rows: pd.DataFrame) -> int:
        _check_identifier(table, *key_columns, *rows.columns)
        if rows.empty:
            return 0
        with self._lock:
            con = self._connect()
            try:
                con.register("incoming", rows)
                cols = ", ".join(f'"{c}"' for c in rows.columns)
                keys = ", ".join(f'"{c}"' for c in key_columns)
                con.execute(f"INSERT OR REPLACE INTO {table} ({cols}) SELECT {cols} FROM incoming")
                con.unregister("incoming")
                del keys
            finally:
                con.close()
        return len(rows)


def _check_identifier(*names: str) -> None:
    for n in names:
        if not str(n).replace("_", "").isalnum():
            raise ValueError(f"refusing unsafe SQL identifier {n!r}")


class LocalTrainingDispatcher:
    """Runs the training entrypoint as a subprocess, streaming its output, then puts the weights on the stage."""

    def __init__(self, stage: LocalStage, work_dir: Path, env: dict[str, str] | None = None):
        self.stage = stage
        self.work_dir = Path(work_dir)
        self.env = env or {}

    def command(self, request: TrainingRequest, out_dir: Path) -> list[str]:
        cmd = [sys.executable, "-m", "pcb_pipeline.vision.train", "--data", str(request.dataset_dir),
               "--profile", request.profile, "--out", str(out_dir), "--run-name", request.run_name]
        for k, v in request.overrides.items():
            cmd += ["--set", f"{k}={v}"]
        return cmd

    def train(self, request: TrainingRequest, log: Callable[[str], None]) -> TrainingResult:
        out_dir = self.work_dir / "training" / request.run_name
        shutil.rmtree(out_dir, ignore_errors=True)
        proc = subprocess.Popen(self.command(request, out_dir), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, env={**os.environ, "PYTHONUNBUFFERED": "1", **self.env})
        tail: list[str] = []
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip()
            tail = (tail + [line])[-40:]
            log(line)
        if proc.wait() != 0:
            raise RuntimeError(f"training exited with code {proc.returncode}; last lines:\n" + "\n".join(tail))
        return collect_training_output(out_dir, self.stage, request)


def collect_training_output(out_dir: Path, stage, request: TrainingRequest) -> TrainingResult:
    """Read metrics.json written by the entrypoint and persist the weights to the stage under models/<run_id>/."""
    result = json.loads((out_dir / "metrics.json").read_text())
    prefix = f"{request.output_stage_prefix}/{result['run_id']}"
    weights = stage.put_file(out_dir / "best.pt", f"{prefix}/best.pt")
    onnx = stage.put_file(out_dir / "best.onnx", f"{prefix}/best.onnx") if result.get("onnx") else None
    stage.put_file(out_dir / "metrics.json", f"{prefix}/metrics.json")
    return TrainingResult(run_id=result["run_id"], weights_stage_path=weights, onnx_stage_path=onnx,
                          metrics=result["metrics"], local_weights=out_dir / "best.pt")
