"""Knowledge layer: SOP manuals -> cited answers, and plain-English questions over the defect data.

Pure logic, no Dagster. Heavy imports (torch via sentence-transformers, snowflake.core) happen only when a function
that needs them runs. Entry points are in `pcb_pipeline.knowledge.api`:

    ask_data(question, warehouse) -> {"sql", "columns", "rows", "interpretation", ...}
    ask_manuals(question, category=None) -> {"answer", "citations": [...]}
"""
from __future__ import annotations

__all__ = [
    "ask_data", "ask_manuals", "run_sql", "build_manual_pdfs", "build_corpus", "build_sop_index",
    "default_manual_search", "verify_semantic_model", "load_semantic_model",
]


def __getattr__(name: str):
    if name in ("ask_data", "ask_manuals", "run_sql", "build_sop_index", "default_manual_search",
                "verify_semantic_model", "build_corpus", "build_manual_pdfs"):
        from . import api

        return getattr(api, name)
    if name == "load_semantic_model":
        from .semantic_model import load_semantic_model

        return load_semantic_model
    raise AttributeError(name)
