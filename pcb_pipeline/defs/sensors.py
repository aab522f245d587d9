"""Sensors: new uploads -> dynamic partitions of upload_defect_logs, and a run-failure reporter.

Upload sensor (`upload_sensor`, code location pcb_uploads)
-----------------------------------------------------------
Each tick lists the stage's `uploads/` folder (a directory locally, LIST on a Snowflake stage) and walks the files in
(last_modified, path) order:

- unchanged since a previous tick (same last_modified and size in the cursor): nothing to do;
- older than the cursor's high-water mark minus `lookback_s` and already a partition: done long ago (this is how the
  cursor stays small: processed files are forgotten once they fall behind the lookback window);
- still being written: a temporary name (`.part`, `.tmp`, `.crdownload`, a leading dot ...), modified less than
  `settle_s` ago, or (younger than `stable_s`) not yet seen with the same size and last_modified on two ticks:
  skipped and reported, looked at again next tick;
- zero-byte, not an image (by suffix or by content signature), too large, or a name that cannot be a partition key:
  skipped and reported once (remembered in the cursor until the file changes);
- otherwise the content is hashed (md5). The run key is `<path>@<md5>`: a run key that already ran (any earlier tick,
  any cursor, after a restart or a cursor reset) is never requested again, and Dagster itself refuses a second run with
  the same key. Content that already ran under another name is reported as a duplicate and not inferred twice. New
  content at a known path (a re-upload) gets a new run key and re-runs its partition, which replaces its rows.
- a template, `<id>_temp.*` (the golden board a reference-aware model compares `<id>_test.*` with), is never a
  partition of its own. A board's run key carries its template's md5 (`<path>@<md5>+template@<md5>`), so a
  template that lands (or changes) after its board re-runs that board, now with its reference (a board that cannot
  be read then keeps the template pending: retried next tick). The runs' `pcb/template_file` tag (path, last_modified,
  size) is the durable record that a template was read, so templates behind the lookback window are not read again.
  A board beside a template is inspected as a pair: the same board bytes elsewhere are not its duplicate.
  Reverting a template to an earlier version, or deleting it, re-runs nothing (a run key never runs twice).

The durable state is Dagster's: the dynamic partitions and the runs' tags (`dagster/run_key`, `pcb/content_md5`); the
cursor only avoids re-reading files. Uploads wait (the cursor does not move) while there is no champion model.

Correctness does not depend on the lookback window: a file behind it that is not yet a partition (a late arrival,
e.g. copied with its old mtime preserved) is still evaluated; the window only bounds the cursor (about 50 bytes per
file inside it).

Settings (environment, read when the code location loads): PCB_UPLOAD_SETTLE_S (2), PCB_UPLOAD_STABLE_S (30),
PCB_UPLOAD_LOOKBACK_S (600), PCB_UPLOAD_MAX_RUNS_PER_TICK (100), PCB_UPLOAD_SENSOR_INTERVAL_S (15),
PCB_UPLOAD_SENSOR (running | stopped).

Run-failure sensor (`run_failure_reporter`, code location pcb_pipeline, watches every location)
---------------------------------------------------------------------------------------------
Appends one JSON line per failed run to PCB_FAILURE_LOG (default PCB_HOME/alerts/run_failures.jsonl): run, job,
partition, trigger, each failed step with its asset and reason, and the assets the run did not materialise; the
same record goes to the sensor's log in the Dagster UI.
"""

import hashlib
import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path, PurePosixPath
from typing import Callable, Iterable, Mapping, Protocol

import dagster as dg

from pcb_pipeline import settings
from pcb_pipeline.backends.local import StagePathError
from pcb_pipeline.core.deeppcb import is_template_name, listed_template
from pcb_pipeline.core.stage_layout import MAX_UPLOAD_BYTES, UPLOAD_PREFIX
from pcb_pipeline.core.images import IMAGE_SUFFIXES
from pcb_pipeline.defs.assets import UPLOAD_PARTITIONS, partition_stage_path
from pcb_pipeline.defs.jobs import upload_inference_job
from pcb_pipeline.defs.resources import RegistryResource, StageResource

