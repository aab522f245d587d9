"""The Snowflake internal stage behind the Stage interface: PUT, GET, LIST and REMOVE over one connection per call.

Files go up uncompressed (AUTO_COMPRESS = FALSE) so what comes back is byte-identical and the stage's directory
table shows real images. PUT keeps a file's own name, so a file whose stage name differs is first copied into a
scratch folder under that name. GET in snowflake-connector-python 4.x writes every file it downloads to
`<local dir>/<basename>`, flattening folders; get_dir therefore downloads one stage folder at a time, restricted to
its direct children by PATTERN, into a fresh scratch folder, and moves each file to its place.
"""
from __future__ import annotations

import shutil
import tempfile
from collections import defaultdict
from contextlib import AbstractContextManager
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from pathlib import Path, PurePosixPath
from typing import Callable

from pcb_pipeline.backends.base import StageFile

from . import sql

Connect = Callable[[], AbstractContextManager]


def _parse_last_modified(value) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    try:
        return parsedate_to_datetime(str(value))  # 'Fri, 27 Nov 2026 17:06:18 GMT'
    except (TypeError, ValueError):
        return datetime.fromtimestamp(0, tz=timezone.utc)


def _relative(listed_name: str) -> str:
    """LIST names a file '<stage name in lower case>/<path>': drop the first segment."""
    return listed_name.split("/", 1)[1] if "/" in listed_name else listed_name


class SnowflakeStage:
    def __init__(self, connect: Connect, stage: str, qualified_stage: str | None = None):
        self.connect = connect
        self.stage = sql.identifier(stage)
        self.qualified_stage = sql.identifier(qualified_stage or stage)

    # ------------------------------------------------------------------------------------------------ helpers
    @staticmethod
    def _run(cur, statement: str, params=None) -> list:
        cur.execute(statement, params) if params is not None else cur.execute(statement)
        return cur.fetchall()

    def _put_into(self, cur, local: Path, stage_path: str) -> None:
        target = PurePosixPath(sql.stage_path(stage_path))
        if not target.name:
            raise sql.UnsafeNameError("a file needs a name on the stage")
        local = Path(local)
        if not local.is_file():
            raise FileNotFoundError(f"no such local file: {local}")
        # PUT keeps the local name, and the quoted file URI cannot carry quotes or glob characters: copy when needed
        if local.name != target.name or sql.LOCAL_PATH_UNSAFE.search(local.resolve().as_posix()):
            with tempfile.TemporaryDirectory(prefix="pcb-put-") as tmp:
                renamed = Path(tmp) / target.name
                shutil.copyfile(local, renamed)
                self._run(cur, sql.put(renamed, self.stage, str(target.parent)))
        else:
            self._run(cur, sql.put(local, self.stage, str(target.parent)))

    # ------------------------------------------------------------------------------------------------ Stage API
    def put_file(self, local: Path, stage_path: str) -> str:
        clean = sql.stage_path(stage_path)
        with self.connect() as conn:
            cur = conn.cursor()
            self._put_into(cur, Path(local), clean)
        return clean

    def put_dir(self, local_dir: Path, stage_prefix: str) -> int:
        """One wildcard PUT per local folder (names kept); files are never compressed."""
        local_dir = Path(local_dir)
        prefix = sql.stage_path(stage_prefix)
        folders: dict[Path, list[Path]] = defaultdict(list)
        for f in sorted(local_dir.rglob("*")):
            if f.is_file():
                folders[f.parent].append(f)
        n = 0
        with self.connect() as conn:
            cur = conn.cursor()
            for folder, files in folders.items():
                rel = folder.relative_to(local_dir).as_posix()
                target = "/".join(p for p in (prefix, "" if rel == "." else rel) if p)
                for f in files:  # validates every name before anything is sent
                    sql.stage_path(f"{target}/{f.name}")
                try:
                    self._run(cur, sql.put(folder, self.stage, target, glob=True))
                except sql.UnsafeNameError:  # odd characters in the local folder name: one file at a time
                    for f in files:
                        self._put_into(cur, f, f"{target}/{f.name}")
                n += len(files)
        return n

    def get_file(self, stage_path: str, local: Path) -> Path:
        clean = sql.stage_path(stage_path)
        local = Path(local)
        local.parent.mkdir(parents=True, exist_ok=True)
        with self.connect() as conn, tempfile.TemporaryDirectory(prefix="pcb-get-") as tmp:
            cur = conn.cursor()
            self._run(cur, sql.get(self.stage, clean, Path(tmp), pattern=sql.pattern_for_file(clean)))
            got = Path(tmp) / PurePosixPath(clean).name
            if not got.is_file():
                raise FileNotFoundError(f"not on the stage: {clean}")
            shutil.move(str(got), str(local))
        return local

    def get_dir(self, stage_prefix: str, local_dir: Path) -> Path:
        prefix = sql.stage_path(stage_prefix)
        local_dir = Path(local_dir)
        by_folder: dict[str, list[str]] = defaultdict(list)
        for f in self.list(prefix):
            by_folder[str(PurePosixPath(f.path).parent)].append(f.path)
        with self.connect() as conn:
            cur = conn.cursor()
            for folder, paths in sorted(by_folder.items()):
                with tempfile.TemporaryDirectory(prefix="pcb-get-") as tmp:
                    self._run(cur, sql.get(self.stage, folder, Path(tmp), pattern=sql.pattern_for_children(folder),
                                           directory=True))
                    for p in paths:
                        got = Path(tmp) / PurePosixPath(p).name
                        if not got.is_file():
                            raise FileNotFoundError(f"GET did not return {p}")
                        rel = PurePosixPath(p).relative_to(prefix) if prefix else PurePosixPath(p)
                        dest = local_dir / rel
                        dest.parent.mkdir(parents=True, exist_ok=True)
                        shutil.move(str(got), str(dest))
        return local_dir

    def list(self, prefix: str = "") -> list[StageFile]:
        clean = sql.stage_path(prefix)
        with self.connect() as conn:
            rows = self._run(conn.cursor(), sql.list_files(self.stage, clean))
        out = []
        for name, size, md5, last_modified in (r[:4] for r in rows):
            rel = _relative(str(name))
            if clean and not (rel == clean or rel.startswith(clean + "/")):
                continue  # LIST matches prefixes of names: 'raw/a' also lists 'raw/ab/...'
            out.append(StageFile(rel, int(size), _parse_last_modified(last_modified), md5 or None))
        return sorted(out, key=lambda f: f.path)

    def uri(self, stage_path: str) -> str:
        return sql.location(self.qualified_stage, stage_path)

    def remove_prefix(self, stage_prefix: str) -> int:
        clean = sql.stage_path(stage_prefix)
        if not clean:
            raise sql.UnsafeNameError("refusing to empty the whole stage")
        files = self.list(clean)
        if not files:
            return 0
        is_file = len(files) == 1 and files[0].path == clean
        with self.connect() as conn:
            self._run(conn.cursor(), sql.remove(self.stage, clean, directory=not is_file))
        return len(files)
