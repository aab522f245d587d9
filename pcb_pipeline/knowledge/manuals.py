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


HEADING_RE = re.compile(r"^##\s+(\d+(?:\.\d+)*)\s+(.+)$")
BULLET_RE = re.compile(r"^-\s+(.*)$")
STEP_RE = re.compile(r"^(\d+)\.\s+(.*)$")
FRONT_MATTER_KEYS = ("doc_id", "title", "revision", "effective", "owner", "defect_class")


def parse_manual(text: str, source_path: Path | None = None) -> ManualSource:
    where = f" in {source_path}" if source_path else ""
    lines = text.splitlines()
    meta, end = _front_matter(lines, where)
    doc_class = _check_class(meta["defect_class"], where)
    body = _BodyParser(doc_class, where)
    for raw in lines[end + 1 :]:
        body.feed(raw)
    return ManualSource(
        doc_id=meta["doc_id"],
        title=meta["title"],
        revision=meta["revision"],
        effective=meta["effective"],
        owner=meta["owner"],
        defect_class=doc_class,
        sections=body.finish(),
        source_path=source_path,
    )


def _front_matter(lines: list[str], where: str) -> tuple[dict[str, str], int]:
    """(the front matter's key/values, the index of its closing ``---``); every FRONT_MATTER_KEYS key is required."""
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
    for key in FRONT_MATTER_KEYS:
        if not meta.get(key):
            raise ManualFormatError(f"front matter lacks {key!r}{where}")
    return meta, end


class _BodyParser:
    """A manual's body, line by line: ``## `` sections, their ``@`` tags, paragraphs, ``- `` bullets and ``1. ``
    steps (an indented line continues the bullet or step above it)."""

    def __init__(self, doc_class: str, where: str):
        self.doc_class, self.where = doc_class, where
        self.sections: list[Section] = []
        self.current: Section | None = None
        self.para: list[str] = []
        self.item: Block | None = None

    def feed(self, raw: str) -> None:
        stripped = raw.strip()
        heading = HEADING_RE.match(stripped)
        if heading:
            self._flush()
            self.current = Section(heading.group(1), heading.group(2).strip(), "", self.doc_class)
            self.sections.append(self.current)
        elif stripped.startswith("@"):
            self._tag(stripped)
        elif not stripped:
            self._flush()
        elif self.current is None:
            raise ManualFormatError(f"text before the first section{self.where}: {stripped[:40]}")
        else:
            self._text(raw, stripped)

    def finish(self) -> list[Section]:
        """The sections, each checked to have a category and content."""
        self._flush()
        if not self.sections:
            raise ManualFormatError(f"no sections{self.where}")
        for s in self.sections:
            if not s.category:
                raise ManualFormatError(f"section {s.title!r} has no @category{self.where}")
            if not s.blocks:
                raise ManualFormatError(f"section {s.title!r} is empty{self.where}")
        return self.sections

    def _flush(self) -> None:
        if self.current is None:
            self.para, self.item = [], None
            return
        if self.para:
            self.current.blocks.append(Block("para", " ".join(self.para)))
            self.para = []
        if self.item is not None:
            self.current.blocks.append(self.item)
            self.item = None

    def _tag(self, stripped: str) -> None:
        if self.current is None:
            raise ManualFormatError(f"tag outside a section{self.where}: {stripped}")
        key, _, value = stripped[1:].partition(":")
        key, value = key.strip(), value.strip()
        if key == "category":
            if value not in CATEGORIES:
                raise ManualFormatError(f"unknown category {value!r}{self.where}; known: {CATEGORIES}")
            self.current.category = value
        elif key == "defect_class":
            self.current.defect_class = _check_class(value, self.where)
        else:
            raise ManualFormatError(f"unknown tag {key!r}{self.where}")

    def _text(self, raw: str, stripped: str) -> None:
        bullet, step = BULLET_RE.match(stripped), STEP_RE.match(stripped)
        if bullet:
            self._flush()
            self.item = Block("bullet", bullet.group(1))
        elif step:
            self._flush()
            self.item = Block("step", step.group(2), int(step.group(1)))
        elif self.item is not None and raw.startswith((" ", "\t")):
            self.item.text += " " + stripped
        else:
            if self.item is not None:
                self.current.blocks.append(self.item)
                self.item = None
            self.para.append(stripped)


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
    from reportlab.lib.units import mm
    from reportlab.platypus import KeepTogether, Paragraph, Spacer

    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    styles = _pdf_styles()
    story: list = [Paragraph(_inline(manual.title), styles["h1"]), _meta_table(manual), Spacer(1, 6 * mm)]
    for section in manual.sections:
        head = [Paragraph(_inline(section.title), styles["h2"]),
                Paragraph(html.escape(section.tag_line), styles["tag"])]
        flow = _block_flowables(section.blocks, styles["body"])
        # keep the heading, its tag line and the first block on one page
        story.append(KeepTogether(head + flow[:1]))
        story.extend(flow[1:])
    on_page = _page_decoration(f"{manual.doc_id} Rev {manual.revision} - {manual.title}")
    _pdf_document(manual, out_path).build(story, onFirstPage=on_page, onLaterPages=on_page)
    return out_path