UPLOAD_SENSOR_NAME = "upload_sensor"
RUN_KEY_TAG = "dagster/run_key"
PARTITION_TAG = "dagster/partition"
CONTENT_TAG = "pcb/content_md5"
PATH_TAG = "pcb/upload_path"
TEMPLATE_TAG = "pcb/template_md5"
TEMPLATE_FILE_TAG = "pcb/template_file"  # file_version of the template a run read
TEMP_SUFFIXES = (".part", ".partial", ".tmp", ".temp", ".crdownload", ".filepart", ".download", ".upload", "~",
                 ".swp")
TEMPLATE_REASON = ("a template (<id>_temp.*): the golden board a reference-aware model compares <id>_test.* with, "
                   "not a board to inspect")
_INVALID_KEY_PARTS = ("...", "\a", "\b", "\f", "\n", "\r", "\t", "\v", "\0")
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


# ------------------------------------------------------------------------------------------------ settings
@dataclass(frozen=True)
class UploadSensorSettings:
    settle_s: float = 2.0  # not read until last_modified is this old
    stable_s: float = 30.0  # younger than this: must also look the same on two consecutive ticks
    lookback_s: float = 600.0  # how far behind the high-water mark files are still tracked in the cursor
    max_runs_per_tick: int = 100  # bursts are drained over several ticks, oldest first
    tick_budget_s: float = 40.0  # stop hashing after this long (Dagster times a sensor out at 60 s)
    max_rejected_remembered: int = 2000  # bad files reported once; beyond this many, oldest are re-checked
    interval_s: int = 15
    running: bool = True
    wait_for_champion: bool = True

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "UploadSensorSettings":
        env = os.environ if env is None else env

        def num(name, default, cast=float, minimum=0.0):
            raw = (env.get(name) or "").strip()
            if not raw:
                return default
            try:
                value = cast(raw)
            except ValueError:
                raise ValueError(f"{name}={raw!r} must be a number") from None
            if value < minimum:
                raise ValueError(f"{name}={raw!r} must be >= {minimum}")
            return value

        state = (env.get("PCB_UPLOAD_SENSOR") or "running").strip().lower()
        if state not in ("running", "stopped"):
            raise ValueError(f"PCB_UPLOAD_SENSOR={state!r} must be 'running' or 'stopped'")
        return cls(settle_s=num("PCB_UPLOAD_SETTLE_S", 2.0), stable_s=num("PCB_UPLOAD_STABLE_S", 30.0),
                   lookback_s=num("PCB_UPLOAD_LOOKBACK_S", 600.0),
                   max_runs_per_tick=num("PCB_UPLOAD_MAX_RUNS_PER_TICK", 100, int, 1),
                   interval_s=num("PCB_UPLOAD_SENSOR_INTERVAL_S", 15, int, 1), running=state == "running")


# ------------------------------------------------------------------------------------------------ cursor
def to_us(ts: datetime) -> int:
    """last_modified as integer microseconds since the epoch (exact, unlike float seconds)."""
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=timezone.utc)
    return (ts - _EPOCH) // timedelta(microseconds=1)


@dataclass
class UploadCursor:
    wm: tuple[int, str] | None = None  # high-water mark over handled files, in (last_modified, path) order
    # key -> [last_modified_us, size, "a" accepted | "r" rejected | "t" a template that boards read]
    seen: dict[str, list] = field(default_factory=dict)
    pending: dict[str, list] = field(default_factory=dict)  # key -> [last_modified_us, size] of files still settling

    @classmethod
    def loads(cls, text: str | None) -> "UploadCursor":
        if not text:
            return cls()
        data = json.loads(text)
        if data.get("v") != 1:
            raise ValueError(f"unknown upload cursor version {data.get('v')!r}")
        wm = tuple(data["wm"]) if data.get("wm") else None
        return cls(wm, dict(data.get("seen") or {}), dict(data.get("pend") or {}))

    def dumps(self) -> str:
        return json.dumps({"v": 1, "wm": list(self.wm) if self.wm else None, "seen": self.seen,
                           "pend": self.pending}, separators=(",", ":"), sort_keys=True)


# ------------------------------------------------------------------------------------------------ planning
class UploadHistory(Protocol):
    """What already happened, from durable state (Dagster's partitions and run tags)."""

    def known_keys(self) -> set[str]: ...

    def existing_run_keys(self, run_keys: list[str]) -> set[str]: ...

    def content_owners(self, md5s: list[str]) -> dict[str, str]: ...

    def template_files_read(self, versions: list[str]) -> set[str]: ...


