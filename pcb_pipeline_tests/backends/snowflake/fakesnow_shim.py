"""Test stand-in: fakesnow (patch mode) plus a recording cursor that emulates what fakesnow 0.12 cannot run.

Natively executed by fakesnow: everything except the six forms below.
Emulated here, over fakesnow's own stage folder, with the semantics of Snowflake's documentation and of
snowflake-connector-python 4.8.1 (each emulation is marked in the record, so tests can say which is which):
  GET @S/path 'file:///dir/' [PATTERN = '...']   prefix match (+ full-match PATTERN), files land flat in dir
  REMOVE @S/path [PATTERN = '...']               prefix match (+ PATTERN)
  LIST @S/path                                   fakesnow runs `LIST @S`; rows are filtered by the path prefix
  PUT 'file:///dir/*' @S/path/ ...               the wildcard is expanded; fakesnow runs one PUT per file
and, for the Cortex side, which no fakesnow can host:
  CREATE [OR REPLACE] CORTEX SEARCH SERVICE ...  checked against the documented clause order
                                                 (parse_search_service_ddl); its source query runs on fakesnow (so the
                                                 table and columns must exist); the service is kept in
                                                 `Recorder.cortex_services` for sf_fakes.FakeCortexSearchApi to query
  SELECT AI_COMPLETE(%s, %s) ...                 answered by `Recorder.complete(model, prompt)` (a stand-in, not an LLM)
and, for Streamlit in Snowflake:
  CREATE [OR REPLACE] STREAMLIT ...              checked against the documented clause order (parse_create_streamlit);
                                                 its FROM location must hold MAIN_FILE on the (fakesnow) stage; kept in
                                                 `Recorder.streamlits`
  ALTER STREAMLIT x ADD LIVE VERSION FROM LAST   the app must exist; marks it live
"""
from __future__ import annotations

import contextlib
import fnmatch
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable
from unittest import mock

GET_RE = re.compile(r"^GET\s+@([A-Za-z0-9_$.]+)(/\S*)?\s+'file://([^']+)'(?:\s+PATTERN\s*=\s*'([^']*)')?\s*$", re.I)
REMOVE_RE = re.compile(r"^REMOVE\s+@([A-Za-z0-9_$.]+)(/\S*)?(?:\s+PATTERN\s*=\s*'([^']*)')?\s*$", re.I)
LIST_RE = re.compile(r"^LIST\s+@([A-Za-z0-9_$.]+)(/\S*)?\s*$", re.I)
PUT_GLOB_RE = re.compile(r"^PUT\s+'file://([^']*[*?][^']*)'\s+(@\S+)(.*)$", re.I)
STREAMLIT_DDL_RE = re.compile(r"^CREATE\s+(?:OR\s+REPLACE\s+)?STREAMLIT\s", re.I)
STREAMLIT_LIVE_RE = re.compile(r"^ALTER\s+STREAMLIT\s+([A-Za-z0-9_$.]+)\s+ADD\s+LIVE\s+VERSION\s+FROM\s+LAST$", re.I)
CORTEX_SEARCH_DDL_RE = re.compile(r"^CREATE\s+(?:OR\s+REPLACE\s+)?CORTEX\s+SEARCH\s+SERVICE\s", re.I)
AI_COMPLETE_RE = re.compile(r"^SELECT\s+AI_COMPLETE\(\s*%s\s*,\s*%s\s*\)(?:\s+AS\s+(\w+))?\s*$", re.I)
PASSAGE_RE = re.compile(r"^\[(\d+)\] [^\n]*:\n(.+?)(?:\n\n|$)", re.M | re.S)
SENTENCE_END_RE = re.compile(r"(?<=[.!?])\s")


def extractive_complete(model: str, prompt: str) -> str:
    """Stand-in for AI_COMPLETE on pcb_pipeline's RAG prompt: the first sentence of each of the first two passages,
    each cited as [n]; "not covered" when the prompt has no passages. Deterministic, and never an LLM."""
    passages = PASSAGE_RE.findall(prompt)
    if not passages:
        return "The manuals do not cover this."
    first = [(n, SENTENCE_END_RE.split(text.strip(), maxsplit=1)[0]) for n, text in passages[:2]]
    return " ".join(f"{sentence} [{n}]" for n, sentence in first)


