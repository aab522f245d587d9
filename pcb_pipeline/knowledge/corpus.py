"""PDF manuals -> text chunks with page numbers and a defect_category per chunk (the `sop_corpus` logic).

Text is read back from the PDFs with pypdf, page by page, so page numbers in citations are the printed pages.
Running headers and footers (lines that repeat on most pages, "Page N") are dropped. Sections are recognised by the
tag line `[Category: X | Defect class: Y]` that the manual builder prints under each heading; PDFs without tag lines
(a vendor manual dropped into the folder) still work: their category and defect class are inferred from keywords.
"""
from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from .manuals import CATEGORIES, DEFECT_CLASSES, GENERAL_CLASS, TAG_LINE_RE

BULLET_CHARS = ("\u2022", "\x7f", "\u25cf", "\u25aa", "-")  # reportlab's bullet comes back from pypdf as \x7f
TARGET_WORDS = 90
MAX_WORDS = 150


@dataclass
class Chunk:
    chunk_id: str
    document: str  # PDF file name, e.g. PCB-SOP-203_mousebite_repair.pdf
    doc_id: str  # e.g. PCB-SOP-203
    title: str
    page: int  # 1-based page on which the chunk starts
    section: str  # e.g. "4 Acceptability by product class"
    defect_category: str  # Etching, Soldering, Mechanical, Inspection, ...
    defect_class: str  # open, short, mousebite, spur, copper, pin-hole, or general
    text: str

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Chunk":
        names = {f.name for f in fields(cls)}
        kw = {k: d[k] for k in names}
        kw["page"] = int(kw["page"])
        return cls(**kw)

    def index_text(self) -> str:
        """What the search index sees: document title and section heading give each passage its context."""
        return f"{self.title}. {self.section}. {self.text}"


@dataclass
class PageLine:
    page: int
    text: str


def extract_pages(pdf_path: Path) -> list[str]:
    """Text of each page (index 0 = page 1)."""
    from pypdf import PdfReader

    reader = PdfReader(str(pdf_path))
    return [(p.extract_text() or "") for p in reader.pages]


def pdf_title(pdf_path: Path) -> str | None:
    from pypdf import PdfReader

    meta = PdfReader(str(pdf_path)).metadata
    return (meta.title if meta and meta.title else None)