class DagsterUploadHistory:
    def __init__(self, instance, partitions_name: str = UPLOAD_PARTITIONS.name):
        self.instance = instance
        self.partitions_name = partitions_name
        self._known: set[str] | None = None

    def known_keys(self) -> set[str]:
        if self._known is None:
            self._known = set(self.instance.get_dynamic_partitions(self.partitions_name))
        return self._known

    def existing_run_keys(self, run_keys: list[str]) -> set[str]:
        if not run_keys:
            return set()
        runs = self.instance.get_runs(filters=dg.RunsFilter(tags={RUN_KEY_TAG: list(run_keys)}))
        return {r.tags[RUN_KEY_TAG] for r in runs if RUN_KEY_TAG in r.tags}

    def content_owners(self, md5s: list[str]) -> dict[str, str]:
        if not md5s:
            return {}
        runs = self.instance.get_runs(filters=dg.RunsFilter(tags={CONTENT_TAG: list(md5s)}))
        return {r.tags[CONTENT_TAG]: r.tags.get(PATH_TAG, "?") for r in sorted(runs, key=lambda r: r.run_id)}

    def template_files_read(self, versions: list[str]) -> set[str]:
        """Which template file versions (``file_version``) some run already read (tag pcb/template_file)."""
        if not versions:
            return set()
        runs = self.instance.get_runs(filters=dg.RunsFilter(tags={TEMPLATE_FILE_TAG: list(versions)}))
        return {r.tags[TEMPLATE_FILE_TAG] for r in runs if TEMPLATE_FILE_TAG in r.tags}


@dataclass(frozen=True)
class UploadRequest:
    key: str  # partition key: the path under uploads/
    path: str  # stage path
    md5: str
    template_md5: str | None = None  # the board's template (<id>_temp.*) beside it, when there is one
    template_file: str | None = None  # that template's file_version: durable proof it was read (run tag)

    @property
    def run_key(self) -> str:
        return f"{self.key}@{self.md5}" + (f"+template@{self.template_md5}" if self.template_md5 else "")


@dataclass(frozen=True)
class UploadReport:
    path: str
    status: str  # "waiting" | "rejected" | "duplicate" | "unchanged" | "error" | "template"
    reason: str


@dataclass
class UploadPlan:
    requests: list[UploadRequest]
    reports: list[UploadReport]
    cursor: UploadCursor
    evaluated: int = 0
    deferred: bool = False  # stopped early (run limit or time budget): more next tick

    def summary(self) -> str:
        counts: dict[str, int] = {}
        for r in self.reports:
            counts[r.status] = counts.get(r.status, 0) + 1
        shown = "; ".join(f"{r.path}: {r.reason}" for r in self.reports if r.status != "unchanged")
        head = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "no new uploads"
        return f"{len(self.requests)} run(s) requested; {head}" + (f" — {shown[:1500]}" if shown else "")


def file_version(f) -> str:
    """`<stage path>@<last_modified us>:<size>`: which version of a listed file (no need to read it)."""
    return f"{f.path}@{to_us(f.last_modified)}:{int(f.size)}"


def _is_temporary_name(name: str) -> bool:
    low = name.lower()
    return name.startswith(".") or low.endswith(TEMP_SUFFIXES) or low.startswith("~$")


