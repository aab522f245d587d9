"""Test stand-in: fakesnow (patch mode) plus a recording cursor that emulates what fakesnow 0.12 cannot run.

Natively executed by fakesnow: everything except the four forms below.
Emulated here, over fakesnow's own stage folder, with the semantics of Snowflake's documentation and of
snowflake-connector-python 4.8.1 (each emulation is marked in the record, so tests can say which is which):
  GET @S/path 'file:///dir/' [PATTERN = '...']   prefix match (+ full-match PATTERN), files land flat in dir
  REMOVE @S/path [PATTERN = '...']               prefix match (+ PATTERN)
  LIST @S/path                                   fakesnow runs `LIST @S`; rows are filtered by the path prefix
  PUT 'file:///dir/*' @S/path/ ...               the wildcard is expanded; fakesnow runs one PUT per file
"""
from __future__ import annotations

import contextlib
import fnmatch
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from unittest import mock

GET_RE = re.compile(r"^GET\s+@([A-Za-z0-9_$.]+)(/\S*)?\s+'file://([^']+)'(?:\s+PATTERN\s*=\s*'([^']*)')?\s*$", re.I)
REMOVE_RE = re.compile(r"^REMOVE\s+@([A-Za-z0-9_$.]+)(/\S*)?(?:\s+PATTERN\s*=\s*'([^']*)')?\s*$", re.I)
LIST_RE = re.compile(r"^LIST\s+@([A-Za-z0-9_$.]+)(/\S*)?\s*$", re.I)
PUT_GLOB_RE = re.compile(r"^PUT\s+'file://([^']*[*?][^']*)'\s+(@\S+)(.*)$", re.I)


@dataclass
class Record:
    statement: str
    params: object
    how: str  # "fakesnow" | "emulated" | "write_pandas"


@dataclass
class Recorder:
    records: list[Record] = field(default_factory=list)

    def add(self, statement, params, how):
        self.records.append(Record(" ".join(str(statement).split()), params, how))

    def statements(self, how: str | None = None) -> list[str]:
        return [r.statement for r in self.records if how is None or r.how == how]

    def clear(self):
        self.records.clear()


def _stage_root(conn, name: str) -> Path:
    from fakesnow.transforms.stage import internal_dir

    parts = name.upper().split(".")
    schema_now = getattr(conn, "schema", None) or conn._schema
    db, schema, stage = {1: lambda: (conn.database, schema_now, parts[0]),
                         2: lambda: (conn.database, parts[0], parts[1]), 3: lambda: tuple(parts)}[len(parts)]()
    return Path(internal_dir(f"{db}.{schema}.{stage}"))


def _files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()) if root.is_dir() else []


class ShimCursor:
    def __init__(self, cursor, conn, recorder: Recorder):
        self._cur, self._conn, self._rec = cursor, conn, recorder
        self._rows: list | None = None
        self._description = None

    def __getattr__(self, name):
        return getattr(self._cur, name)

    @property
    def description(self):
        return self._description if self._rows is not None else self._cur.description

    def fetchall(self):
        if self._rows is not None:
            rows, self._rows = self._rows, None
            return rows
        return self._cur.fetchall()

    def fetchone(self):
        if self._rows is not None:
            return self._rows.pop(0) if self._rows else None
        return self._cur.fetchone()

    def _emulate(self, statement, rows, names):
        self._rec.add(statement, None, "emulated")
        self._rows = rows
        self._description = [(n, None, None, None, None, None, None) for n in names]
        return self

    def _check_stage(self, stage):
        self._cur.execute(f"LIST @{stage}")  # raises like Snowflake when the stage does not exist
        self._cur.fetchall()

    def execute(self, command, params=None, *args, **kwargs):
        text = " ".join(str(command).split())
        self._rows = None
        if m := GET_RE.match(text):
            stage, path, local, pattern = m.group(1), (m.group(2) or "/")[1:], m.group(3), m.group(4)
            self._check_stage(stage)
            root = _stage_root(self._conn, stage)
            local_dir = Path(local)
            local_dir.mkdir(parents=True, exist_ok=True)
            rows = []
            for rel in _files(root):
                if rel.startswith(path) and (pattern is None or re.fullmatch(pattern, rel)):
                    shutil.copyfile(root / rel, local_dir / Path(rel).name)  # connector 4.8.1: flat, by basename
                    rows.append((Path(rel).name, (root / rel).stat().st_size, "DOWNLOADED", ""))
            return self._emulate(text, rows, ["file", "size", "status", "message"])
        if m := REMOVE_RE.match(text):
            stage, path, pattern = m.group(1), (m.group(2) or "/")[1:], m.group(3)
            self._check_stage(stage)
            root = _stage_root(self._conn, stage)
            rows = []
            for rel in _files(root):
                if rel.startswith(path) and (pattern is None or re.fullmatch(pattern, rel)):
                    (root / rel).unlink()
                    rows.append((f"{stage.split('.')[-1].lower()}/{rel}", "removed"))
            return self._emulate(text, rows, ["name", "result"])
        if (m := LIST_RE.match(text)) and m.group(2) and m.group(2) != "/":
            stage, path = m.group(1), m.group(2)[1:]
            self._rec.add(f"LIST @{stage}", None, "fakesnow")
            self._cur.execute(f"LIST @{stage}")
            rows = [r for r in self._cur.fetchall() if r[0].split("/", 1)[-1].startswith(path)]
            return self._emulate(text, rows, ["name", "size", "md5", "last_modified"])
        if m := PUT_GLOB_RE.match(text):
            pattern, rest = m.group(1), f"{m.group(2)}{m.group(3)}"
            self._rec.add(text, None, "emulated")
            rows = []
            for f in sorted(Path(os.path.dirname(pattern)).iterdir()):
                if f.is_file() and fnmatch.fnmatch(f.name, os.path.basename(pattern)):
                    single = f"PUT 'file://{f}' {rest}"
                    self._rec.add(single, None, "fakesnow")
                    self._cur.execute(single)
                    rows += self._cur.fetchall()
            self._rows, self._description = rows, self._cur.description
            return self
        self._rec.add(text, params, "fakesnow")
        if params is None:
            self._cur.execute(command, *args, **kwargs)
        else:
            self._cur.execute(command, params, *args, **kwargs)
        return self