def _strip_running_lines(pages: list[list[str]] | list[str], edge: int = 3) -> list[list[str]]:
    """Split pages into lines and drop running headers/footers: among the first and last `edge` lines of each page,
    those that repeat (digits ignored) on at least half of the pages, and bare page numbers ("Page 3", "3 of 9")."""
    split = [[ln.strip() for ln in p.splitlines() if ln.strip()] for p in pages]
    page_re = re.compile(r"^(page\s+)?\d+(\s+of\s+\d+)?$", re.I)

    def norm(s: str) -> str:
        return re.sub(r"\d+", "#", s)

    def edges(lines: list[str]) -> list[str]:
        return lines[:edge] + lines[-edge:]

    repeated: set[str] = set()
    if len(split) >= 2:
        counts = Counter(n for lines in split for n in {norm(ln) for ln in edges(lines)})
        repeated = {n for n, c in counts.items() if c >= max(2, (len(split) + 1) // 2)}
    out = []
    for lines in split:
        keep = []
        for i, ln in enumerate(lines):
            at_edge = i < edge or i >= len(lines) - edge
            if at_edge and not TAG_LINE_RE.match(ln) and (
                    re.match(r"^page\s+\d+", ln, re.I) or (norm(ln) in repeated and len(ln) > 2)):
                continue
            keep.append(ln)
        out.append(keep)
    del page_re
    return out


_CATEGORY_KEYWORDS = {
    "Soldering": ("solder", "flux", "iron", "jumper", "tin ", "wetting"),
    "Mechanical": ("scalpel", "scrape", "scraper", "cut ", "grinder", "burr", "blade"),
    "Etching": ("etch", "etchant", "undercut", "conveyor"),
    "Imaging": ("phototool", "exposure", "dry film", "developer", "resist"),
    "Plating": ("plating", "plated", "electroplat", "nodule", "bath"),
    "Inspection": ("acceptab", "inspect", "microscope", "measure", "class 1", "class 2", "class 3", "aoi"),
    "Handling": ("esd", "gloves", "handling", "stack"),
}
_CLASS_KEYWORDS = {
    "open": ("open", "broken conductor", "break in"),
    "short": ("short", "bridge"),
    "mousebite": ("mousebite", "mouse bite"),
    "spur": ("spur",),
    "copper": ("spurious copper", "residual copper", "copper island"),
    "pin-hole": ("pin-hole", "pinhole", "pin hole"),
}


def infer_category(text: str) -> str:
    """Keyword vote for PDFs that carry no tag lines."""
    low = text.lower()
    scores = {c: sum(low.count(k) for k in kws) for c, kws in _CATEGORY_KEYWORDS.items()}
    best = max(scores, key=lambda c: scores[c])
    return best if scores[best] > 0 else "General"


def infer_defect_class(text: str) -> str:
    low = text.lower()
    scores = {c: sum(low.count(k) for k in kws) for c, kws in _CLASS_KEYWORDS.items()}
    best = max(scores, key=lambda c: scores[c])
    return best if scores[best] > 0 else GENERAL_CLASS


@dataclass
class _Section:
    heading: str
    category: str | None
    defect_class: str | None
    lines: list[PageLine]


def _sections(pages: list[list[str]]) -> list[_Section]:
    """Cut the page lines into sections at each tag line; the line before a tag line is the heading."""
    flat = [PageLine(i + 1, ln) for i, lines in enumerate(pages) for ln in lines]
    tag_idx = [i for i, pl in enumerate(flat) if TAG_LINE_RE.match(pl.text)]
    if not tag_idx:
        return [_Section("", None, None, flat)] if flat else []
    sections = []
    for n, ti in enumerate(tag_idx):
        m = TAG_LINE_RE.match(flat[ti].text)
        heading = flat[ti - 1].text if ti > 0 else ""
        end = tag_idx[n + 1] - 1 if n + 1 < len(tag_idx) else len(flat)  # stop before the next heading
        sections.append(_Section(heading, m.group("category").strip(), m.group("cls").strip(), flat[ti + 1 : end]))
    return sections


@dataclass
class _Unit:
    text: str
    marks: list[tuple[int, int]]  # (character offset in text, page) where each joined line starts

    def page_at(self, offset: int) -> int:
        page = self.marks[0][1]
        for off, pg in self.marks:
            if off <= offset:
                page = pg
        return page


def _units(lines: list[PageLine]) -> list[_Unit]:
    """Re-join wrapped lines into units: a run of paragraph text, a bullet item or a numbered step. Every unit
    remembers on which page each of its lines started, so a sentence that starts on page 2 is cited as page 2.

    pypdf gives one line per printed line; a bullet glyph or a lone step number sits on its own line.
    """
    units: list[_Unit] = []
    cur: _Unit | None = None
    pending_marker: str | None = None
    for pl in lines:
        t = pl.text
        if t in BULLET_CHARS:
            pending_marker = "- "
            continue
        if re.fullmatch(r"\d{1,2}", t):
            pending_marker = f"{t}. "
            continue
        if pending_marker is not None:
            if cur is not None:
                units.append(cur)
            cur = _Unit(pending_marker + t, [(0, pl.page)])
            pending_marker = None
            continue
        if cur is None:
            cur = _Unit(t, [(0, pl.page)])
            continue
        joined = _join(cur.text, t)
        cur.marks.append((len(joined) - len(t), pl.page))
        cur.text = joined
    if cur is not None:
        units.append(cur)
    return units


def _join(a: str, b: str) -> str:
    # a line that ends with a hyphen inside a word ("over-" + "etches") keeps the hyphen: the manuals use real
    # hyphenated words (pin-hole, over-etching) and reportlab does not hyphenate
    if a.endswith("-"):
        return a + b
    return a + " " + b


_SENT_SPLIT = re.compile(r"(?<=[.;:!?])\s+(?=[A-Z0-9(])")


def split_sentences(text: str) -> list[str]:
    out = []
    for line in text.split("\n"):
        line = line.strip()
        if not line:
            continue
        m = re.match(r"^(- |\d{1,2}\. )(.*)$", line)
        prefix, body = (m.group(1), m.group(2)) if m else ("", line)
        parts = [p.strip() for p in _SENT_SPLIT.split(body) if p.strip()]
        if parts:
            parts[0] = prefix + parts[0]
        out.extend(parts)
    return out


def _sentence_units(units: list[_Unit]) -> list[PageLine]:
    """Split paragraph units into sentences (each with the page it starts on); keep bullet items and steps whole."""
    out: list[PageLine] = []
    for u in units:
        if _is_item(u.text):
            out.append(PageLine(u.page_at(0), u.text))
            continue
        start = 0
        for m in list(_SENT_SPLIT.finditer(u.text)) + [None]:
            end = m.start() if m else len(u.text)
            sent = u.text[start:end].strip()
            if sent:
                out.append(PageLine(u.page_at(start), sent))
            if m:
                start = m.end()
    return out


def _pack(units: list[PageLine]) -> list[tuple[int, str]]:
    """Greedy packing of sentence units into chunks of about TARGET_WORDS (never more than MAX_WORDS unless a
    single unit is longer). A list item joins the chunk of the sentence that introduces it when it fits."""
    chunks: list[tuple[int, list[str]]] = []
    words = 0
    for u in units:
        n = len(u.text.split())
        if chunks and (words + n <= TARGET_WORDS or (words + n <= MAX_WORDS and words < TARGET_WORDS // 2)):
            chunks[-1][1].append(u.text)
            words += n
        else:
            chunks.append((u.page, [u.text]))
            words = n
    out = []
    for page, parts in chunks:
        text = parts[0]
        for prev, p in zip(parts, parts[1:]):
            text += ("\n" if _is_item(p) or _is_item(prev) else " ") + p
        out.append((page, text.strip()))
    return out


def _is_item(text: str) -> bool:
    return text.startswith("- ") or re.match(r"^\d{1,2}\. ", text) is not None


def chunk_pdf(pdf_path: Path) -> list[Chunk]:
    pdf_path = Path(pdf_path)
    pages = _strip_running_lines(extract_pages(pdf_path))
    title_meta = pdf_title(pdf_path) or pdf_path.stem
    m = re.match(r"^([A-Z]{2,}-[A-Z]{2,}-\d+)\s+(.*)$", title_meta)
    doc_id, title = (m.group(1), m.group(2)) if m else (pdf_path.stem.split("_")[0], title_meta)
    chunks: list[Chunk] = []
    for section in _sections(pages):
        units = _sentence_units(_units(section.lines))
        for page, text in _pack(units):
            category = section.category if section.category in CATEGORIES else infer_category(text)
            cls = section.defect_class
            if cls not in DEFECT_CLASSES and cls != GENERAL_CLASS:
                cls = infer_defect_class(f"{title} {text}")
            chunks.append(Chunk(
                chunk_id=f"{doc_id}-p{page}-{len(chunks) + 1:03d}",
                document=pdf_path.name,
                doc_id=doc_id,
                title=title,
                page=page,
                section=section.heading,
                defect_category=category,
                defect_class=cls,
                text=text,
            ))
    return chunks


def build_corpus(pdf_paths: list[Path]) -> list[Chunk]:
    """Chunks of every PDF, in the order given. Serialise with save_chunks / chunks_to_frame."""
    out: list[Chunk] = []
    for p in pdf_paths:
        out.extend(chunk_pdf(Path(p)))
    ids = [c.chunk_id for c in out]
    dupes = [i for i, n in Counter(ids).items() if n > 1]
    if dupes:
        raise ValueError(f"duplicate chunk ids (two PDFs with the same document id?): {dupes[:5]}")
    return out


def chunks_to_frame(chunks: list[Chunk]):
    """A DataFrame with the columns of the SOP_CHUNKS table (sql/cortex_search.sql); `chunk` holds the text."""
    import pandas as pd

    rows = [{**c.to_dict(), "chunk": c.text} for c in chunks]
    df = pd.DataFrame(rows, columns=[f.name for f in fields(Chunk)] + ["chunk"])
    return df.drop(columns=["text"])[
        ["chunk_id", "document", "doc_id", "title", "page", "section", "defect_category", "defect_class", "chunk"]]


def save_chunks(chunks: list[Chunk], path: Path) -> Path:
    """jsonl (default) or parquet, by suffix."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".parquet":
        chunks_to_frame(chunks).to_parquet(path, index=False)
    else:
        tmp = path.with_name(path.name + ".part")
        with open(tmp, "w", encoding="utf-8") as f:
            for c in chunks:
                f.write(json.dumps(c.to_dict(), ensure_ascii=False) + "\n")
        tmp.replace(path)
    return path


def load_chunks(path: Path) -> list[Chunk]:
    path = Path(path)
    if path.suffix == ".parquet":
        import pandas as pd

        df = pd.read_parquet(path)
        return [Chunk.from_dict({**r, "text": r["chunk"]}) for r in df.to_dict("records")]
    with open(path, encoding="utf-8") as f:
        return [Chunk.from_dict(json.loads(line)) for line in f if line.strip()]
