"""The project's SOP manuals: source text in pcb_pipeline/resources/manuals/*.md, rendered into real multi-page PDFs with reportlab.

Source format (see pcb_pipeline/resources/manuals/README.md): a front-matter block (doc_id, title, revision, effective, owner,
defect_class), then sections `## <number> <heading>` each followed by `@category: <Category>` and optionally
`@defect_class: <class>`, then paragraphs, `- ` bullets and `1. ` numbered steps.

In the PDF every section heading is followed by a tag line `[Category: X | Defect class: Y]`; the corpus builder
(pcb_pipeline.knowledge.corpus) reads the category back from that line, so the PDFs are self-describing.
"""
from __future__ import annotations

import html
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

CATEGORIES: tuple[str, ...] = (
    "General",
    "Inspection",
    "Etching",
    "Imaging",
    "Plating",
    "Soldering",
    "Mechanical",
    "Handling",
)
DEFECT_CLASSES: tuple[str, ...] = ("open", "short", "mousebite", "spur", "copper", "pin-hole")
GENERAL_CLASS = "general"

TAG_LINE_RE = re.compile(r"^\[Category:\s*(?P<category>[^|\]]+?)\s*\|\s*Defect class:\s*(?P<cls>[^\]]+?)\s*\]$")


class ManualFormatError(ValueError):
    pass


@dataclass
class Block:
    kind: str  # "para" | "bullet" | "step"
    text: str
    number: int | None = None


@dataclass
class Section:
    number: str
    heading: str
    category: str
    defect_class: str
    blocks: list[Block] = field(default_factory=list)

    @property
    def title(self) -> str:
        return f"{self.number} {self.heading}"

    @property
    def tag_line(self) -> str:
        return f"[Category: {self.category} | Defect class: {self.defect_class}]"


@dataclass
class ManualSource:
    doc_id: str
    title: str
    revision: str
    effective: str
    owner: str
    defect_class: str
    sections: list[Section]
    source_path: Path | None = None

    @property
    def pdf_name(self) -> str:
        stem = self.source_path.stem if self.source_path is not None else self.doc_id
        return f"{stem}.pdf"

    @property
    def categories(self) -> list[str]:
        return sorted({s.category for s in self.sections})


def default_source_dir() -> Path:
    """The packaged manual sources, pcb_pipeline/resources/manuals (override with PCB_MANUALS_DIR)."""
    env = os.environ.get("PCB_MANUALS_DIR")
    if env:
        return Path(env).expanduser().resolve()
    from pcb_pipeline.resources import manuals_dir

    return manuals_dir()


