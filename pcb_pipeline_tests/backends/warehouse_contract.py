"""Behaviour every Warehouse backend must show, asserted the same way on DuckDB and on Snowflake (fakesnow)."""
from __future__ import annotations

from typing import Callable

import pandas as pd
import pytest

from pcb_pipeline.core.defect_logs import INSPECTION_COLUMNS


def inspections(batch: str, n: int) -> pd.DataFrame:
    ts = pd.Timestamp.now().normalize() + pd.Timedelta(hours=1)
    return pd.DataFrame([[batch, f"b{i}", ts, 1, "SHANGHAI", "m/1", "run", f"img{i}.jpg"] for i in range(n)],
                        columns=INSPECTION_COLUMNS)


def assert_a_batch_is_one_transaction(wh, logs: Callable[[str, int], pd.DataFrame]) -> None:
    """A batch's DEFECT_LOGS and BOARD_INSPECTIONS rows appear together or not at all."""
    written = wh.replace_batch("batch_id", "a", {"DEFECT_LOGS": logs("a", 3), "BOARD_INSPECTIONS": inspections("a", 3)})
    assert written == {"DEFECT_LOGS": 3, "BOARD_INSPECTIONS": 3}
    bad = inspections("a", 2)
    bad.loc[1, "image_path"] = bad.loc[0, "image_path"]  # the second table fails after the first was written
    with pytest.raises(Exception):
        wh.replace_batch("batch_id", "a", {"DEFECT_LOGS": logs("a", 5), "BOARD_INSPECTIONS": bad})
    counts = [wh.query(f"SELECT COUNT(*) AS n FROM {t} WHERE batch_id = 'a'")["n"][0]
              for t in ("DEFECT_LOGS", "BOARD_INSPECTIONS")]
    assert counts == [3, 3], "neither table changed: no detections without their board rows"
