"""Deterministic board metadata: which line made a board, when, on which shift, for which product.

Deep PCB carries no factory data, so we derive it from a stable hash of the board id: the same board always maps
to the same line, product and shift, and manufacturing dates fall in the 28 days before an anchor date.
"""
from __future__ import annotations

import hashlib
from datetime import date, timedelta

FACTORY_LINES = ("SHANGHAI", "SHENZHEN", "PENANG", "GUADALAJARA")
PRODUCT_TYPES = ("AUTOMOTIVE_ECU", "SMARTPHONE_MAINBOARD", "SERVER_BACKPLANE", "IOT_SENSOR")
SHIFTS = ("DAY", "SWING", "NIGHT")
DATE_WINDOW_DAYS = 28


def _digest(board_id: str) -> int:
    return int.from_bytes(hashlib.sha256(board_id.encode()).digest()[:8], "big")


def board_metadata(board_id: str, board_group: str, anchor: date) -> dict:
    h = _digest(board_id)
    return {
        "board_id": board_id,
        "board_group": board_group,
        "manufacturing_date": anchor - timedelta(days=(h >> 16) % DATE_WINDOW_DAYS),
        "factory_line_id": FACTORY_LINES[h % len(FACTORY_LINES)],
        # product follows the board group (one layout = one product), so a product is made on several lines
        "product_type": PRODUCT_TYPES[_digest(board_group) % len(PRODUCT_TYPES)],
        "production_shift": SHIFTS[(h >> 8) % len(SHIFTS)],
    }
