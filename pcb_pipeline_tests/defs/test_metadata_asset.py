"""pcb_metadata: dates anchored on the day the raw images landed, so a re-run on another day writes the same rows."""
from __future__ import annotations

import os
from datetime import date, datetime, timezone

import dagster as dg
import pytest

import test_automation_support as support
from pcb_pipeline.core.metadata import DATE_WINDOW_DAYS
from pcb_pipeline.defs.assets import RAW_PREFIX, pcb_metadata, raw_pcb_images


@pytest.fixture(scope="module")
def landed(tmp_path_factory):
    w = support.make_world(tmp_path_factory.mktemp("metadata_world"))
    res = dg.materialize([raw_pcb_images], resources=w.resources(), run_config={"ops": {"raw_pcb_images": {
        "config": {"synthetic_groups": 2, "synthetic_images_per_group": 3}}}})
    assert res.success
    return w


def _land_on(w, day: date) -> None:
    split = w.stage_root / RAW_PREFIX / "PCBData" / "trainval.txt"
    ts = datetime(day.year, day.month, day.day, 12, tzinfo=timezone.utc).timestamp()
    os.utime(split, (ts, ts))


def _metadata(w, config: dict | None = None):
    res = dg.materialize([pcb_metadata], resources=w.resources(), raise_on_error=False,
                         run_config={"ops": {"pcb_metadata": {"config": config or {}}}})
    rows = w.warehouse().query("SELECT * FROM PCB_METADATA ORDER BY board_id")
    return res, rows


def test_dates_follow_the_landing_day_and_reruns_are_identical(landed):
    _land_on(landed, date(2026, 3, 14))
    first, rows = _metadata(landed)
    assert first.success and len(rows) == 6
    mat = first.asset_materializations_for_node("pcb_metadata")[0]
    assert mat.metadata["anchor_date"].value == "2026-03-14"
    dates = {d.date() if hasattr(d, "date") else d for d in rows["manufacturing_date"]}
    assert len(dates) > 1 and all(0 <= (date(2026, 3, 14) - d).days < DATE_WINDOW_DAYS for d in dates)
    again, rows_again = _metadata(landed)  # another run, same landing: the same rows
    assert again.success and rows_again.equals(rows)


def test_anchor_date_override_and_bad_value(landed):
    res, rows = _metadata(landed, {"anchor_date": "2025-12-31"})
    assert res.success
    assert max(d.date() if hasattr(d, "date") else d for d in rows["manufacturing_date"]) <= date(2025, 12, 31)
    res, _ = _metadata(landed, {"anchor_date": "31/12/2025"})
    assert not res.success
    failure = [e for e in res.all_events if e.is_step_failure][0]
    assert "ISO date" in str(failure.event_specific_data.error)
