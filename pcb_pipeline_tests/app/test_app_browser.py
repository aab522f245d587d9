"""A real browser on the real app: `streamlit run` (the command `pcb-pipeline app` runs) on loopback at a free port,
driven by Debian's headless Chromium through playwright (no browser download). Uploads a board, checks that boxes
and a cited repair answer appear, and that the dashboard draws its charts. Screenshots go to test-artifacts/.

Skips only when /usr/bin/chromium (or playwright) is absent: `apt-get install -y chromium`.
"""
from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

import champion
from pcb_pipeline.app.launch import streamlit_command

CHROMIUM = os.environ.get("PCB_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
STEP_MS = 90_000  # one UI step (first upload loads the model; first manual answer loads the search index)

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def browser():
    if not (Path(CHROMIUM).is_file() and os.access(CHROMIUM, os.X_OK)):
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install -y chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def app_url(browser, app_home, serve_streamlit):
    port = _free_port()
    return serve_streamlit(streamlit_command("127.0.0.1", port), f"http://127.0.0.1:{port}",
                           champion.isolated_env(app_home), app_home, "streamlit_app.log")


@pytest.fixture
def page(browser, artifacts_dir, request):
    context = browser.new_context(viewport={"width": 1500, "height": 1100})
    p = context.new_page()
    p.set_default_timeout(STEP_MS)
    yield p
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        p.screenshot(path=str(artifacts_dir / f"{request.node.name}_failed.png"), full_page=True)
    context.close()


def _wait_idle(page) -> None:
    """Wait until Streamlit has finished the current script run (no 'Running...' status widget)."""
    page.wait_for_timeout(300)
    page.locator('[data-testid="stStatusWidget"]').wait_for(state="detached", timeout=STEP_MS)


def test_upload_a_board_see_boxes_and_a_cited_repair_answer(page, app_url, board_files, artifacts_dir):
    page.goto(f"{app_url}/vision_lab")
    page.get_by_role("heading", name="Vision Lab").wait_for()
    board = board_files[0]
    page.locator('[data-testid="stFileUploader"] input[type="file"]').set_input_files(str(board))
    page.get_by_text("Saved to the stage as").wait_for()
    # the smoke-trained test model is weak: put the confidence slider at 0 to show every candidate box
    thumb = page.get_by_role("slider", name="Confidence threshold")
    thumb.focus()
    thumb.press("Home")
    page.get_by_text("defect(s) at confidence 0.00 or above").wait_for()
    _wait_idle(page)
    page.locator('[data-testid="stImage"] img').first.wait_for()
    page.wait_for_function("""() => { const img = document.querySelector('[data-testid="stImage"] img');
                                      return img !== null && img.complete && img.naturalWidth > 0; }""")
    table = page.locator('[data-testid="stDataFrame"]').first
    table.wait_for()
    summary = page.get_by_text("defect(s) at confidence 0.00 or above").inner_text()
    classes = {"open", "short", "mousebite", "spur", "copper", "pin-hole"}
    assert any(c in summary for c in classes), summary
    page.screenshot(path=str(artifacts_dir / "vision_lab_boxes.png"), full_page=True)

    repair = page.get_by_role("button", name="How do I repair a")
    label = repair.inner_text()
    repair.click()
    page.get_by_text("Sources", exact=True).wait_for()
    _wait_idle(page)
    citation = page.locator("li", has_text=".pdf").first
    citation.wait_for()
    assert citation.inner_text().startswith("[1] ")
    assert page.get_by_text(label.strip()).count() >= 1  # the question was asked in the chat
    page.screenshot(path=str(artifacts_dir / "vision_lab_repair_answer.png"), full_page=True)


def test_chat_toggle_to_query_data_in_the_browser(page, app_url, artifacts_dir):
    page.goto(f"{app_url}/vision_lab")
    page.get_by_role("heading", name="Vision Lab").wait_for()
    page.get_by_text("Query Data", exact=True).click()
    box = page.locator('[data-testid="stChatInputTextArea"]')
    box.fill("How many defects per factory line?")
    box.press("Enter")
    page.get_by_text("SQL", exact=True).wait_for()
    _wait_idle(page)
    assert page.locator('[data-testid="stChatMessage"]').count() >= 2
    page.screenshot(path=str(artifacts_dir / "vision_lab_query_data.png"), full_page=True)


def test_dashboard_in_the_browser(page, app_url, artifacts_dir):
    page.goto(app_url)
    page.get_by_role("heading", name="Executive Dashboard").wait_for()
    for label in ("Yield rate", "Boards inspected", "Defects found", "Scrap rate"):
        page.get_by_text(label, exact=True).first.wait_for()
    page.locator('[data-testid="stVegaLiteChart"]').first.wait_for()
    page.get_by_text("not measured").wait_for()
    _wait_idle(page)
    page.screenshot(path=str(artifacts_dir / "executive_dashboard.png"), full_page=True)


def test_bad_upload_in_the_browser_gets_a_message_and_the_app_keeps_working(page, app_url, artifacts_dir, tmp_path):
    page.goto(f"{app_url}/vision_lab")
    page.get_by_role("heading", name="Vision Lab").wait_for()
    bad = tmp_path / "not_a_board.jpg"
    bad.write_bytes(b"this is not an image")
    page.locator('[data-testid="stFileUploader"] input[type="file"]').set_input_files(str(bad))
    page.get_by_text("not an image (no known image format)").wait_for()
    page.screenshot(path=str(artifacts_dir / "vision_lab_bad_upload.png"), full_page=True)
    page.get_by_text("Query Manuals", exact=True).click()
    box = page.locator('[data-testid="stChatInputTextArea"]')
    box.fill("How do I repair a short?")
    box.press("Enter")
    page.get_by_text("Sources", exact=True).wait_for()
