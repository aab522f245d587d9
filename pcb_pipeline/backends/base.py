"""The interfaces every backend implements. Assets and the app only ever see these."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Callable, Iterable, Protocol, runtime_checkable

import pandas as pd


@dataclass(frozen=True)
class StageFile:
    path: str  # relative to the stage root, forward slashes, e.g. "raw/deeppcb/PCBData/trainval.txt"
    size: int
    last_modified: datetime
    md5: str | None = None


@runtime_checkable
class Stage(Protocol):
    """Files: a local directory, or a Snowflake internal stage (PUT/GET/LIST)."""

    def put_file(self, local: Path, stage_path: str) -> str: ...

    def put_dir(self, local_dir: Path, stage_prefix: str) -> int: ...

    def get_file(self, stage_path: str, local: Path) -> Path: ...

    def get_dir(self, stage_prefix: str, local_dir: Path) -> Path: ...

    def list(self, prefix: str = "") -> list[StageFile]: ...

    def uri(self, stage_path: str) -> str: ...

    def remove_prefix(self, stage_prefix: str) -> int:
        """Delete every file under a prefix (used before re-landing a dataset); returns files removed."""
        ...


class BackendConfigError(RuntimeError):
    """Missing or wrong backend settings; the message names the setting."""


class QueryTimeoutError(RuntimeError):
    """A statement ran past its time limit and was stopped."""


@runtime_checkable
class Warehouse(Protocol):
    """Tables and SQL. Every statement is written in Snowflake dialect; the local backend transpiles it."""

    def execute(self, sql: str) -> None: ...

    def query(self, sql: str, timeout_s: float | None = None, max_rows: int | None = None) -> pd.DataFrame:
        """Rows of one SELECT. ``timeout_s``: stop the statement after this long (QueryTimeoutError);
        ``max_rows``: fetch at most this many rows (the rest is never transferred)."""
        ...

    def replace_rows(self, table: str, key_column: str, key_value: str, rows: pd.DataFrame) -> int:
        """Atomically delete the rows whose key_column equals key_value and insert `rows`; returns rows written."""
        ...

    def replace_batch(self, key_column: str, key_value: str, tables: dict[str, pd.DataFrame]) -> dict[str, int]:
        """replace_rows over several tables in ONE transaction (a batch's detections and its board rows appear
        together or not at all); returns rows written per table."""
        ...

    def upsert(self, table: str, key_columns: list[str], rows: pd.DataFrame) -> int: ...


@dataclass
class TrainingRequest:
    dataset_dir: Path  # a local YOLO dataset (data.yaml inside) the dispatcher makes available to the payload
    profile: str  # a training profile (vision.profiles): "demo" (CPU), "full" (GPU), "verifier" (two-stage), ...
    run_name: str
    overrides: dict = field(default_factory=dict)  # ultralytics train() keyword overrides
    output_stage_prefix: str = "models"


@dataclass
class TrainingResult:
    run_id: str  # MLflow run id
    weights_stage_path: str  # best.pt on the stage
    onnx_stage_path: str | None
    metrics: dict[str, float]
    local_weights: Path | None = None
    kind: str = "yolo"  # or "verifier": the two-stage reference inspector (vision.verifier)


@runtime_checkable
class TrainingDispatcher(Protocol):
    def train(self, request: TrainingRequest, log: Callable[[str], None]) -> TrainingResult: ...


@dataclass(frozen=True)
class ModelVersion:
    name: str
    version: str
    run_id: str
    metrics: dict[str, float]
    weights_uri: str


@dataclass(frozen=True)
class PromotionDecision:
    promoted: bool
    reason: str
    candidate: ModelVersion
    previous_champion: ModelVersion | None


@runtime_checkable
class ModelRegistry(Protocol):
    def register(self, result: TrainingResult, weights: Path, onnx: Path | None) -> ModelVersion: ...

    def champion(self) -> ModelVersion | None: ...

    def promote_if_better(self, candidate: ModelVersion, min_map50: float) -> PromotionDecision: ...

    def download_weights(self, version: ModelVersion, dest_dir: Path) -> Path: ...


def stage_templates(stage: Stage, board_paths: Iterable[str]) -> dict[str, str]:
    """Board stage path -> its template's stage path (``deeppcb.listed_template``); boards without one are absent.
    One LIST per folder holding boards named ``<id>_test.*``, none otherwise."""
    from pcb_pipeline.core.deeppcb import listed_template, template_candidates

    boards = [p for p in board_paths if template_candidates(PurePosixPath(p))]
    folders = sorted({str(PurePosixPath(p).parent) for p in boards})
    on_stage = {f.path for d in folders for f in stage.list("" if d == "." else d)}
    found = {p: listed_template(p, on_stage) for p in boards}
    return {p: t for p, t in found.items() if t}


def replace_prefix(stage: Stage, prefix: str, files: list[tuple[Path, str]],
                   on_put: Callable[[], None] | None = None) -> tuple[int, int]:
    """Make the stage hold exactly ``files`` (local file, stage path) under ``prefix``: (written, removed).

    Never a moment with the previous content gone: every new file is written first, in the order given (put the
    index, e.g. the split file, last), each put atomic; only then are the files the new set lacks removed. A failure
    part-way leaves every previous file that was not yet replaced by its validated successor."""
    written = set()
    for local, stage_path in files:
        written.add(stage.put_file(local, stage_path))
        if on_put is not None:
            on_put()
    stale = [f.path for f in stage.list(prefix) if f.path not in written]
    for path in stale:
        stage.remove_prefix(path)
    return len(written), len(stale)


def batched(items: Iterable, size: int):
    batch = []
    for it in items:
        batch.append(it)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