class ShimConnection:
    def __init__(self, conn, recorder: Recorder):
        self._conn, self._rec = conn, recorder

    def __getattr__(self, name):
        return getattr(self._conn, name)

    def cursor(self, *args, **kwargs):
        return ShimCursor(self._conn.cursor(*args, **kwargs), self._conn, self._rec)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._conn.close()


@contextlib.contextmanager
def patched_snowflake(recorder: Recorder | None = None):
    """fakesnow.patch() with every connection wrapped in the recording shim; yields the recorder.

    snowflake.connector.connect (what dagster_snowflake.SnowflakeResource calls) and pandas_tools.write_pandas are
    both patched; write_pandas calls are recorded too.
    """
    import fakesnow
    import snowflake.connector
    import snowflake.connector.pandas_tools
    from fakesnow.transforms import stage as fs_stage

    recorder = recorder or Recorder()
    for p in Path(fs_stage.LOCAL_BUCKET_PATH).iterdir():  # stage files outlive a patch: start empty
        shutil.rmtree(p, ignore_errors=True)
    with fakesnow.patch():
        fake_connect = snowflake.connector.connect
        fake_write_pandas = snowflake.connector.pandas_tools.write_pandas

        def connect(*args, **kwargs):
            return ShimConnection(fake_connect(*args, **kwargs), recorder)

        def write_pandas(conn, df, table_name, *args, **kwargs):
            recorder.add(f"write_pandas {table_name} rows={len(df)} kwargs={sorted(kwargs.items())}", None,
                         "write_pandas")
            return fake_write_pandas(getattr(conn, "_conn", conn), df, table_name, *args, **kwargs)

        with mock.patch("snowflake.connector.connect", side_effect=connect), \
                mock.patch("snowflake.connector.pandas_tools.write_pandas", side_effect=write_pandas):
            yield recorder


# account the tests pretend to be (fakesnow accepts any credentials)
ENV = {
    "PCB_BACKEND": "snowflake",
    "SNOWFLAKE_ACCOUNT": "pcb-test",
    "SNOWFLAKE_USER": "PCB_PIPELINE_USER",
    "SNOWFLAKE_PASSWORD": "not-a-real-password",
    "SNOWFLAKE_ROLE": "PCB_PIPELINE_ROLE",
    "SNOWFLAKE_WAREHOUSE": "PCB_WH",
    "SNOWFLAKE_DATABASE": "PCB",
    "SNOWFLAKE_SCHEMA": "PIPELINE",
    "SNOWFLAKE_DISABLE_PLATFORM_DETECTION": "true",
    "AWS_EC2_METADATA_DISABLED": "true",
}


def connect_factory():
    import snowflake.connector

    def connect():
        return contextlib.closing(snowflake.connector.connect(
            account=ENV["SNOWFLAKE_ACCOUNT"], user=ENV["SNOWFLAKE_USER"], password=ENV["SNOWFLAKE_PASSWORD"],
            database=ENV["SNOWFLAKE_DATABASE"], schema=ENV["SNOWFLAKE_SCHEMA"]))

    return connect
