"""The chat behind both pages, without Streamlit: a question in "Query Data" or "Query Manuals" mode becomes one
assistant message (a plain dict, so it can live in st.session_state). It only calls the knowledge layer's
function API (`ask_data`, `ask_manuals`); search and question -> SQL are not re-implemented here."""
from __future__ import annotations

import logging

QUERY_DATA = "Query Data"
QUERY_MANUALS = "Query Manuals"
MODES = (QUERY_DATA, QUERY_MANUALS)
MAX_QUESTION_CHARS = 500

log = logging.getLogger(__name__)


def repair_question(class_name: str) -> str:
    return f"How do I repair a {class_name}?"


def user_message(question: str, mode: str) -> dict:
    return {"role": "user", "mode": mode, "text": question}


def _error(mode: str, text: str) -> dict:
    return {"role": "assistant", "mode": mode, "text": text, "error": True, "citations": [], "sql": None,
            "columns": [], "rows": [], "suggestions": []}


def answer(mode: str, question: str, warehouse_factory=None, category: str | None = None, analyst=None,
           search=None) -> dict:
    """One assistant message: {"role", "mode", "text", "error", "citations", "sql", "columns", "rows",
    "suggestions"}. Never raises for bad questions or backend failures: the message says what went wrong.

    warehouse_factory: a callable returning the Warehouse (called only in data mode). analyst / search: optional
    Cortex clients passed straight to ask_data / ask_manuals (None: the knowledge layer's defaults)."""
    from pcb_pipeline.knowledge.api import ask_data, ask_manuals

    if mode not in MODES:
        return _error(mode, f"Unknown mode {mode!r}: choose {' or '.join(MODES)}.")
    q = (question or "").strip()
    if not q:
        return _error(mode, "Type a question first.")
    if len(q) > MAX_QUESTION_CHARS:
        return _error(mode, f"That question is {len(q)} characters long; keep it under {MAX_QUESTION_CHARS}.")
    try:
        if mode == QUERY_MANUALS:
            res = ask_manuals(q, category=category, search=search)
            cites = list(res.get("citations") or [])
            return {"role": "assistant", "mode": mode, "text": res.get("answer") or "No answer found in the manuals.",
                    "error": False, "citations": cites, "sql": None, "columns": [], "rows": [], "suggestions": []}
        res = ask_data(q, warehouse_factory() if callable(warehouse_factory) else warehouse_factory, analyst=analyst)
    except ValueError as e:
        return _error(mode, f"I could not use that question: {e}.")
    except Exception as e:  # noqa: BLE001 - a backend failure must not break the page
        log.exception("chat question failed")
        what = "searching the manuals" if mode == QUERY_MANUALS else "querying the data"
        return _error(mode, f"Something went wrong while {what}: {type(e).__name__}: {e}")
    answered = res.get("sql") is not None and res.get("answered", True)
    text = res.get("interpretation") or ""
    if not answered:
        text = text or "I could not turn that question into a query over the defect data."
    return {"role": "assistant", "mode": mode, "text": text, "error": False, "citations": [],
            "sql": res.get("sql"), "columns": list(res.get("columns") or []), "rows": list(res.get("rows") or []),
            "suggestions": list(res.get("suggestions") or []), "answered": answered,
            "request_id": res.get("request_id"), "source": res.get("source")}


def citation_label(c: dict) -> str:
    n = c.get("number")
    head = f"[{n}] " if n is not None else ""
    page = f", page {c['page']}" if c.get("page") not in (None, "") else ""
    cat = f" ({c['defect_category']})" if c.get("defect_category") else ""
    return f"{head}{c.get('document', 'document')}{page}{cat}"
