"""Local hybrid search and cited extractive answers (no LLM, no network)."""
from __future__ import annotations

import numpy as np
import pytest

from knowledge_golden import SAMPLE_RAG_PROMPT
from pcb_pipeline.knowledge.search import (NO_ANSWER, LocalManualSearch, UnknownCategoryError, resolve_category,
                                           split_aspects)


def test_sample_rag_prompt_cites_the_mousebite_material(manual_search):
    ans = manual_search.answer(SAMPLE_RAG_PROMPT)
    assert ans.citations, ans.answer
    # every citation is mousebite material, and the mousebite SOP's acceptability section is among them
    assert all(c.defect_class == "mousebite" for c in ans.citations), [(c.document, c.section) for c in ans.citations]
    assert any(c.document == "PCB-SOP-203_mousebite_repair.pdf" and c.section.startswith("4 Acceptability")
               for c in ans.citations)
    text = ans.answer
    assert "Class 2: acceptable when the width reduction is no more than 20 percent" in text
    assert "etch" in text.lower(), "the causes part of the question is answered too"
    # numbered markers in the text match the numbered citations
    import re

    used = {int(n) for n in re.findall(r"\[(\d+)\]", text)}
    assert used == {c.number for c in ans.citations}
    for c in ans.citations:
        assert c.page >= 1 and c.defect_category and c.text


def test_answer_dict_shape(manual_search):
    d = manual_search.answer("How do I remove a spur?").to_dict()
    assert set(d) == {"answer", "citations"}
    for c in d["citations"]:
        assert {"document", "page", "defect_category", "text"} <= set(c)
        assert c["document"] == "PCB-SOP-204_spur_removal.pdf"


def test_category_filter_restricts_sources(manual_search):
    hits = manual_search.search("how do I repair it", category="Soldering", k=10)
    assert hits and all(h.chunk.defect_category == "Soldering" for h in hits)
    hits = manual_search.search("acceptability limits", category="pin hole", k=10)
    assert hits and all(h.chunk.defect_class == "pin-hole" for h in hits)
    ans = manual_search.answer("What tools are needed?", category="Mechanical")
    assert ans.citations and all(c.defect_category == "Mechanical" for c in ans.citations)


def test_unknown_category_is_a_clear_error(manual_search):
    with pytest.raises(UnknownCategoryError, match="Etching"):
        manual_search.answer("anything", category="Cooking")
    assert resolve_category("etching") == ("Etching", None)
    assert resolve_category("Mouse bite") == (None, "mousebite")
    assert resolve_category(None) == (None, None)


def test_off_topic_question_gets_no_citations(manual_search):
    ans = manual_search.answer("What is the capital of France?")
    assert ans.answer == NO_ANSWER and not ans.citations


def test_hybrid_ranking_uses_both_signals(manual_search):
    # lexical: an exact rare term; semantic: a paraphrase with none of the manual's words
    top = manual_search.search("DISP-1", k=1)[0]
    assert top.chunk.section.startswith("10 Board disposition")
    top = manual_search.search("little nibbled notches along the edge of a track", k=3)
    assert any(h.chunk.defect_class == "mousebite" for h in top)


def test_save_and_load_roundtrip_keeps_embeddings(tmp_path, manual_search, embedder):
    manual_search.save(tmp_path / "idx")
    loaded = LocalManualSearch.load(tmp_path / "idx", embedder=embedder)
    assert np.allclose(loaded.embeddings, manual_search.embeddings)
    q = "How is the scrap rate computed?"
    assert [h.chunk.chunk_id for h in loaded.search(q)] == [h.chunk.chunk_id for h in manual_search.search(q)]


def test_split_aspects():
    assert split_aspects(SAMPLE_RAG_PROMPT) == ["What are the causes of 'mousebite' defects",
                                                "is it acceptable under Class 2 requirements"]
    assert split_aspects("How do I remove a spur?") == ["How do I remove a spur"]
