"""The function-level API the CLI and the Dagster assets call."""
from __future__ import annotations

import json

from knowledge_golden import GOLDEN_QUESTION, SAMPLE_RAG_PROMPT
from pcb_pipeline.knowledge import api


def test_ask_manuals_from_a_saved_index(tmp_path, manual_search, monkeypatch):
    index_dir = tmp_path / "sop_index"
    manual_search.save(index_dir)
    monkeypatch.setattr(api, "default_index_dir", lambda: index_dir)
    out = api.ask_manuals(SAMPLE_RAG_PROMPT)
    json.dumps(out)
    assert set(out) == {"answer", "citations"} and out["citations"]
    for c in out["citations"]:
        assert {"document", "page", "defect_category", "text"} <= set(c)
    assert any(c["document"] == "PCB-SOP-203_mousebite_repair.pdf" for c in out["citations"])
    filtered = api.ask_manuals("How is the foil soldered?", category="Soldering")
    assert all(c["defect_category"] == "Soldering" for c in filtered["citations"])


def test_first_use_builds_pdfs_corpus_and_index_under_pcb_home(tmp_path, monkeypatch, embedder):
    index_dir = tmp_path / "fresh_index"
    monkeypatch.setattr(api, "default_index_dir", lambda: index_dir)
    search = api.default_manual_search()
    assert (index_dir / "chunks.jsonl").exists() and (index_dir / "embeddings.npy").exists()
    assert len(search.chunks) > 60
    from pcb_pipeline.settings import paths

    assert list((paths().work / "manuals").glob("*.pdf")), "the PDFs were built into PCB_HOME/work/manuals"


def test_ask_data_shape(warehouse):
    out = api.ask_data(GOLDEN_QUESTION, warehouse)
    json.dumps(out)
    assert {"sql", "columns", "rows", "interpretation"} <= set(out)
    assert out["sql"].startswith("SELECT") and len(out["columns"]) == 2


def test_sop_asset_helpers(tmp_path, manual_pdfs, corpus):
    from pcb_pipeline.knowledge.corpus import load_chunks

    path = api.save_chunks(api.build_corpus(manual_pdfs[:2]), tmp_path / "sop_corpus.jsonl")
    assert load_chunks(path) == [c for c in corpus if c.document in {p.name for p in manual_pdfs[:2]}]