def parse_manual(text: str, source_path: Path | None = None) -> ManualSource:
    where = f" in {source_path}" if source_path else ""
    lines = text.splitlines()
    if not lines or lines[0].strip() != "---":
        raise ManualFormatError(f"missing front matter{where}")
    try:
        end = next(i for i in range(1, len(lines)) if lines[i].strip() == "---")
    except StopIteration:
        raise ManualFormatError(f"unterminated front matter{where}") from None
    meta: dict[str, str] = {}
    for ln in lines[1:end]:
        ln = ln.split("#", 1)[0].rstrip()
        if not ln.strip():
            continue
        key, _, value = ln.partition(":")
        meta[key.strip()] = value.strip()
    for key in ("doc_id", "title", "revision", "effective", "owner", "defect_class"):
        if not meta.get(key):
            raise ManualFormatError(f"front matter lacks {key!r}{where}")
    doc_class = _check_class(meta["defect_class"], where)

    sections: list[Section] = []
    current: Section | None = None
    para: list[str] = []
    item: Block | None = None

    def flush() -> None:
        nonlocal para, item
        if current is None:
            para, item = [], None
            return
        if para:
            current.blocks.append(Block("para", " ".join(para)))
            para = []
        if item is not None:
            current.blocks.append(item)
            item = None

    for raw in lines[end + 1 :]:
        line = raw.rstrip()
        stripped = line.strip()
        m = re.match(r"^##\s+(\d+(?:\.\d+)*)\s+(.+)$", stripped)
        if m:
            flush()
            current = Section(m.group(1), m.group(2).strip(), "", doc_class)
            sections.append(current)
            continue
        if stripped.startswith("@"):
            if current is None:
                raise ManualFormatError(f"tag outside a section{where}: {stripped}")
            key, _, value = stripped[1:].partition(":")
            key, value = key.strip(), value.strip()
            if key == "category":
                if value not in CATEGORIES:
                    raise ManualFormatError(f"unknown category {value!r}{where}; known: {CATEGORIES}")
                current.category = value
            elif key == "defect_class":
                current.defect_class = _check_class(value, where)
            else:
                raise ManualFormatError(f"unknown tag {key!r}{where}")
            continue
        if not stripped:
            flush()
            continue
        if current is None:
            raise ManualFormatError(f"text before the first section{where}: {stripped[:40]}")
        mb = re.match(r"^-\s+(.*)$", stripped)
        mn = re.match(r"^(\d+)\.\s+(.*)$", stripped)
        if mb:
            flush()
            item = Block("bullet", mb.group(1))
        elif mn:
            flush()
            item = Block("step", mn.group(2), int(mn.group(1)))
        elif item is not None and raw.startswith((" ", "\t")):
            item.text += " " + stripped
        else:
            if item is not None:
                current.blocks.append(item)
                item = None
            para.append(stripped)
    flush()
    if not sections:
        raise ManualFormatError(f"no sections{where}")
    for s in sections:
        if not s.category:
            raise ManualFormatError(f"section {s.title!r} has no @category{where}")
        if not s.blocks:
            raise ManualFormatError(f"section {s.title!r} is empty{where}")
    return ManualSource(
        doc_id=meta["doc_id"],
        title=meta["title"],
        revision=meta["revision"],
        effective=meta["effective"],
        owner=meta["owner"],
        defect_class=doc_class,
        sections=sections,
        source_path=source_path,
    )


def _check_class(value: str, where: str) -> str:
    if value not in DEFECT_CLASSES and value != GENERAL_CLASS:
        raise ManualFormatError(f"unknown defect class {value!r}{where}; known: {DEFECT_CLASSES + (GENERAL_CLASS,)}")
    return value


def load_manual_sources(source_dir: Path | None = None) -> list[ManualSource]:
    """Every manual source (a *.md file that starts with front matter) in source_dir, sorted by file name."""
    source_dir = Path(source_dir) if source_dir is not None else default_source_dir()
    manuals = []
    for path in sorted(source_dir.glob("*.md")):
        text = path.read_text(encoding="utf-8")
        if not text.startswith("---"):
            continue  # README and other notes
        manuals.append(parse_manual(text, path))
    if not manuals:
        raise FileNotFoundError(f"no manual sources (*.md with front matter) in {source_dir}")
    return manuals


def _inline(text: str) -> str:
    """Escape for reportlab's mini-markup, then turn **bold** into <b>."""
    out = html.escape(text, quote=False)
    return re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", out)


