"""The answer to a data question, the same shape from the local engine and from Cortex Analyst."""
from __future__ import annotations

import decimal
import math
from dataclasses import dataclass, field

from ..sql_guard import MAX_RESULT_ROWS


@dataclass
class DataAnswer:
    sql: str | None
    columns: list[str]
    rows: list[list]
    interpretation: str
    suggestions: list[str] = field(default_factory=list)
    source: str = "generated"  # generated | verified | typed | cortex_analyst | none
    answered: bool = True
    request_id: str | None = None  # Cortex Analyst's id of the answer (what thumbs up / down refer to)

    def to_dict(self) -> dict:
        return {"sql": self.sql, "columns": self.columns, "rows": self.rows, "interpretation": self.interpretation,
                "suggestions": self.suggestions, "source": self.source, "answered": self.answered,
                "request_id": self.request_id}


def frame_to_rows(df) -> tuple[list[str], list[list]]:
    cols = [str(c) for c in df.columns]
    rows = []
    for rec in df.head(MAX_RESULT_ROWS).itertuples(index=False, name=None):
        rows.append([_json_safe(v) for v in rec])
    return cols, rows


def _json_safe(v):
    if v is None:
        return None
    try:
        import numpy as np

        if isinstance(v, np.generic):
            v = v.item()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(v, float) and (math.isnan(v) or math.isinf(v)):
        return None
    if isinstance(v, decimal.Decimal):
        return float(v)
    if hasattr(v, "isoformat"):
        try:
            import pandas as pd

            if v is pd.NaT:
                return None
        except ImportError:  # pragma: no cover
            pass
        return v.isoformat()
    return v


