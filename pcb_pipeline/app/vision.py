"""Vision Lab logic, without Streamlit: decode an upload, detect, draw boxes and ground truth, write the upload to the
stage, list the boards on the stage and their labels.

`inspect_bytes` is the whole "upload -> boxes rendered" path the page runs (decode, inference, drawing); the benchmark
(bench/app_latency.py) times exactly this function.
"""
from __future__ import annotations

import hashlib
import re
import tempfile
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np

from pcb_pipeline.core.deeppcb import Box, DeepPCBFormatError, listed_template, read_labels
from pcb_pipeline.core.images import MAX_PIXELS, BadImageError, decode_image
from pcb_pipeline.core.stage_layout import MAX_UPLOAD_BYTES, RAW_DATA_PREFIX, UPLOAD_PREFIX
from pcb_pipeline.vision.detector import Detection, draw_detections

DEEPPCB_SIZE = (640, 640)
CONF_FLOOR = 0.001  # inference runs once at this confidence; the slider only filters (no re-inference)
GT_COLOUR = (60, 200, 60)  # BGR green, drawn thin with a "GT" tag
DISPLAY_MAX_SIDE = 1600  # larger images are shown downscaled (the detections keep full-resolution coordinates)

# group20085/20085/20085000_test.jpg
_BOARD_RE = re.compile(r"^(?P<group>group[^/]+)/(?P<g>[^/]+)/(?P<id>[^/]+)_test\.(?:jpe?g|png|bmp)$", re.IGNORECASE)


# --------------------------------------------------------------------------------------------------- decoding
def load_image(data: bytes | None, name: str = "upload") -> np.ndarray:
    """Bytes -> BGR array with one clear BadImageError for every kind of bad input (empty, too big, not an image,
    corrupt, truncated, too many pixels, too small). Grayscale and RGBA come back as 3-channel BGR."""
    label = display_name(name)
    if data is None or len(data) == 0:
        raise BadImageError(f"{label}: the file is empty")
    if len(data) > MAX_UPLOAD_BYTES:
        raise BadImageError(f"{label}: {len(data) / 1e6:.1f} MB is too large to upload "
                            f"(limit {MAX_UPLOAD_BYTES / 1e6:.0f} MB)")
    try:
        return decode_image(bytes(data), label)
    except BadImageError as e:
        if "decompression bomb" in str(e):  # Pillow refuses > 2x its own pixel limit before decode_image can
            raise BadImageError(f"{label}: the image is too large (limit {MAX_PIXELS:,} pixels)") from None
        raise
    except ImportError:
        # Once ultralytics is imported it patches PIL.Image.open to try a HEIF plugin (pi-heif, not installed) on
        # any unidentified file, so "not an image" surfaces as ModuleNotFoundError instead of BadImageError.
        raise BadImageError(f"{label}: not an image (no known image format)") from None


def size_note(image: np.ndarray) -> str | None:
    """A note for images that are not the 640x640 Deep PCB format (they are still inspected)."""
    h, w = image.shape[:2]
    if (w, h) == DEEPPCB_SIZE:
        return None
    return (f"This image is {w}x{h}; the model was trained on {DEEPPCB_SIZE[0]}x{DEEPPCB_SIZE[1]} Deep PCB boards, "
            "so it is resized for inference and results may be less reliable.")


# ------------------------------------------------------------------------------------------------- inference
@dataclass
class Inspection:
    name: str
    sha256: str
    image: np.ndarray  # BGR
    detections: list[Detection]  # everything at or above the confidence floor, best first
    ground_truth: list[Box] | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def width(self) -> int:
        return int(self.image.shape[1])

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    def above(self, conf: float) -> list[Detection]:
        return filter_detections(self.detections, conf)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def filter_detections(detections: list[Detection], conf: float) -> list[Detection]:
    return [d for d in detections if d.confidence >= conf]


def detect(detector, image: np.ndarray, conf_floor: float = CONF_FLOOR,
           template: np.ndarray | None = None) -> list[Detection]:
    """Detections, surest first. A reference-aware champion also needs the board's template (else TemplateError)."""
    kwargs = {"templates": [template]} if getattr(detector, "needs_template", False) else {}
    dets = detector.predict([image], conf=conf_floor, **kwargs)[0]
    return sorted(dets, key=lambda d: -d.confidence)


def inspect_image(detector, image: np.ndarray, name: str, digest: str, ground_truth: list[Box] | None = None,
                  conf_floor: float = CONF_FLOOR, template: np.ndarray | None = None) -> Inspection:
    notes = [n for n in [size_note(image)] if n]
    return Inspection(name, digest, image, detect(detector, image, conf_floor, template), ground_truth, notes)