def _pdf_styles() -> dict:
    """The paragraph styles of a manual: body, h1 (title), h2 (section heading), tag (the section's tag line)."""
    from reportlab.lib import colors
    from reportlab.lib.styles import ParagraphStyle, getSampleStyleSheet

    styles = getSampleStyleSheet()
    body = ParagraphStyle("body", parent=styles["BodyText"], fontName="Helvetica", fontSize=10, leading=13.5,
                          spaceAfter=5)
    return {
        "body": body,
        "h1": ParagraphStyle("h1", parent=styles["Title"], fontName="Helvetica-Bold", fontSize=17, leading=21,
                             alignment=0, spaceAfter=8),
        "h2": ParagraphStyle("h2", parent=styles["Heading2"], fontName="Helvetica-Bold", fontSize=12, leading=15,
                             spaceBefore=10, spaceAfter=2),
        "tag": ParagraphStyle("tag", parent=body, fontName="Helvetica-Oblique", fontSize=8, leading=10,
                              textColor=colors.HexColor("#555555"), spaceAfter=5),
    }


def _page_decoration(header_text: str):
    """The page callback: a header line with the document id and revision, a footer with the page number."""
    from reportlab.lib import colors
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.units import mm

    def on_page(canvas, doc) -> None:
        canvas.saveState()
        canvas.setFont("Helvetica", 8)
        canvas.setFillColor(colors.HexColor("#444444"))
        canvas.drawString(20 * mm, A4[1] - 12 * mm, header_text)
        canvas.line(20 * mm, A4[1] - 13.5 * mm, A4[0] - 20 * mm, A4[1] - 13.5 * mm)
        canvas.drawString(20 * mm, 10 * mm, "Controlled document - printed copies are uncontrolled")
        canvas.drawRightString(A4[0] - 20 * mm, 10 * mm, f"Page {doc.page}")
        canvas.restoreState()

    return on_page


def _pdf_document(manual: ManualSource, out_path: Path):
    """An A4 document template whose PDF metadata carries the manual's id, defect class and categories."""
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.units import mm
    from reportlab.platypus import SimpleDocTemplate

    return SimpleDocTemplate(
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


def _meta_table(manual: ManualSource):
    """The document / revision / effective date / owner table under the title."""
    from reportlab.lib import colors
    from reportlab.lib.units import mm
    from reportlab.platypus import Table

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
    return meta


def _block_flowables(blocks: list[Block], body) -> list:
    """A section's blocks as flowables: a paragraph each, and one list per run of bullets or of numbered steps."""
    from reportlab.platypus import ListFlowable, ListItem, Paragraph

    flow: list = []
    i = 0
    while i < len(blocks):
        if blocks[i].kind == "para":
            flow.append(Paragraph(_inline(blocks[i].text), body))
            i += 1
            continue
        kind = blocks[i].kind
        items = []
        while i < len(blocks) and blocks[i].kind == kind:
            items.append(ListItem(Paragraph(_inline(blocks[i].text), body), leftIndent=14))
            i += 1
        if kind == "bullet":
            flow.append(ListFlowable(items, bulletType="bullet", start="\u2022", leftIndent=14, bulletFontSize=9))
        else:
            flow.append(ListFlowable(items, bulletType="1", leftIndent=14, bulletFontSize=10))
    return flow


def build_manual_pdfs(out_dir: Path, source_dir: Path | None = None) -> list[Path]:
    """Render every manual in source_dir (default pcb_pipeline/resources/manuals) into out_dir; returns the PDF paths, sorted."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    return [render_manual_pdf(m, out_dir / m.pdf_name) for m in load_manual_sources(source_dir)]
