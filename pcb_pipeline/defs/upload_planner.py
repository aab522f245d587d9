"""The upload planner: what one tick of the upload sensor decides, without Dagster (the sensor hands it the stage's
listing, its cursor, the clock, what already ran, and a way to read a file; tests drive it the same way).

Each tick walks the files under the stage's `uploads/` folder in (last_modified, path) order:

- unchanged since a previous tick (same last_modified and size in the cursor): nothing to do;
- older than the cursor's high-water mark minus `lookback_s` and already a partition: done long ago (this is how the
  cursor stays small: processed files are forgotten once they fall behind the lookback window);
- still being written: a temporary name (`.part`, `.tmp`, `.crdownload`, a leading dot ...), modified less than
  `settle_s` ago, or (younger than `stable_s`) not yet seen with the same size and last_modified on two ticks:
  skipped and reported, looked at again next tick;
- zero-byte, not an image (by suffix or by content signature), too large, a symbolic link, a name that cannot be a
  partition key, or content the inference's decoder cannot read (a truncated image: a non-atomic writer that paused
  longer than `stable_s`, an interrupted copy): skipped and reported once (remembered in the cursor until the file
  changes, so a writer that finishes is looked at again);
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

Correctness does not depend on the lookback window: a file behind it that is not yet a partition (a late arrival,
e.g. copied with its old mtime preserved) is still evaluated; the window only bounds the cursor (about 50 bytes per
file inside it).

The steps of `UploadPlanner.plan`, in order: list (`list_uploads`), filter (`name_verdict`, `settling_verdict`,
`listing_verdict`, then the read and `content_verdict`), pair (`TemplatePairs`), dedup and decide
(`UploadPlanner._decide_batch`: run keys and content owners from `UploadHistory`), and the next cursor.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from functools import partial
from pathlib import PurePosixPath
from typing import Callable, Iterable, Mapping, Protocol

from pcb_pipeline.backends.local import StagePathError
from pcb_pipeline.core.deeppcb import is_template_name, listed_template
from pcb_pipeline.core.images import IMAGE_SUFFIXES, read_image_bytes
from pcb_pipeline.core.stage_layout import MAX_UPLOAD_BYTES, UPLOAD_PREFIX
from pcb_pipeline.defs.inference import partition_stage_path
from pcb_pipeline.settings import env_choice, env_number

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
        """PCB_UPLOAD_SETTLE_S, _STABLE_S, _LOOKBACK_S (seconds), _MAX_RUNS_PER_TICK, PCB_UPLOAD_SENSOR_INTERVAL_S
        (whole numbers, at least 1) and PCB_UPLOAD_SENSOR (running | stopped); blank means the default above."""
        env = os.environ if env is None else env
        seconds = partial(env_number, env, minimum=0.0, unit="a number of seconds")
        whole = partial(env_number, env, cast=int, minimum=1, unit="a whole number")
        return cls(settle_s=seconds("PCB_UPLOAD_SETTLE_S", cls.settle_s),
                   stable_s=seconds("PCB_UPLOAD_STABLE_S", cls.stable_s),
                   lookback_s=seconds("PCB_UPLOAD_LOOKBACK_S", cls.lookback_s),
                   max_runs_per_tick=whole("PCB_UPLOAD_MAX_RUNS_PER_TICK", cls.max_runs_per_tick),
                   interval_s=whole("PCB_UPLOAD_SENSOR_INTERVAL_S", cls.interval_s),
                   running=_sensor_running(env))


def _sensor_running(env: Mapping[str, str]) -> bool:
    return env_choice(env, "PCB_UPLOAD_SENSOR", ("running", "stopped"), "running") == "running"


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


# ------------------------------------------------------------------------------------------------ what a plan holds
class UploadHistory(Protocol):
    """What already happened, from durable state (Dagster's partitions and run tags)."""

    def known_keys(self) -> set[str]: ...

    def existing_run_keys(self, run_keys: list[str]) -> set[str]: ...

    def content_owners(self, md5s: list[str]) -> dict[str, str]: ...

    def template_files_read(self, versions: list[str]) -> set[str]: ...


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


# ------------------------------------------------------------------------------------------------ step 1: list
@dataclass(frozen=True)
class ListedUpload:
    """A file under uploads/ as this tick's listing shows it."""

    file: object  # the stage's listed file: path, size, last_modified
    key: str  # the partition key it would be: its path under uploads/
    us: int  # last_modified in microseconds

    @property
    def path(self) -> str:
        return self.file.path

    @property
    def size(self) -> int:
        return int(self.file.size)

    @property
    def sig(self) -> list:
        """[last_modified us, size]: what the cursor remembers of this version."""
        return [self.us, self.size]

    @property
    def name(self) -> str:
        return PurePosixPath(self.key).name


def list_uploads(files: Iterable) -> list[ListedUpload]:
    """The listed files under uploads/, oldest first ((last_modified, path) order)."""
    prefix = f"{UPLOAD_PREFIX}/"
    listing = (ListedUpload(f, f.path[len(prefix):], to_us(f.last_modified)) for f in files
               if f.path.startswith(prefix))
    return sorted(listing, key=lambda u: (u.us, u.path))


# ------------------------------------------------------------------------------------------------ step 2: filter
@dataclass(frozen=True)
class Verdict:
    """Why a file is not run this tick: "waiting" (looked at again next tick) or "rejected" (until it changes)."""

    status: str
    reason: str


def waiting(reason: str) -> Verdict:
    return Verdict("waiting", reason)


def rejected(reason: str) -> Verdict:
    return Verdict("rejected", reason)


def is_temporary_name(name: str) -> bool:
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


def name_verdict(upload: ListedUpload) -> Verdict | None:
    """A dot-file or a writer's temporary name is never an upload (it is reported, not silently skipped)."""
    if is_temporary_name(upload.name):
        return rejected("temporary file name: still being written, or left behind by an interrupted upload")
    return None


def settling_verdict(upload: ListedUpload, now: float, s: UploadSensorSettings,
                     pending_before: Mapping[str, list]) -> Verdict | None:
    """Too young to read: modified under `settle_s` ago, or under `stable_s` ago and not yet seen twice the same."""
    age = now - upload.us / 1e6
    if age < s.settle_s:
        return waiting(f"still being written (modified {age:.1f}s ago)" if age >= 0
                       else "last_modified is in the future (clock skew?): waiting")
    if age < s.stable_s and pending_before.get(upload.key) != upload.sig:
        return waiting("still being written (size or last_modified changed since the last tick)"
                       if upload.key in pending_before else "new: checking that it is complete on the next tick")
    return None


def listing_verdict(upload: ListedUpload) -> Verdict | None:
    """What the listing alone shows to be no upload: empty, not an image name, over the size limit, a bad key."""
    if upload.size == 0:
        return rejected("zero-byte file")
    suffix = PurePosixPath(upload.name).suffix.lower()
    if suffix not in IMAGE_SUFFIXES:
        return rejected(f"not an image: suffix {suffix or '(none)'!r}, expected one of {sorted(IMAGE_SUFFIXES)}")
    if upload.size > MAX_UPLOAD_BYTES:
        return rejected(f"too large: {upload.size:,} bytes (limit {MAX_UPLOAD_BYTES:,})")
    problem = key_problem(upload.key)
    return rejected(problem) if problem else None


def content_verdict(upload: ListedUpload, data: bytes) -> Verdict | None:
    """What the bytes show: not all there yet, not an image format, or nothing the inference's decoder can read."""
    if len(data) != upload.size:
        return waiting(f"still being written (listed {upload.size} bytes, read {len(data)})")
    if not image_signature_ok(data[:16]):
        return rejected("not an image: the content is not JPEG, PNG, BMP, TIFF or WebP")
    try:
        read_image_bytes(data, upload.name)  # a truncated image starts like a good one: only decoding tells
    except Exception as e:  # noqa: BLE001 - whatever the decoder refuses, the inference would fail on
        return rejected(f"the inference cannot decode it ({e}); if it is still being written, it is looked at "
                        "again once it changes")
    return None


# ------------------------------------------------------------------------------------------------ step 3: pair
class TemplatePairs:
    """Which listed template each board reads (deeppcb.listed_template), and the boards that read each template."""

    def __init__(self, listing: list[ListedUpload]):
        self._listing = listing
        self._by_path = {u.path: u for u in listing}
        self._readers: dict[str, list[ListedUpload]] | None = None  # built once, when first needed

    def template_of(self, board_path: str) -> ListedUpload | None:
        path = listed_template(board_path, self._by_path)
        return self._by_path[path] if path else None

    def boards_reading(self, template_path: str) -> list[ListedUpload]:
        if self._readers is None:
            self._readers = {}
            for board in self._listing:
                template = None if is_template_name(board.path) else self.template_of(board.path)
                if template is not None:
                    self._readers.setdefault(template.path, []).append(board)
        return self._readers.get(template_path, [])


# ------------------------------------------------------------------------------------------------ the planner
class UploadPlanner:
    """One tick's plan; pure apart from `read_bytes` and `history`. `plan()` runs the steps once."""

    def __init__(self, files: Iterable, cursor: UploadCursor, now: float, settings: UploadSensorSettings,
                 history: UploadHistory, read_bytes: Callable[[object], bytes]):
        self.listing = list_uploads(files)
        self.pairs = TemplatePairs(self.listing)
        self.before = cursor
        self.now = now
        self.s = settings
        self.history = history
        self.read_bytes = read_bytes
        self.horizon = cursor.wm[0] - int(settings.lookback_s * 1e6) if cursor.wm else None
        self.next = UploadCursor(cursor.wm, dict(cursor.seen), {})
        self.requests: list[UploadRequest] = []
        self.reports: list[UploadReport] = []
        self.batch: list[tuple[UploadRequest, ListedUpload]] = []  # read and hashed, not yet deduplicated
        self.run_keys_this_tick: set[str] = set()
        self.content_this_tick: dict[str, str] = {}  # md5 -> the path it is requested for (boards without template)
        self.evaluated = 0
        self.deferred = False
        self._started = time.monotonic()
        self._templates_read_before: set[str] | None = None

    def plan(self) -> UploadPlan:
        for upload in self.listing:
            if self._tick_is_full() or time.monotonic() - self._started > self.s.tick_budget_s:
                self.deferred = True
                break
            self._consider(upload)
            if self._tick_is_full():
                self._decide_batch()
        self._decide_batch()
        return UploadPlan(self.requests, self.reports, self._next_cursor(), self.evaluated, self.deferred)

    def _tick_is_full(self) -> bool:
        return len(self.requests) + len(self.batch) >= self.s.max_runs_per_tick

    # ---------------------------------------------------------------------------------------- one file
    def _consider(self, upload: ListedUpload) -> None:
        before = self.before.seen.get(upload.key)
        if before and before[:2] == upload.sig:
            return  # this version was handled on an earlier tick
        if before is None and self._done_before_the_window(upload):
            self._mark_handled(upload, None)
            return
        self.evaluated += 1
        data = self._screened_content(upload)
        if data is None:
            return
        if is_template_name(upload.name):  # read by the inference of <id>_test.* beside it, never inspected
            self._consider_template(upload, hashlib.md5(data).hexdigest())
        else:
            self._consider_board(upload, hashlib.md5(data).hexdigest())

    def _screened_content(self, upload: ListedUpload) -> bytes | None:
        """Step 2, filter: the file's bytes when every check passes; else None, the verdict reported."""
        verdict = (name_verdict(upload) or settling_verdict(upload, self.now, self.s, self.before.pending)
                   or listing_verdict(upload))
        data = None if verdict else self._read(upload)
        if data is not None:
            verdict = content_verdict(upload, data)
        if verdict is not None:
            self._settle(upload, verdict)
            return None
        return data

    def _done_before_the_window(self, upload: ListedUpload) -> bool:
        """Processed before the cursor's window (or before a cursor reset): a partition, or a template a run read."""
        if self.horizon is not None and upload.us >= self.horizon:
            return False
        return upload.key in self.history.known_keys() or (
            is_template_name(upload.key) and file_version(upload.file) in self._templates_read_long_ago())

    def _templates_read_long_ago(self) -> set[str]:
        """file_versions of templates without a cursor entry, behind the window (or after a cursor reset), that a
        run already read: one history query per tick for all of them, and no file is read."""
        if self._templates_read_before is None:
            old = [file_version(t.file) for t in self.listing if is_template_name(t.path)
                   and t.key not in self.before.seen and (self.horizon is None or t.us < self.horizon)]
            self._templates_read_before = self.history.template_files_read(old)
        return self._templates_read_before

    def _read(self, upload: ListedUpload) -> bytes | None:
        """The file's bytes, or None with the reason reported (a read error is retried next tick, never a crash)."""
        try:
            return self.read_bytes(upload.file)
        except FileNotFoundError:
            self._report(upload.path, "waiting", "disappeared before it could be read")
        except StagePathError as e:  # a symbolic link: never followed, reported once
            self._settle(upload, rejected(str(e)))
        except Exception as e:  # noqa: BLE001
            self._report(upload.path, "error", f"could not be read ({type(e).__name__}: {e})")
        return None

    # ---------------------------------------------------------------------------------------- boards and templates
    def _consider_board(self, upload: ListedUpload, md5: str) -> None:
        template = self.pairs.template_of(upload.path)
        try:
            template_md5 = hashlib.md5(self.read_bytes(template.file)).hexdigest() if template else None
        except Exception as e:  # noqa: BLE001 - inspected with its template or not at all: next tick
            self._settle(upload, waiting(f"its template {template.path} could not be read yet ({type(e).__name__})"))
            return
        self.batch.append((UploadRequest(upload.key, upload.path, md5, template_md5,
                                         file_version(template.file) if template else None), upload))

    def _consider_template(self, template: ListedUpload, md5: str) -> None:
        rerun, failed = self._rerun_boards_of(template, md5)
        readers = self.pairs.boards_reading(template.path)
        note = (f"; re-inspecting {', '.join(rerun)} with it" if rerun else "" if readers else
                "; no board beside it reads it yet (boards read <id>_temp.jpg or .png beside <id>_test.*)")
        self._report(template.path, "template", TEMPLATE_REASON + note)
        if failed:
            self.next.pending[template.key] = template.sig  # the boards that could not be read: retried next tick
        else:  # with boards: tracked like an accepted file (a run's tag remembers it); without: like a rejected
            self._mark_handled(template, "t" if readers else "r")

    def _rerun_boards_of(self, template: ListedUpload, md5: str) -> tuple[list[str], list[str]]:
        """Boards already inferred whose template this is: each re-runs with it (a new template md5, a new run key).
        Returns (re-run, could not be read)."""
        rerun, failed = [], []
        for board in self.pairs.boards_reading(template.path):
            if not self._already_inferred(board) or self._in_this_tick(board.key):
                continue  # evaluated (and settled) on its own, or already with this template's md5
            try:
                data = self.read_bytes(board.file)
            except Exception as e:  # noqa: BLE001 - reported; the template is looked at again next tick
                self._report(board.path, "error", f"could not be read for its new template ({e})")
                failed.append(board.path)
                continue
            self.batch.append((UploadRequest(board.key, board.path, hashlib.md5(data).hexdigest(), md5,
                                             file_version(template.file)), board))
            rerun.append(board.path)
        return rerun, failed

    def _already_inferred(self, board: ListedUpload) -> bool:
        """Inferred and unchanged since; one known only from the partitions must be old enough not to be
        mid-rewrite."""
        seen = self.before.seen.get(board.key)
        if seen:
            return seen[:2] == board.sig and seen[2] == "a"
        old_enough = self.now - board.us / 1e6 >= max(self.s.settle_s, self.s.stable_s)
        return board.key in self.history.known_keys() and old_enough

    def _in_this_tick(self, key: str) -> bool:
        return any(r.key == key for r in self.requests) or any(r.key == key for r, _ in self.batch)

    # ---------------------------------------------------------------------------------------- steps 4 and 5
    def _decide_batch(self) -> None:
        """Dedup the batch against what already ran (run keys, content owners) and this tick, then decide."""
        existing = self.history.existing_run_keys([r.run_key for r, _ in self.batch])
        owners = self.history.content_owners(sorted({r.md5 for r, _ in self.batch}))
        for request, upload in self.batch:
            # a board with a template is inspected as a pair: the same board bytes beside another template (or none)
            # are another inspection, not a duplicate
            owner = None if request.template_md5 else (self.content_this_tick.get(request.md5)
                                                       or owners.get(request.md5))
            if request.run_key in existing or request.run_key in self.run_keys_this_tick:
                self._report(request.path, "unchanged", "this content already ran for this file")
                self._mark_handled(upload, "a")
            elif owner and owner != request.path:
                self._report(request.path, "duplicate", f"same content as {owner}: not inferred twice")
                self._mark_handled(upload, "r")
            else:
                self._request(request, upload)
        self.batch.clear()

    def _request(self, request: UploadRequest, upload: ListedUpload) -> None:
        self.requests.append(request)
        self.run_keys_this_tick.add(request.run_key)
        if not request.template_md5:
            self.content_this_tick[request.md5] = request.path
        self._mark_handled(upload, "a")

    def _report(self, path: str, status: str, reason: str) -> None:
        self.reports.append(UploadReport(path, status, reason))

    def _settle(self, upload: ListedUpload, verdict: Verdict) -> None:
        """Report a verdict; a rejected version is remembered (reported once), a waiting one is looked at again."""
        if verdict.status == "waiting":
            self._report(upload.path, "waiting", verdict.reason)
            self.next.pending[upload.key] = upload.sig
            return
        late = self.horizon is not None and upload.us < self.horizon and upload.key not in self.before.seen
        self._report(upload.path, "rejected", verdict.reason + (" (late arrival)" if late else ""))
        self._mark_handled(upload, "r")

    def _mark_handled(self, upload: ListedUpload, status: str | None) -> None:
        if status:
            self.next.seen[upload.key] = [*upload.sig, status]
        self.next.pending.pop(upload.key, None)
        if self.next.wm is None or (upload.us, upload.key) > tuple(self.next.wm):
            self.next.wm = (upload.us, upload.key)

    def _next_cursor(self) -> UploadCursor:
        """Forget deleted files, and accepted ones behind the window; remember the newest rejected ones."""
        listed = {u.key for u in self.listing}
        self.next.pending = {k: v for k, v in self.next.pending.items() if k in listed}
        floor = self.next.wm[0] - int(self.s.lookback_s * 1e6) if self.next.wm else None
        kept, rejected_versions = {}, []
        for key, version in self.next.seen.items():
            if key not in listed:
                continue  # deleted: evaluated afresh if it comes back (durable state still prevents a second run)
            if version[2] == "r":
                rejected_versions.append((version[0], key))
            elif floor is None or version[0] >= floor:
                kept[key] = version
        for _, key in sorted(rejected_versions)[-self.s.max_rejected_remembered:]:
            kept[key] = self.next.seen[key]
        self.next.seen = kept
        return self.next


def plan_uploads(files: Iterable, cursor: UploadCursor, now: float, s: UploadSensorSettings,
                 history: UploadHistory, read_bytes: Callable[[object], bytes]) -> UploadPlan:
    """Decide, for one tick, which uploads to run (see UploadPlanner)."""
    return UploadPlanner(files, cursor, now, s, history, read_bytes).plan()