def image_signature_ok(head: bytes) -> bool:
    """Does the content start like an image format the inference reads (JPEG, PNG, BMP, TIFF, WebP)?"""
    return (head.startswith(b"\xff\xd8\xff") or head.startswith(b"\x89PNG\r\n\x1a\n") or head.startswith(b"BM")
            or head.startswith((b"II*\x00", b"MM\x00*")) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP"))


def key_problem(key: str) -> str | None:
    """Why a path under uploads/ cannot be a partition key (None: it can)."""
    if any(p in key for p in _INVALID_KEY_PARTS) or len(key) > 1000 or not key.isprintable():
        return "the file name cannot be a partition key (control characters, '...', or over 1000 characters)"
    try:
        partition_stage_path(key)
    except ValueError as e:
        return str(e)
    return None


def plan_uploads(files: Iterable, cursor: UploadCursor, now: float, s: UploadSensorSettings,
                 history: UploadHistory, read_bytes: Callable[[object], bytes]) -> UploadPlan:
    """Decide, for one tick, which uploads to run; pure apart from `read_bytes` and `history` (tests drive it)."""
    started = time.monotonic()
    prefix = f"{UPLOAD_PREFIX}/"
    listing = sorted((f for f in files if f.path.startswith(prefix)), key=lambda f: (to_us(f.last_modified), f.path))
    by_path = {f.path: f for f in listing}
    new = UploadCursor(cursor.wm, dict(cursor.seen), {})
    horizon = cursor.wm[0] - int(s.lookback_s * 1e6) if cursor.wm else None
    requests: list[UploadRequest] = []
    reports: list[UploadReport] = []
    batch: list[tuple[UploadRequest, list]] = []
    tick_keys: set[str] = set()
    tick_md5: dict[str, str] = {}
    evaluated = 0
    deferred = False

    def handled(key: str, sig: list, status: str | None) -> None:
        if status:
            new.seen[key] = [sig[0], sig[1], status]
        new.pending.pop(key, None)
        if new.wm is None or (sig[0], key) > tuple(new.wm):
            new.wm = (sig[0], key)

    def flush() -> None:
        existing = history.existing_run_keys([r.run_key for r, _ in batch])
        owners = history.content_owners(sorted({r.md5 for r, _ in batch}))
        for req, sig in batch:
            # a board with a template is inspected as a pair: the same board bytes beside another template (or none)
            # are another inspection, not a duplicate
            owner = None if req.template_md5 else tick_md5.get(req.md5) or owners.get(req.md5)
            if req.run_key in existing or req.run_key in tick_keys:
                reports.append(UploadReport(req.path, "unchanged", "this content already ran for this file"))
                handled(req.key, sig, "a")
            elif owner and owner != req.path:
                reports.append(UploadReport(req.path, "duplicate", f"same content as {owner}: not inferred twice"))
                handled(req.key, sig, "r")
            else:
                requests.append(req)
                tick_keys.add(req.run_key)
                if not req.template_md5:
                    tick_md5[req.md5] = req.path
                handled(req.key, sig, "a")
        batch.clear()

    def template_of(board_path: str):
        """The listed template a board's inference will read (deeppcb.template_candidates order), or None."""
        path = listed_template(board_path, by_path)
        return by_path[path] if path else None

    boards_of: dict[str, list] | None = None  # template path -> the boards that read it; built once, when needed
    read_before: set[str] | None = None  # file_versions of templates behind the window that a run already read

    def boards_reading(template_path: str) -> list:
        nonlocal boards_of
        if boards_of is None:
            boards_of = {}
            for board in listing:
                t = None if is_template_name(board.path) else template_of(board.path)
                if t is not None:
                    boards_of.setdefault(t.path, []).append(board)
        return boards_of.get(template_path, [])

    def template_read_before(f) -> bool:
        """A template with no cursor entry, behind the window (or after a cursor reset), that a run already read:
        handled long ago. One history query per tick for all of them, and no file is read."""
        nonlocal read_before
        if read_before is None:
            old = [file_version(t) for t in listing if is_template_name(t.path)
                   and t.path[len(prefix):] not in cursor.seen
                   and (horizon is None or to_us(t.last_modified) < horizon)]
            read_before = history.template_files_read(old)
        return file_version(f) in read_before

    def boards_to_rerun(template, md5: str) -> tuple[list[str], list[str]]:
        """Boards already inferred whose template this is: each re-runs with it (a new template md5, a new run key).
        Returns (re-run, could not be read)."""
        rerun, failed = [], []
        for board in boards_reading(template.path):
            bkey = board.path[len(prefix):]
            bsig = [to_us(board.last_modified), int(board.size)]
            seen = cursor.seen.get(bkey)
            # inferred and unchanged since; a board that changed meanwhile is evaluated (and settled) on its own, and
            # one known only from the partitions must be old enough not to be mid-rewrite
            done = (seen[:2] == bsig and seen[2] == "a" if seen else
                    bkey in history.known_keys() and now - bsig[0] / 1e6 >= max(s.settle_s, s.stable_s))
            if not done:
                continue
            if any(r.key == bkey for r in requests) or any(r.key == bkey for r, _ in batch):
                continue  # (re)evaluated this tick already, with this template's md5
            try:
                data = read_bytes(board)
            except Exception as e:  # noqa: BLE001 - reported; the template is looked at again next tick
                reports.append(UploadReport(board.path, "error", f"could not be read for its new template ({e})"))
                failed.append(board.path)
                continue
            batch.append((UploadRequest(bkey, board.path, hashlib.md5(data).hexdigest(), md5,
                                        file_version(template)), bsig))
            rerun.append(board.path)
        return rerun, failed

    for f in listing:
        if len(requests) + len(batch) >= s.max_runs_per_tick or time.monotonic() - started > s.tick_budget_s:
            deferred = True
            break
        key = f.path[len(prefix):]
        us = to_us(f.last_modified)
        sig = [us, int(f.size)]
        prev = cursor.seen.get(key)
        if prev and prev[:2] == sig:
            continue
        if prev is None and (horizon is None or us < horizon) and (
                key in history.known_keys() or (is_template_name(key) and template_read_before(f))):
            handled(key, sig, None)  # processed before the cursor's window (or before a cursor reset)
            continue
        late = prev is None and horizon is not None and us < horizon
        evaluated += 1
        age = now - us / 1e6
        name = PurePosixPath(key).name

        def reject(reason: str) -> None:
            reports.append(UploadReport(f.path, "rejected", reason + (" (late arrival)" if late else "")))
            handled(key, sig, "r")

        def wait(reason: str) -> None:
            reports.append(UploadReport(f.path, "waiting", reason))
            new.pending[key] = sig

        if _is_temporary_name(name):
            reject("temporary file name: still being written, or left behind by an interrupted upload")
            continue
        if age < s.settle_s:
            wait(f"still being written (modified {max(age, 0):.1f}s ago)" if age >= 0
                 else "last_modified is in the future (clock skew?): waiting")
            continue
        if age < s.stable_s and cursor.pending.get(key) != sig:
            wait("still being written (size or last_modified changed since the last tick)"
                 if key in cursor.pending else "new: checking that it is complete on the next tick")
            continue
        if f.size == 0:
            reject("zero-byte file")
            continue
        suffix = PurePosixPath(name).suffix.lower()
        if suffix not in IMAGE_SUFFIXES:
            reject(f"not an image: suffix {suffix or '(none)'!r}, expected one of {sorted(IMAGE_SUFFIXES)}")
            continue
        if f.size > MAX_UPLOAD_BYTES:
            reject(f"too large: {f.size:,} bytes (limit {MAX_UPLOAD_BYTES:,})")
            continue
        problem = key_problem(key)
        if problem:
            reject(problem)
            continue
        try:
            data = read_bytes(f)
        except FileNotFoundError:
            reports.append(UploadReport(f.path, "waiting", "disappeared before it could be read"))
            continue
        except StagePathError as e:  # a symbolic link: never followed, reported once
            reject(str(e))
            continue
        except Exception as e:  # noqa: BLE001 - a read error is reported and retried next tick, never a crash
            reports.append(UploadReport(f.path, "error", f"could not be read ({type(e).__name__}: {e})"))
            continue
        if len(data) != f.size:
            wait(f"still being written (listed {f.size} bytes, read {len(data)})")
            continue
        if not image_signature_ok(data[:16]):
            reject("not an image: the content is not JPEG, PNG, BMP, TIFF or WebP")
            continue
        if is_template_name(name):  # read by the inference of <id>_test.* beside it, never inspected itself
            rerun, failed = boards_to_rerun(f, hashlib.md5(data).hexdigest())
            readers = boards_reading(f.path)
            reports.append(UploadReport(f.path, "template", TEMPLATE_REASON + (
                f"; re-inspecting {', '.join(rerun)} with it" if rerun else "" if readers else
                "; no board beside it reads it yet (boards read <id>_temp.jpg or .png beside <id>_test.*)")))
            if failed:
                new.pending[key] = sig  # not handled: the boards that could not be read are retried next tick
            else:  # with boards: tracked like an accepted file (a run's tag remembers it); without: like a rejected
                handled(key, sig, "t" if readers else "r")
        else:
            template = template_of(f.path)
            try:
                t_md5 = hashlib.md5(read_bytes(template)).hexdigest() if template else None
            except Exception as e:  # noqa: BLE001 - inspected with its template or not at all: next tick
                wait(f"its template {template.path} could not be read yet ({type(e).__name__})")
                continue
            batch.append((UploadRequest(key, f.path, hashlib.md5(data).hexdigest(), t_md5,
                                        file_version(template) if template else None), sig))
        if len(requests) + len(batch) >= s.max_runs_per_tick:
            flush()
    flush()

    listed = {f.path[len(prefix):] for f in listing}
    new.pending = {k: v for k, v in new.pending.items() if k in listed}
    floor = new.wm[0] - int(s.lookback_s * 1e6) if new.wm else None
    kept, rejected = {}, []
    for k, v in new.seen.items():
        if k not in listed:
            continue  # deleted: evaluated afresh if it comes back (durable state still prevents a second run)
        if v[2] == "r":
            rejected.append((v[0], k))
        elif floor is None or v[0] >= floor:
            kept[k] = v
    for _, k in sorted(rejected)[-s.max_rejected_remembered:]:
        kept[k] = new.seen[k]
    new.seen = kept
    return UploadPlan(requests, reports, new, evaluated, deferred)


def stage_reader(st) -> Callable[[object], bytes]:
    """Read a listed file's bytes: straight from disk for the local stage, else through GET into a temp folder."""
    from pcb_pipeline.backends.local import LocalStage

    if isinstance(st, LocalStage):
        return lambda f: st.path(f.path).read_bytes()

    def download(f) -> bytes:
        with tempfile.TemporaryDirectory(prefix="upload-sensor-") as tmp:
            return Path(st.get_file(f.path, Path(tmp) / PurePosixPath(f.path).name)).read_bytes()

    return download


def build_upload_sensor(s: UploadSensorSettings | None = None, name: str = UPLOAD_SENSOR_NAME,
                        job=upload_inference_job) -> dg.SensorDefinition:
    s = s or UploadSensorSettings.from_env()

    @dg.sensor(name=name, job=job, minimum_interval_seconds=s.interval_s,
               default_status=dg.DefaultSensorStatus.RUNNING if s.running else dg.DefaultSensorStatus.STOPPED,
               description=f"new images under the stage's {UPLOAD_PREFIX}/ folder -> one upload_defect_logs "
                           "partition each (run key = path@md5[+template@md5]: never twice)")
    def upload_sensor(context: dg.SensorEvaluationContext, stage: StageResource, registry: RegistryResource):
        try:
            cursor = UploadCursor.loads(context.cursor)
        except (ValueError, KeyError, TypeError) as e:
            context.log.warning(f"unreadable cursor ({e}); starting afresh (runs and partitions prevent repeats)")
            cursor = UploadCursor()
        try:
            st = stage.get()
            files = st.list(UPLOAD_PREFIX)
        except Exception as e:  # noqa: BLE001 - a stage outage is a skipped tick, not a crashed sensor
            return dg.SkipReason(f"cannot list the stage's {UPLOAD_PREFIX}/ folder: {type(e).__name__}: {e}")
        plan = plan_uploads(files, cursor, time.time(), s, DagsterUploadHistory(context.instance), stage_reader(st))
        for r in plan.reports:
            if r.status in ("rejected", "duplicate", "error"):
                context.log.warning(f"skipped {r.path}: {r.reason}")
            elif r.status == "waiting":
                context.log.info(f"waiting for {r.path}: {r.reason}")
            elif r.status == "template":
                context.log.info(f"{r.path}: {r.reason}")
        if plan.requests and s.wait_for_champion:
            try:
                champion = registry.get().champion()
            except Exception as e:  # noqa: BLE001
                return dg.SkipReason(f"{len(plan.requests)} upload(s) ready; registry unavailable ({e}): waiting")
            if champion is None:
                return dg.SkipReason(f"{len(plan.requests)} upload(s) ready but there is no champion model yet: "
                                     "they run once registered_model promotes one")
        run_requests = [dg.RunRequest(run_key=r.run_key, partition_key=r.key,
                                      tags={CONTENT_TAG: r.md5, PATH_TAG: r.path,
                                            **({TEMPLATE_TAG: r.template_md5, TEMPLATE_FILE_TAG: r.template_file}
                                               if r.template_md5 else {})})
                        for r in plan.requests]
        return dg.SensorResult(
            run_requests=run_requests,
            dynamic_partitions_requests=[UPLOAD_PARTITIONS.build_add_request([r.key for r in plan.requests])]
            if plan.requests else None,
            cursor=plan.cursor.dumps(),
            skip_reason=None if run_requests else plan.summary())

    return upload_sensor


# ------------------------------------------------------------------------------------------------ run failures
def failure_log_path() -> Path:
    return Path(os.environ.get("PCB_FAILURE_LOG") or settings.paths().home / "alerts" / "run_failures.jsonl")


def _deepest_message(error) -> tuple[str, str]:
    while error is not None and getattr(error, "cause", None) is not None:
        error = error.cause
    if error is None:
        return "unknown error", ""
    return (error.message or "").strip().splitlines()[-1] if error.message else "", error.cls_name or ""


def _step_assets(instance, run) -> dict[str, list[str]]:
    """step key -> asset (or asset check) names, from the run's execution plan."""
    out: dict[str, list[str]] = {}
    try:
        plan = instance.get_execution_plan_snapshot(run.execution_plan_snapshot_id)
        for step in plan.steps:
            for o in step.outputs:
                props = getattr(o, "properties", None)
                if props is None:
                    continue
                if props.asset_key is not None:
                    out.setdefault(step.key, []).append(props.asset_key.to_user_string())
                elif getattr(props, "asset_check_key", None) is not None:
                    ck = props.asset_check_key
                    out.setdefault(step.key, []).append(f"{ck.asset_key.to_user_string()}:{ck.name}")
    except Exception:  # noqa: BLE001 - fall back to the step key below
        pass
    return out


def failure_record(context) -> dict:
    """A structured description of a failed run: which assets, which steps, why."""
    run = context.dagster_run
    instance = context.instance
    by_step = _step_assets(instance, run)
    failed = []
    for ev in context.get_step_failure_events():
        data = ev.step_failure_data
        reason, cls = _deepest_message(data.error if data else None)
        if data is not None and data.user_failure_data is not None and data.user_failure_data.description:
            reason = data.user_failure_data.description
        failed.append({"step": ev.step_key, "assets": by_step.get(ev.step_key, [ev.step_key]), "reason": reason,
                       "error_type": cls})
    planned, done = set(), set()
    try:
        for rec in instance.all_logs(run.run_id, of_type={dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED,
                                                          dg.DagsterEventType.ASSET_MATERIALIZATION}):
            ev = rec.dagster_event
            (planned if ev.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED else done).add(
                ev.asset_key.to_user_string())
    except Exception:  # noqa: BLE001
        pass
    tags = run.tags or {}
    trigger = tags.get("dagster/schedule_name") or tags.get("dagster/sensor_name") or tags.get("pcb/trigger") or \
        "manual"
    return {
        "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "run_id": run.run_id,
        "job": run.job_name,
        "partition": tags.get(PARTITION_TAG),
        "trigger": trigger,
        "failed_steps": failed,
        "assets_not_materialized": sorted(planned - done),
        "reason": failed[0]["reason"] if failed else (context.failure_event.message or "run failed"),
    }


@dg.run_failure_sensor(name="run_failure_reporter", monitor_all_code_locations=True,
                       default_status=dg.DefaultSensorStatus.RUNNING,
                       description="writes a structured record (asset, step, reason) of every failed run to "
                                   "PCB_FAILURE_LOG (default PCB_HOME/alerts/run_failures.jsonl)")
def run_failure_reporter(context: dg.RunFailureSensorContext):
    record = failure_record(context)
    path = failure_log_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record, sort_keys=True) + "\n")
    assets = sorted({a for s in record["failed_steps"] for a in s["assets"]})
    context.log.error(f"run {record['run_id']} ({record['job']}) failed in {', '.join(assets) or 'the run'}: "
                      f"{record['reason']} — recorded in {path}")


upload_sensor = build_upload_sensor()
sensors = [run_failure_reporter]  # the pcb_pipeline code location
upload_sensors = [upload_sensor]  # the pcb_uploads code location
