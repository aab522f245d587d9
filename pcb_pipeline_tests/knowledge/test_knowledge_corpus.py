"""PDF -> chunks: real page numbers, defect_category per chunk, running headers dropped, serialisation."""
from __future__ import annotations

from collections import Counter

from pypdf import PdfReader

from pcb_pipeline.knowledge.corpus import (Chunk, build_corpus, chunk_pdf, chunks_to_frame, load_chunks,
                                           save_chunks)
from pcb_pipeline.knowledge.manuals import CATEGORIES


def test_every_chunk_has_document_page_category_and_class(corpus, manual_pdfs):
    assert len(corpus) > 60
    assert {c.document for c in corpus} == {p.name for p in manual_pdfs}
    assert all(c.defect_category in CATEGORIES for c in corpus)
    assert len({c.chunk_id for c in corpus}) == len(corpus)
    assert Counter(c.defect_category for c in corpus)["Etching"] >= 5
    assert max(len(c.text.split()) for c in corpus) <= 160


def test_page_numbers_are_the_pdf_pages(corpus, manual_pdfs):
    pages = {p.name: [pg.extract_text().replace("\n", " ") for pg in PdfReader(p).pages] for p in manual_pdfs}
    for c in corpus:
        first_words = " ".join(c.text.lstrip("-0123456789. ").split()[:6])
        assert first_words in pages[c.document][c.page - 1], (c.chunk_id, first_words)
    spread = {c.page for c in corpus if c.doc_id == "PCB-QA-100"}
    assert spread == {1, 2, 3, 4}


def test_categories_follow_the_section_tags(corpus):
    causes = [c for c in corpus if c.doc_id == "PCB-SOP-203" and c.section.startswith("3 Typical causes")]
    assert causes and all(c.defect_category == "Etching" and c.defect_class == "mousebite" for c in causes)
    accept = [c for c in corpus if c.doc_id == "PCB-SOP-203" and c.section.startswith("4 Acceptability")]
    assert accept and {c.page for c in accept} == {1, 2}, "the acceptability section spans two pages"
    assert any("Class 2: acceptable when the width reduction is no more than 20 percent" in c.text for c in accept)
    repair = [c for c in corpus if c.doc_id == "PCB-SOP-204" and c.section.startswith("6 Removal")]
    assert repair and all(c.defect_category == "Mechanical" for c in repair)


def test_running_headers_and_footers_are_dropped(corpus):
    for c in corpus:
        assert "Controlled document" not in c.text
        assert "Rev B - " not in c.text and "Rev C - " not in c.text
        assert "[Category:" not in c.text


def test_list_items_and_steps_survive_extraction(corpus):
    steps = [c for c in corpus if c.doc_id == "PCB-SOP-202" and c.section.startswith("6 Removal")]
    text = "\n".join(c.text for c in steps)
    for n in range(1, 7):
        assert f"\n{n}. " in "\n" + text, n


def test_untagged_pdf_gets_inferred_category(tmp_path):
    from reportlab.lib.pagesizes import A4
    from reportlab.pdfgen import canvas

    pdf = tmp_path / "vendor_note.pdf"
    c = canvas.Canvas(str(pdf), pagesize=A4)
    c.drawString(72, 750, "Solder the jumper wire with flux and a fine iron tip; solder both ends.")
    c.showPage()
    c.drawString(72, 750, "Cut the spur away with a scalpel blade and scrape the residue.")
    c.save()
    chunks = chunk_pdf(pdf)
    assert chunks and chunks[0].defect_category in ("Soldering", "Mechanical")
    assert {ch.page for ch in chunks} == {1}  # one untagged section, starting on page 1


def test_jsonl_and_parquet_roundtrip(tmp_path, corpus):
    for name in ("chunks.jsonl", "chunks.parquet"):
        path = save_chunks(corpus, tmp_path / name)
        back = load_chunks(path)
        assert back == corpus
    df = chunks_to_frame(corpus)
    assert list(df.columns) == ["chunk_id", "document", "doc_id", "title", "page", "section", "defect_category",
                                "defect_class", "chunk"]
    assert Chunk.from_dict(corpus[0].to_dict()) == corpus[0]


def test_build_corpus_refuses_duplicate_documents(manual_pdfs):
    import pytest

    with pytest.raises(ValueError, match="duplicate chunk ids"):
        build_corpus([manual_pdfs[0], manual_pdfs[0]])