@dataclass
class Record:
    statement: str
    params: object
    how: str  # "fakesnow" | "emulated" | "write_pandas"


@dataclass
class Recorder:
    records: list[Record] = field(default_factory=list)
    # (DATABASE, SCHEMA, SERVICE) -> parse_search_service_ddl parts, for every emulated CREATE CORTEX SEARCH SERVICE
    cortex_services: dict[tuple[str, str, str], dict] = field(default_factory=dict)
    complete: Callable[[str, str], str] = extractive_complete  # what the emulated AI_COMPLETE answers
    # (DATABASE, SCHEMA, APP) -> parse_create_streamlit parts (+ "live": True once ADD LIVE VERSION ran)
    streamlits: dict[tuple[str, str, str], dict] = field(default_factory=dict)

    def add(self, statement, params, how):
        self.records.append(Record(" ".join(str(statement).split()), params, how))

    def statements(self, how: str | None = None) -> list[str]:
        return [r.statement for r in self.records if how is None or r.how == how]

    def clear(self):
        self.records.clear()


def _qualify(conn, name: str) -> tuple[str, str, str]:
    """(DATABASE, SCHEMA, NAME) of a 1- to 3-part name, resolved against the connection's current database/schema."""
    parts = name.upper().split(".")
    schema_now = getattr(conn, "schema", None) or conn._schema
    db, schema, obj = {1: lambda: (conn.database, schema_now, parts[0]),
                       2: lambda: (conn.database, parts[0], parts[1]), 3: lambda: tuple(parts)}[len(parts)]()
    return str(db).upper(), str(schema).upper(), obj


def _stage_root(conn, name: str) -> Path:
    from fakesnow.transforms.stage import internal_dir

    return Path(internal_dir(".".join(_qualify(conn, name))))


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

    def _emulate(self, statement, rows, names, params=None):
        self._rec.add(statement, params, "emulated")
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
        if CORTEX_SEARCH_DDL_RE.match(text):
            from pcb_pipeline.knowledge.snowflake_search import parse_search_service_ddl

            parts = parse_search_service_ddl(text)  # raises on a statement Snowflake would reject by its syntax
            self._rec.add(parts["query"], None, "fakesnow")
            self._cur.execute(parts["query"])  # the source must exist, as Snowflake checks on CREATE
            self._cur.fetchall()
            key = _qualify(self._conn, parts["name"])
            if key in self._rec.cortex_services and not re.match(r"^CREATE\s+OR\s+REPLACE\s", text, re.I):
                if not re.search(r"\sIF\s+NOT\s+EXISTS\s", text, re.I):
                    raise RuntimeError(f"Cortex Search service {'.'.join(key)} already exists")
            else:
                self._rec.cortex_services[key] = parts
            return self._emulate(text, [(f"Cortex search service {key[2]} successfully created.",)], ["status"])
        if STREAMLIT_DDL_RE.match(text):
            from pcb_pipeline.backends.snowflake.app_deploy import parse_create_streamlit

            parts = parse_create_streamlit(text)
            location = parts["FROM"].strip("'")
            stage, _, prefix = location[1:].partition("/")
            self._check_stage(stage)
            main = f"{prefix}/{parts['MAIN_FILE'].strip(chr(39))}".lstrip("/")
            if not (_stage_root(self._conn, stage) / main).is_file():
                raise RuntimeError(f"MAIN_FILE {main} is not on @{stage}")
            self._rec.streamlits[_qualify(self._conn, parts["name"])] = parts
            return self._emulate(text, [(f"Streamlit {parts['name']} successfully created.",)], ["status"])
        if m := STREAMLIT_LIVE_RE.match(text):
            key = _qualify(self._conn, m.group(1))
            if key not in self._rec.streamlits:
                raise RuntimeError(f"Streamlit {'.'.join(key)} does not exist")
            self._rec.streamlits[key]["live"] = True
            return self._emulate(text, [("Statement executed successfully.",)], ["status"])
        if m := AI_COMPLETE_RE.match(text):
            model, prompt = params
            return self._emulate(text, [(self._rec.complete(model, prompt),)], [m.group(1) or "AI_COMPLETE"], params)
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
