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

from .locks import retry_on_lock
from .base import QueryTimeoutError, StageFile, TrainingRequest, TrainingResult
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
        """The file behind a stage path, checked where it really resolves: a path that passes through a symbolic
        link (which could point anywhere, inside the stage or out of it) is refused, so the stage only ever reads
        and writes its own files."""
        target = self.root / clean_stage_path(stage_path)
        if target.resolve() != target:
            raise StagePathError(f"stage path {stage_path!r} passes through a symbolic link; the stage holds "
                                 "plain files only")
        return target

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
        """Every plain file under the prefix (symbolic links are listed, for the sensor to report, never copied)."""
        for f in self.list(stage_prefix):
            if (self.root / f.path).is_symlink():
                continue
            rel = PurePosixPath(f.path).relative_to(clean_stage_path(stage_prefix))
            self.get_file(f.path, Path(local_dir) / rel)
        return Path(local_dir)

    def list(self, prefix: str = "") -> list[StageFile]:
        """Every file under the prefix, dot-files included (the upload sensor reports them), except this stage's
        own in-flight ``.<name>.part`` copies. Symbolic links are listed (so they are reported) but never followed."""
        base = self.path(prefix) if prefix else self.root
        if base.is_file():
            files = [base]
        elif base.is_dir():
            files = [f for f in _entries(base) if not _in_flight(f.name) and (f.is_file() or f.is_symlink())]
        else:
            return []
        out = []
        for f in sorted(files):
            st = f.lstat()
            out.append(StageFile(f.relative_to(self.root).as_posix(), st.st_size,
                                 datetime.fromtimestamp(st.st_mtime, tz=timezone.utc)))
        return out

    def uri(self, stage_path: str) -> str:
        return self.path(stage_path).as_uri()

    def remove_prefix(self, stage_prefix: str) -> int:
        """Files (and links) really removed; links are removed themselves, never what they point to."""
        lexical = self.root / clean_stage_path(stage_prefix)
        if lexical.is_symlink() and lexical.parent.resolve() == lexical.parent:  # a link in a real folder of ours
            lexical.unlink()
            return 1
        target = self.path(stage_prefix)
        if target.is_file():
            target.unlink()
            return 1
        if not target.is_dir():
            return 0
        n = sum(1 for _ in _entries(target))
        shutil.rmtree(target)
        return n


def _entries(folder: Path):
    """Files and symbolic links under a folder, links to folders included but never followed."""
    for d, dirs, names in os.walk(folder):
        yield from (Path(d) / n for n in names)
        yield from (Path(d) / x for x in dirs if (Path(d) / x).is_symlink())


def _in_flight(name: str) -> bool:
    return name.startswith(".") and name.endswith(".part")


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
        if self.read_only and Path(self.path).exists():  # a reader waits out a writer's moment, never blocks readers
            return retry_on_lock(duckdb.connect, self.path, read_only=True, attempts=6)
        return duckdb.connect(self.path)

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

    def query(self, sql: str, timeout_s: float | None = None, max_rows: int | None = None) -> pd.DataFrame:
        with self._lock:
            con = self._connect()
            timer = threading.Timer(timeout_s, con.interrupt) if timeout_s else None
            try:
                if timer:
                    timer.start()
                cur = con.execute(to_duckdb(sql))
                if max_rows is None:
                    return cur.fetchdf()
                names = [d[0] for d in cur.description or []]
                return pd.DataFrame.from_records(cur.fetchmany(max_rows), columns=names)
            except duckdb.InterruptException:
                raise QueryTimeoutError(f"the query ran longer than {timeout_s:g} s and was stopped") from None
            finally:
                if timer:
                    timer.cancel()
                con.close()

    def replace_rows(self, table: str, key_column: str, key_value: str, rows: pd.DataFrame) -> int:
        return self.replace_batch(key_column, key_value, {table: rows})[table]

    def replace_batch(self, key_column: str, key_value: str, tables: dict[str, pd.DataFrame]) -> dict[str, int]:
        """One transaction over every table: all of a batch's rows appear together or not at all."""
        _check_identifier(key_column, *tables, *(c for rows in tables.values() for c in rows.columns))
        with self._lock:
            con = self._connect()
            try:
                con.execute("BEGIN TRANSACTION")
                for table, rows in tables.items():
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
        return {table: len(rows) for table, rows in tables.items()}

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
                                text=True, env={**os.environ, "PYTHONUNBUFFERED": "1", **self.env},
                                preexec_fn=_die_with_parent, start_new_session=True)  # its own process group
        tail: list[str] = []
        assert proc.stdout is not None
        try:
            for line in proc.stdout:
                line = line.rstrip()
                tail = (tail + [line])[-40:]
                log(line)
            returncode = proc.wait()
        finally:  # interrupted (Ctrl-C, a terminated run): the training process goes with us
            stop_process(proc)
        if returncode != 0:
            raise RuntimeError(f"training exited with code {returncode}; last lines:\n" + "\n".join(tail))
        return collect_training_output(out_dir, self.stage, request)


def stop_process(proc: subprocess.Popen, grace_s: float = 10.0) -> None:
    """Terminate a child still running and its whole process group (ultralytics' DDP launcher and its workers are
    grandchildren), then kill the group if it does not stop within grace_s."""
    import signal

    if proc.poll() is not None:
        return

    def signal_group(sig):
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError, AttributeError):
            proc.send_signal(sig)

    signal_group(signal.SIGTERM)
    try:
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        signal_group(signal.SIGKILL)
        proc.wait()


def _die_with_parent() -> None:
    """In the child, before exec (Linux): SIGKILL when the parent dies, even if it is killed with SIGKILL, so a
    killed pipeline process never leaves a training process running behind it (SIGKILL because an inherited
    "ignore SIGTERM" would survive exec and defeat a gentler signal). No-op elsewhere."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):
        pass


def collect_training_output(out_dir: Path, stage, request: TrainingRequest) -> TrainingResult:
    """Read metrics.json written by the entrypoint and persist the weights to the stage under models/<run_id>/."""
    result = json.loads((out_dir / "metrics.json").read_text())
    prefix = f"{request.output_stage_prefix}/{result['run_id']}"
    weights = stage.put_file(out_dir / "best.pt", f"{prefix}/best.pt")
    onnx = stage.put_file(out_dir / "best.onnx", f"{prefix}/best.onnx") if result.get("onnx") else None
    stage.put_file(out_dir / "metrics.json", f"{prefix}/metrics.json")
    return TrainingResult(run_id=result["run_id"], weights_stage_path=weights, onnx_stage_path=onnx,
                          metrics=result["metrics"], local_weights=out_dir / "best.pt",
                          kind=result.get("kind", "yolo"))