def render_manual_pdf(manual: ManualSource, out_path: Path) -> Path:
    """Render one manual into a PDF (A4, header with document id and revision, numbered pages)."""
    from reportlab.lib import colors
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.styles import ParagraphStyle, getSampleStyleSheet
    from reportlab.lib.units import mm
    from reportlab.platypus import KeepTogether, ListFlowable, ListItem, Paragraph, SimpleDocTemplate, Spacer, Table

    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    styles = getSampleStyleSheet()
    body = ParagraphStyle("body", parent=styles["BodyText"], fontName="Helvetica", fontSize=10, leading=13.5,
                          spaceAfter=5)
    h1 = ParagraphStyle("h1", parent=styles["Title"], fontName="Helvetica-Bold", fontSize=17, leading=21,
                        alignment=0, spaceAfter=8)
    h2 = ParagraphStyle("h2", parent=styles["Heading2"], fontName="Helvetica-Bold", fontSize=12, leading=15,
                        spaceBefore=10, spaceAfter=2)
    tag = ParagraphStyle("tag", parent=body, fontName="Helvetica-Oblique", fontSize=8, leading=10,
                         textColor=colors.HexColor("#555555"), spaceAfter=5)
    header_text = f"{manual.doc_id} Rev {manual.revision} - {manual.title}"

    def on_page(canvas, doc) -> None:
        canvas.saveState()
        canvas.setFont("Helvetica", 8)
        canvas.setFillColor(colors.HexColor("#444444"))
        canvas.drawString(20 * mm, A4[1] - 12 * mm, header_text)
        canvas.line(20 * mm, A4[1] - 13.5 * mm, A4[0] - 20 * mm, A4[1] - 13.5 * mm)
        canvas.drawString(20 * mm, 10 * mm, "Controlled document - printed copies are uncontrolled")
        canvas.drawRightString(A4[0] - 20 * mm, 10 * mm, f"Page {doc.page}")
        canvas.restoreState()

    doc = SimpleDocTemplate(
        str(out_path),
        pagesize=A4,
        leftMargin=20 * mm,
        rightMargin=20 * mm,
        topMargin=20 * mm,
        bottomMargin=18 * mm,
        title=f"{manual.doc_id} {manual.title}",
        author=manual.owner,
        subject=f"defect_class={manual.defect_class}; categories={','.join(manual.categories)}",
        keywords=", ".join([manual.doc_id, manual.defect_class, *manual.categories]),
        creator="pcb_pipeline.knowledge.manuals",
        invariant=1,  # byte-for-byte reproducible PDFs
    )
    story: list = [Paragraph(_inline(manual.title), h1)]
    meta = Table(
        [["Document", manual.doc_id, "Revision", manual.revision],
         ["Effective", manual.effective, "Owner", manual.owner]],
        colWidths=[25 * mm, 55 * mm, 25 * mm, 55 * mm],
    )
    meta.setStyle([
        ("FONT", (0, 0), (-1, -1), "Helvetica", 9),
        ("FONT", (0, 0), (0, -1), "Helvetica-Bold", 9),
        ("FONT", (2, 0), (2, -1), "Helvetica-Bold", 9),
        ("GRID", (0, 0), (-1, -1), 0.4, colors.HexColor("#999999")),
    ])
    story += [meta, Spacer(1, 6 * mm)]
    for section in manual.sections:
        head = [Paragraph(_inline(section.title), h2), Paragraph(html.escape(section.tag_line), tag)]
        flow: list = []
        i = 0
        blocks = section.blocks
        while i < len(blocks):
            b = blocks[i]
            if b.kind == "para":
                flow.append(Paragraph(_inline(b.text), body))
                i += 1
                continue
            kind = b.kind
            items = []
            while i < len(blocks) and blocks[i].kind == kind:
                items.append(ListItem(Paragraph(_inline(blocks[i].text), body), leftIndent=14))
                i += 1
            if kind == "bullet":
                flow.append(ListFlowable(items, bulletType="bullet", start="\u2022", leftIndent=14, bulletFontSize=9))
            else:
                flow.append(ListFlowable(items, bulletType="1", leftIndent=14, bulletFontSize=10))
        # keep the heading, its tag line and the first block on one page
        story.append(KeepTogether(head + flow[:1]))
        story.extend(flow[1:])
    doc.build(story, onFirstPage=on_page, onLaterPages=on_page)
    return out_path


def build_manual_pdfs(out_dir: Path, source_dir: Path | None = None) -> list[Path]:
    """Render every manual in source_dir (default pcb_pipeline/resources/manuals) into out_dir; returns the PDF paths, sorted."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    return [render_manual_pdf(m, out_dir / m.pdf_name) for m in load_manual_sources(source_dir)]