def render(inspection: Inspection, conf: float, show_ground_truth: bool = True) -> np.ndarray:
    """The image with predicted boxes (class, confidence) at or above `conf`, and ground truth when known."""
    out = inspection.image
    if show_ground_truth and inspection.ground_truth:
        out = draw_ground_truth(out, inspection.ground_truth)
    return draw_detections(out, inspection.above(conf))


def inspect_bytes(data: bytes, name: str, detector, conf: float = 0.25, ground_truth: list[Box] | None = None,
                  template: bytes | None = None) -> tuple[np.ndarray, list[Detection], Inspection]:
    """Upload -> boxes rendered: decode (the template too, for a reference-aware detector), detect, draw. Returns
    (annotated BGR image, detections >= conf, inspection). Raises BadImageError with a clear message for bad input."""
    image = load_image(data, name)
    reference = load_image(template, f"template of {name}") if template is not None else None
    insp = inspect_image(detector, image, name, sha256(data), ground_truth, template=reference)
    return render(insp, conf), insp.above(conf), insp


def draw_ground_truth(image: np.ndarray, boxes: list[Box], thickness: int = 1) -> np.ndarray:
    import cv2

    from pcb_pipeline.core.classes import CLASS_NAMES

    out = image.copy()
    for b in boxes:
        p1, p2 = (int(b.x1), int(b.y1)), (int(b.x2), int(b.y2))
        cv2.rectangle(out, (p1[0] - 2, p1[1] - 2), (p2[0] + 2, p2[1] + 2), GT_COLOUR, thickness)
        cv2.putText(out, f"GT {CLASS_NAMES[b.class_id]}", (p1[0], min(out.shape[0] - 3, p2[1] + 13)),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.4, GT_COLOUR, 1, cv2.LINE_AA)
    return out


def for_display(image: np.ndarray, max_side: int = DISPLAY_MAX_SIDE) -> np.ndarray:
    h, w = image.shape[:2]
    if max(h, w) <= max_side:
        return image
    import cv2

    scale = max_side / max(h, w)
    return cv2.resize(image, (max(1, int(w * scale)), max(1, int(h * scale))), interpolation=cv2.INTER_AREA)


def detections_table(detections: list[Detection]):
    import pandas as pd

    rows = [{"#": i + 1, "class": d.class_name, "confidence": round(d.confidence, 3),
             "x1": int(d.x1), "y1": int(d.y1), "x2": int(d.x2), "y2": int(d.y2)} for i, d in enumerate(detections)]
    return pd.DataFrame(rows, columns=["#", "class", "confidence", "x1", "y1", "x2", "y2"])


