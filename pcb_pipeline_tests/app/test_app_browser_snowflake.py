"""A real browser on the app with PCB_BACKEND=snowflake, its account played by fakesnow in the app's own process.

The app process is fakesnow_app.py: it patches snowflake.connector with the Snowflake backend tests' fakesnow shim,
writes the sample rows this module generated through the Snowflake warehouse adapter (upsert of PCB_METADATA, one
replace_batch of DEFECT_LOGS + BOARD_INSPECTIONS per batch, as the assets write them), then runs `streamlit run` on
the app's entry script with the flags of `pcb-pipeline app`. Its PCB_HOME is empty, so every figure the page shows
can only come from the fakesnow account. Cortex Analyst is unreachable there (nothing listens where the connection
says the account is), so a data question must be answered by the local engine, and the answer must say so.

Headless Debian Chromium through playwright checks, against figures computed here from the generated rows:
the Executive Dashboard's cards, its defect Pareto (table and chart order) and its factory-line breakdown; and the
Vision Lab's Query Data chat (the fallback note, and defects per factory line). Wrong numbers fail the test.

Skips only when /usr/bin/chromium, playwright or fakesnow is absent.
"""
from __future__ import annotations

import sys
from collections import Counter
from datetime import date, timedelta
from pathlib import Path

import pytest

pytest.importorskip("fakesnow")

import champion  # noqa: E402
import fakesnow_app  # noqa: E402
from test_app_browser import STEP_MS, _free_port, _wait_idle, browser, page  # noqa: E402,F401 - shared fixtures

from pcb_pipeline.app import data  # noqa: E402
from pcb_pipeline.knowledge import sample_data  # noqa: E402

pytestmark = pytest.mark.slow

WINDOW_DAYS = 30  # the dashboard's default date range: the last 30 days up to the latest inspection
QUESTION = "How many defects per factory line?"
PARETO_HEADER = ["class", "defects", "share %", "cumulative", "cumulative %"]
LINES_HEADER = ["Factory line", "boards", "defects", "yield %", "scrap %"]
ANSWER_HEADER = ["factory_line_id", "defect_count"]

# the rows of the first grid under `root` whose header is `header` (glide-data-grid's accessible table, drawn
# inside its canvas), with the row count the grid declares; null until it is there
GRID_JS = """([root, header]) => {
  for (const t of document.querySelectorAll(root + ' [data-testid="stDataFrame"] table[role="grid"]')) {
    const rows = Array.from(t.querySelectorAll('tr[role="row"]')).map(r => Array.from(r.children, c => c.textContent));
    if (rows.length > 1 && rows[0].join('|') === header.join('|'))
      return {declared: Number(t.getAttribute('aria-rowcount')), rows: rows.slice(1)};
  }
  return null;
}"""


# ------------------------------------------------------------------------------------------------ the seed
@pytest.fixture(scope="module")
def frames():
    return sample_data.generate(n_boards=150, days=14, seed=5, today=date.today())


def _window(frames) -> dict:
    """The default range's rows: from max(first, last - 29 days) to the last inspection's date, both inclusive."""
    insp, logs = frames["BOARD_INSPECTIONS"], frames["DEFECT_LOGS"]
    last, first = insp["timestamp"].max().date(), insp["timestamp"].min().date()
    start = max(first, last - timedelta(days=WINDOW_DAYS - 1))

    def keep(df):
        d = df["timestamp"].dt.date
        return df[(d >= start) & (d <= last)]

    return {"inspections": keep(insp), "logs": keep(logs)}


def _expected(frames) -> dict:
    """Dashboard figures from the generated rows, by the definitions (not by the app's code)."""
    w = _window(frames)
    counts = w["inspections"]["defect_count"].astype(int)
    boards = len(counts)
    by_class = Counter(w["logs"]["detected_class"])
    total = sum(by_class.values())
    pareto, running = [], 0
    for cls, n in sorted(by_class.items(), key=lambda kv: (-kv[1], kv[0])):
        running += n
        pareto.append((cls, n, 100 * n / total, running, 100 * running / total))
    lines = {}
    for line, g in w["inspections"].groupby("factory_line_id"):
        dc = g["defect_count"].astype(int)
        lines[line] = (len(dc), int(dc.sum()), 100 * (dc == 0).sum() / len(dc),
                       100 * (dc > data.SCRAP_DEFECT_LIMIT).sum() / len(dc))
    return {"boards": boards, "defects": total, "yield": 100 * (counts == 0).sum() / boards,
            "scrap": 100 * (counts > data.SCRAP_DEFECT_LIMIT).sum() / boards, "pareto": pareto, "lines": lines,
            "defects_per_line": dict(Counter(frames["DEFECT_LOGS"]["factory_line_id"]))}


# ------------------------------------------------------------------------------------------------- the app
def _app_env(home: Path) -> dict[str, str]:
    from fakesnow_shim import ENV  # the account the Snowflake backend tests pretend to be

    env = {k: v for k, v in champion.isolated_env(home).items()
           if not k.startswith(("SNOWFLAKE_", "PCB_SNOWFLAKE_")) and k != "PCB_DATA_ANALYST"}
    env.update(ENV)  # PCB_BACKEND=snowflake; PCB_DATA_ANALYST unset: Cortex Analyst, the Snowflake default
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"  # the unreachable Analyst is refused, not proxied
    return env


