"""The six Deep PCB defect classes. YOLO id = Deep PCB type id - 1."""
from __future__ import annotations

CLASS_NAMES: tuple[str, ...] = ("open", "short", "mousebite", "spur", "copper", "pin-hole")
NUM_CLASSES = len(CLASS_NAMES)
CLASS_ID = {name: i for i, name in enumerate(CLASS_NAMES)}
# Each defect seen with copper and laminate swapped: copper bridging two conductors (short) becomes a cut through
# one (open), a protrusion from an edge (spur) a bite into it (mousebite), an isolated speck (copper) a hole
# (pin-hole). Boards that are mostly copper pour show their shorts as missing isolation lines, i.e. as the dual
# of an open on a board of thin traces.
POLARITY_DUAL = {"open": "short", "short": "open", "mousebite": "spur", "spur": "mousebite", "copper": "pin-hole",
                 "pin-hole": "copper"}


class UnknownClassError(ValueError):
    pass


def class_name(class_id: int) -> str:
    if not 0 <= int(class_id) < NUM_CLASSES:
        raise UnknownClassError(f"unknown class id {class_id}: expected 0..{NUM_CLASSES - 1} {CLASS_NAMES}")
    return CLASS_NAMES[int(class_id)]


def class_id_from_deeppcb_type(deeppcb_type: int) -> int:
    if not 1 <= int(deeppcb_type) <= NUM_CLASSES:
        raise UnknownClassError(f"unknown Deep PCB defect type {deeppcb_type}: expected 1..{NUM_CLASSES}")
    return int(deeppcb_type) - 1
