"""Function-level API of the knowledge layer, for the CLI (`pcb-pipeline ask`), the Dagster assets and the app.

    ask_data(question, warehouse)          -> {"sql", "columns", "rows", "interpretation", "suggestions", ...}
    ask_manuals(question, category=None)   -> {"answer", "citations": [{"document", "page", "defect_category", "text",
                                                ...}]}
    build_manual_pdfs(out_dir)             -> [Path]        (sop_documents)
    build_corpus(pdf_paths)                -> [Chunk]       (sop_corpus; save_chunks / chunks_to_frame to persist)
    build_sop_index(chunks, index_dir)     -> LocalManualSearch, saved (local sop_search_service)
    verify_semantic_model(warehouse)       -> [{"name", "ok", ...}] (semantic_model asset check)
"""
from __future__ import annotations

import threading
from pathlib import Path

from .corpus import Chunk, build_corpus, chunks_to_frame, load_chunks, save_chunks  # noqa: F401 - re-exported
from .manuals import build_manual_pdfs  # noqa: F401 - re-exported
from .search import Answer, LocalManualSearch, ManualSearch
from .semantic_model import SemanticModel, load_semantic_model, logical_to_physical
from .sql_guard import UnsafeSQLError, guard_model_sql, run_guarded
from .questions import DataAnswer, LocalDataAnalyst, frame_to_rows

_LOCK = threading.Lock()
_ANALYSTS: dict[int, LocalDataAnalyst] = {}
_SEARCHES: dict[str, LocalManualSearch] = {}


def check_question(question) -> str:
    """The question as a string; ValueError("empty question") for None, "" or only whitespace."""
    if not question or not str(question).strip():
        raise ValueError("empty question")
    return str(question)


# ------------------------------------------------------------------------------------------------------- data
def local_analyst(model: SemanticModel | None = None) -> LocalDataAnalyst:
    model = model or load_semantic_model()
    with _LOCK:
        if id(model) not in _ANALYSTS:
            _ANALYSTS[id(model)] = LocalDataAnalyst(model)
        return _ANALYSTS[id(model)]


def ask_data(question: str, warehouse, analyst=None, model: SemanticModel | None = None) -> dict:
    """Answer a plain-English question (or a typed SELECT) over DEFECT_LOGS / BOARD_INSPECTIONS / PCB_METADATA.

    `warehouse` is a pcb_pipeline Warehouse (SQL in Snowflake dialect). `analyst` defaults to the local
    semantic-model engine; pass a CortexAnalystClient to use Cortex Analyst. Always returns the keys sql, columns,
    rows, interpretation (plus suggestions, source, answered); sql is None when the question cannot be answered.
    """
    question = check_question(question)
    analyst = analyst or local_analyst(model)
    ans: DataAnswer = analyst.ask(question, warehouse)
    return ans.to_dict()


def run_sql(sql: str, warehouse, model: SemanticModel | None = None) -> dict:
    """Run typed SQL after the guard (one read-only SELECT over the model's tables); raises UnsafeSQLError."""
    model = model or load_semantic_model()
    guarded = guard_model_sql(sql, model)
    cols, rows = frame_to_rows(run_guarded(warehouse, guarded))
    return {"sql": guarded.sql, "columns": cols, "rows": rows, "interpretation": "SQL as typed (checked read-only)"}


def verify_semantic_model(warehouse, model: SemanticModel | None = None) -> list[dict]:
    """Translate every verified query to physical SQL, guard it and run it; one result dict per query."""
    model = model or load_semantic_model()
    out = []
    for v in model.verified_queries:
        rec = {"name": v.name, "question": v.question, "ok": False}
        try:
            sql = guard_model_sql(logical_to_physical(v.sql, model), model).sql
            df = warehouse.query(sql)
            rec.update(ok=True, sql=sql, rows=len(df))
        except (UnsafeSQLError, Exception) as e:  # noqa: BLE001 - report, do not stop at the first failure
            rec["error"] = str(e)
        out.append(rec)
    return out


# ----------------------------------------------------------------------------------------------------- manuals
def default_index_dir() -> Path:
    from pcb_pipeline.settings import paths

    return paths().sop_index


def build_sop_index(chunks: list[Chunk], index_dir: Path | None = None) -> LocalManualSearch:
    """Embed and save the local index (chunks.jsonl, embeddings.npy, index.json) where ask_manuals finds it."""
    index_dir = Path(index_dir) if index_dir is not None else default_index_dir()
    search = LocalManualSearch.from_chunks(chunks)
    search.save(index_dir)
    with _LOCK:
        _SEARCHES[str(index_dir)] = search
    return search


def default_manual_search(index_dir: Path | None = None) -> LocalManualSearch:
    """The saved local index; built from pcb_pipeline/resources/manuals on first use when the sop assets have not run yet."""
    index_dir = Path(index_dir) if index_dir is not None else default_index_dir()
    key = str(index_dir)
    with _LOCK:
        cached = _SEARCHES.get(key)
    if cached is not None:
        return cached
    if (index_dir / "chunks.jsonl").exists():
        search = LocalManualSearch.load(index_dir)
        with _LOCK:
            _SEARCHES[key] = search
        return search
    from pcb_pipeline.settings import paths

    pdfs = build_manual_pdfs(paths().work / "manuals")
    return build_sop_index(build_corpus(pdfs), index_dir)


def ask_manuals(question: str, category: str | None = None, search: ManualSearch | None = None) -> dict:
    """Cited answer from the SOP manuals: {"answer": str, "citations": [{"number", "document", "page",
    "defect_category", "text", ...}]}. `category` is a defect_category (Etching, Soldering, Mechanical, ...) or a
    defect class (mousebite, pin-hole, ...). `search` defaults to the local index; pass a SnowflakeManualSearch to
    use Cortex Search + AI_COMPLETE."""
    question = check_question(question)
    search = search or default_manual_search()
    ans: Answer = search.answer(question, category=category)
    return ans.to_dict()