@pytest.fixture(scope="module")
def app_url(browser, frames, serve_streamlit, tmp_path_factory):
    root = tmp_path_factory.mktemp("fakesnow_app")
    home = root / "home"
    home.mkdir()
    seed_dir = fakesnow_app.write_seed(frames, root / "seed")
    port, analyst_port = _free_port(), _free_port()  # nothing will listen on analyst_port
    while analyst_port == port:
        analyst_port = _free_port()
    command = [sys.executable, fakesnow_app.__file__, str(seed_dir), "--host", "127.0.0.1", "--port", str(port),
               "--analyst-port", str(analyst_port)]
    return serve_streamlit(command, f"http://127.0.0.1:{port}", _app_env(home), home,
                           "streamlit_app_fakesnow.log", timeout=120)


# ------------------------------------------------------------------------------------------------ helpers
def _grid(page, header: list[str], root: str = "") -> list[list[str]]:
    found = page.wait_for_function(GRID_JS, arg=[root, header], timeout=STEP_MS).json_value()
    assert found["declared"] == len(found["rows"]) + 1, found  # every row is in the accessible table
    return found["rows"]


def _card(page, label: str) -> str:
    metric = page.locator('[data-testid="stMetric"]').filter(has=page.get_by_text(label, exact=True))
    return metric.locator('[data-testid="stMetricValue"]').inner_text().strip()


def _pct(text: str) -> float:
    assert text.endswith("%"), text
    return float(text[:-1])


def _close(shown: str | float, exact: float, decimals: int) -> bool:
    """`shown` is `exact` rounded to `decimals` (SQL rounds to 2 places first: allow that too)."""
    return abs(float(shown) - exact) <= 0.5 * 10 ** -decimals + 0.005 + 1e-9


# ------------------------------------------------------------------------------------------------- tests
def test_dashboard_on_fakesnow_shows_the_seeded_figures(page, app_url, frames, artifacts_dir):
    want = _expected(frames)
    assert want["boards"] > 0 and want["defects"] > 0 and 100 / want["boards"] > 0.11  # one board shows
    page.goto(app_url)
    page.get_by_role("heading", name="Executive Dashboard").wait_for()
    page.get_by_text("Yield rate", exact=True).first.wait_for()
    _wait_idle(page)

    assert _card(page, "Boards inspected") == f"{want['boards']:,}"
    assert _card(page, "Defects found") == f"{want['defects']:,}"
    for label, key in (("Yield rate", "yield"), ("Scrap rate", "scrap")):
        shown = _pct(_card(page, label))
        assert _close(shown, want[key], 1), (label, shown, want[key])

    pareto = _grid(page, PARETO_HEADER)
    assert [r[0] for r in pareto] == [p[0] for p in want["pareto"]], pareto  # classes, most frequent first
    for row, (cls, n, share, cumulative, cumulative_pct) in zip(pareto, want["pareto"]):
        assert int(row[1]) == n and int(row[3]) == cumulative, (row, cls)
        assert _close(row[2], share, 2) and _close(row[4], cumulative_pct, 2), (row, share, cumulative_pct)
    assert float(pareto[-1][4]) == 100.0
    chart = page.locator('[data-testid="stVegaLiteChart"]').filter(has_text="Defect Pareto")
    classes = {p[0] for p in want["pareto"]}
    labels = [t for t in chart.locator("text").all_text_contents() if t in classes]
    assert labels[:len(classes)] == [p[0] for p in want["pareto"]], labels  # the bars in Pareto order

    lines = _grid(page, LINES_HEADER)
    assert {r[0] for r in lines} == set(want["lines"]), lines
    assert [int(r[2]) for r in lines] == sorted((int(r[2]) for r in lines), reverse=True)
    for line, boards, defects, yield_pct, scrap_pct in lines:
        b, d, y, s = want["lines"][line]
        assert (int(boards), int(defects)) == (b, d), line
        assert _close(yield_pct, y, 2) and _close(scrap_pct, s, 2), (line, yield_pct, scrap_pct, y, s)
    page.screenshot(path=str(artifacts_dir / "executive_dashboard_fakesnow.png"), full_page=True)


def test_query_data_on_fakesnow_falls_back_to_the_local_engine_and_says_so(page, app_url, frames,
                                                                         artifacts_dir):
    want = _expected(frames)["defects_per_line"]
    page.goto(f"{app_url}/vision_lab")
    page.get_by_role("heading", name="Vision Lab").wait_for()
    page.get_by_text("Query Data", exact=True).click()
    box = page.locator('[data-testid="stChatInputTextArea"]')
    box.fill(QUESTION)
    box.press("Enter")
    page.get_by_text("SQL", exact=True).wait_for()
    _wait_idle(page)

    reply = page.locator('[data-testid="stChatMessage"]').last
    note = reply.get_by_text("Cortex Analyst could not answer (")
    note.wait_for()  # visible to the user, not only in the log
    text = note.inner_text()
    assert "Cortex Analyst did not answer" in text and "answered by the local engine" in text, text
    rows = _grid(page, ANSWER_HEADER)
    assert {line: int(n) for line, n in rows} == want, rows  # every seeded defect, counted on the fakesnow account
    assert [int(n) for _, n in rows] == sorted(want.values(), reverse=True)
    page.get_by_text("SQL", exact=True).click()
    sql = reply.locator('[data-testid="stCode"]').inner_text()
    assert "FROM DEFECT_LOGS" in sql and "GROUP BY factory_line_id" in sql, sql
    page.screenshot(path=str(artifacts_dir / "vision_lab_query_data_fakesnow.png"), full_page=True)
