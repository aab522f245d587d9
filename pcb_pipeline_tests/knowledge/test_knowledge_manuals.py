"""The SOP corpus: original source text for all six classes, rendered into real multi-page PDFs."""
from __future__ import annotations

import re

import pytest
from pypdf import PdfReader

from pcb_pipeline.core.classes import CLASS_NAMES
from pcb_pipeline.knowledge.manuals import (CATEGORIES, ManualFormatError, build_manual_pdfs, default_source_dir,
                                            load_manual_sources, parse_manual)


def test_sources_cover_every_defect_class_with_causes_acceptability_rework_tools_verification():
    manuals = load_manual_sources()
    by_class = {m.defect_class: m for m in manuals}
    assert set(CLASS_NAMES) <= set(by_class), "one repair SOP per defect class"
    assert "general" in by_class
    for cls in CLASS_NAMES:
        headings = " | ".join(s.heading.lower() for s in by_class[cls].sections)
        for needed in ("causes", "acceptability", "tools", "verification"):
            assert needed in headings, f"{cls}: no {needed} section in {headings}"
        assert re.search(r"procedure|removal", headings), f"{cls}: no rework procedure"
        text = " ".join(b.text for s in by_class[cls].sections for b in s.blocks)
        for pc in ("Class 1", "Class 2", "Class 3"):
            assert pc in text, f"{cls}: acceptability for {pc} missing"
    taxonomy = next(m for m in manuals if m.doc_id == "PCB-QA-100")
    assert {s.defect_class for s in taxonomy.sections} >= set(CLASS_NAMES)


def test_categories_are_tagged_and_varied():
    cats = {s.category for m in load_manual_sources() for s in m.sections}
    assert cats <= set(CATEGORIES)
    assert {"Etching", "Soldering", "Mechanical", "Inspection", "Plating"} <= cats


def test_ipc_is_referred_to_in_general_terms_only():
    text = " ".join(p.read_text() for p in default_source_dir().glob("*.md"))
    assert "IPC-A-610" in text
    assert not re.search(r"IPC-A-610\w?\s*(section|clause|table|figure|paragraph)\s*\d", text, re.I)
    assert not re.search(r"\bIPC-(?!A-610)[A-Z0-9-]+", text), "no other IPC documents are cited"
    assert "house limits" in text


def test_pdfs_are_real_multipage_and_reproducible(tmp_path, manual_pdfs):
    assert len(manual_pdfs) == len(load_manual_sources()) >= 8
    for pdf in manual_pdfs:
        reader = PdfReader(pdf)
        assert len(reader.pages) >= 2, pdf.name
        assert reader.metadata.title.startswith(pdf.name.split("_")[0])
        assert "[Category:" in reader.pages[0].extract_text()
    again = build_manual_pdfs(tmp_path)
    assert [p.read_bytes() for p in again] == [p.read_bytes() for p in manual_pdfs], "builds are byte-identical"


@pytest.mark.parametrize("text, err", [
    ("no front matter", "missing front matter"),
    ("---\ndoc_id: X\n---\n## 1 A\n@category: Etching\ntext\n", "lacks"),
    ("---\ndoc_id: X\ntitle: T\nrevision: A\neffective: 2026\nowner: O\ndefect_class: open\n---\n"
     "## 1 A\n@category: Cooking\ntext\n", "unknown category"),
    ("---\ndoc_id: X\ntitle: T\nrevision: A\neffective: 2026\nowner: O\ndefect_class: dent\n---\n", "unknown defect"),
    ("---\ndoc_id: X\ntitle: T\nrevision: A\neffective: 2026\nowner: O\ndefect_class: open\n---\n"
     "## 1 A\ntext\n", "no @category"),
])
def test_malformed_sources_are_rejected(text, err):
    with pytest.raises(ManualFormatError, match=err):
        parse_manual(text)