def summary(detections: list[Detection], conf: float) -> str:
    if not detections:
        return f"No defects at confidence {conf:.2f} or above."
    counts: dict[str, int] = {}
    for d in detections:
        counts[d.class_name] = counts.get(d.class_name, 0) + 1
    parts = ", ".join(f"{n} {c}" for c, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
    return f"{len(detections)} defect(s) at confidence {conf:.2f} or above: {parts}"


# ---------------------------------------------------------------------------------------------------- uploads
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")
STAGE_FORMATS = {"JPEG": ".jpg", "PNG": ".png"}  # what the inference sensor and batch inference read as-is


def display_name(name: str | None) -> str:
    """A file name fit to show in a message: base name only, printable, at most 80 characters."""
    base = PurePosixPath(str(name or "upload").replace("\\", "/")).name or "upload"
    base = "".join(ch for ch in base if ch.isprintable())
    return (base[:77] + "...") if len(base) > 80 else (base or "upload")


def safe_upload_name(name: str | None, data: bytes, suffix: str = ".jpg") -> str:
    """`<sha256[:12]>_<sanitised stem><suffix>`: no folders, no traversal, only [A-Za-z0-9._-], at most ~100
    characters. The content-hash prefix makes names unique per content and a re-upload idempotent."""
    base = PurePosixPath(str(name or "").replace("\\", "/")).name
    base = unicodedata.normalize("NFKD", base).encode("ascii", "ignore").decode()
    stem = base[:base.rfind(".")] if "." in base else base
    stem = _SAFE.sub("_", stem).strip("._-")[:80] or "upload"
    return f"{sha256(data)[:12]}_{stem}{suffix}"


def new_upload_path(name: str | None, data: bytes, suffix: str = ".jpg") -> str:
    return f"{UPLOAD_PREFIX}/{safe_upload_name(name, data, suffix)}"


def stored_format(data: bytes) -> tuple[str, bytes]:
    """(suffix, bytes to store). JPEG and PNG are stored as uploaded; any other decodable format (BMP, TIFF, WebP,
    ...) is stored as the 8-bit PNG the one decoder (``core.images``) reads from it (bit depth scaled, EXIF
    orientation applied), so downstream readers get a format they take, with a matching suffix."""
    import io

    import cv2
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        fmt = im.format or ""
    if fmt in STAGE_FORMATS:
        return STAGE_FORMATS[fmt], data
    ok, png = cv2.imencode(".png", decode_image(data, "upload"))
    if not ok:
        raise BadImageError("upload: could not be re-encoded as PNG")
    return ".png", png.tobytes()


def stage_payload(data: bytes, name: str | None) -> tuple[str, bytes]:
    """(stage path under uploads/, bytes to store), see `stored_format`."""
    suffix, payload = stored_format(data)
    return new_upload_path(name, data, suffix), payload


def pair_payloads(board: bytes, board_name: str | None, template: bytes) -> list[tuple[str, bytes]]:
    """A board and its template for uploads/, named the Deep PCB way so the inference sensor reads them together
    (`<sha>_<stem>_temp.jpg|png` beside `<sha>_<stem>_test.*`, the hash of the board); the template first."""
    base = safe_upload_name(board_name, board, "")
    base = base[: -len("_test")] if base.endswith("_test") else base
    (t_suffix, t_payload), (b_suffix, b_payload) = stored_format(template), stored_format(board)
    return [(f"{UPLOAD_PREFIX}/{base}_temp{t_suffix}", t_payload),
            (f"{UPLOAD_PREFIX}/{base}_test{b_suffix}", b_payload)]


def write_upload(stage, data: bytes, name: str | None, work_dir: Path | None = None,
                 template: bytes | None = None) -> str:
    """Put a decoded-OK upload on the stage under uploads/ (the inference sensor picks it up), with its template
    beside it when given (for a reference-aware champion); returns the board's stage path. Call it only after
    `load_image` accepted the bytes (both): bad input is never stored."""
    payloads = pair_payloads(data, name, template) if template is not None else [stage_payload(data, name)]
    with tempfile.TemporaryDirectory(dir=work_dir) as tmp:
        for target, payload in payloads:
            local = Path(tmp) / PurePosixPath(target).name
            local.write_bytes(payload)
            written = stage.put_file(local, target)
    return written


# ------------------------------------------------------------------------------------------- boards on stage
@dataclass(frozen=True)
class StageBoard:
    board_id: str
    group: str
    image_path: str  # stage path of <id>_test.jpg
    label_path: str | None  # stage path of <G>_not/<id>.txt when present
    template_path: str | None = None  # stage path of <id>_temp.jpg / .png when present

    @property
    def label(self) -> str:
        return f"{self.board_id} ({self.group}){'' if self.label_path else ' - no labels'}"


def boards_from_listing(paths: list[str], prefix: str = RAW_DATA_PREFIX) -> list[StageBoard]:
    """Deep PCB test images under `prefix` with their label files (when listed), sorted by board id."""
    prefix = prefix.rstrip("/") + "/"
    rel = {p[len(prefix):] for p in paths if p.startswith(prefix)}
    boards = []
    for r in rel:
        m = _BOARD_RE.match(r)
        if not m:
            continue
        label = f"{m['group']}/{m['g']}_not/{m['id']}.txt"
        template = listed_template(r, rel)
        boards.append(StageBoard(m["id"], m["group"], prefix + r, prefix + label if label in rel else None,
                                 prefix + template if template else None))
    return sorted(boards, key=lambda b: (b.board_id, b.group))


def list_stage_boards(stage, prefix: str = RAW_DATA_PREFIX) -> list[StageBoard]:
    return boards_from_listing([f.path for f in stage.list(prefix)], prefix)


def fetch_bytes(stage, stage_path: str, cache_dir: Path) -> bytes:
    local = Path(cache_dir) / PurePosixPath(stage_path)
    if not local.is_file():
        stage.get_file(stage_path, local)
    return local.read_bytes()


def ground_truth(stage, board: StageBoard, image_size: tuple[int, int], cache_dir: Path) -> list[Box] | None:
    """The board's labelled boxes, None when it has no label file. Raises DeepPCBFormatError for bad labels."""
    if not board.label_path:
        return None
    local = Path(cache_dir) / PurePosixPath(board.label_path)
    if not local.is_file():
        stage.get_file(board.label_path, local)
    return read_labels(local, image_size)


def board_for_upload(name: str | None, boards: list[StageBoard]) -> StageBoard | None:
    """An uploaded `<id>_test.jpg` / `<id>.jpg` that is a board on the stage gets its ground truth too."""
    stem = PurePosixPath(str(name or "").replace("\\", "/")).stem
    stem = stem[:-5] if stem.endswith("_test") else stem
    return next((b for b in boards if b.board_id == stem), None)


__all__ = ["BadImageError", "DeepPCBFormatError", "Inspection", "StageBoard", "inspect_bytes", "load_image",
           "write_upload", "safe_upload_name", "list_stage_boards", "ground_truth", "render"]
