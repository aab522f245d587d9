"""Both pages under Streamlit's AppTest, on the app home (a real champion model, stage, warehouse and SOP index).

AppTest drives st.file_uploader directly in Streamlit 1.67 (`set_value((name, bytes, mime))`), so uploads, bad
inputs included, go through the page's real upload path."""
from __future__ import annotations

import io
import json
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import streamlit as st
from PIL import Image
from streamlit.testing.v1 import AppTest

from pcb_pipeline.app import chat, data, vision

APP_DIR = Path(vision.__file__).resolve().parent
ENTRY = APP_DIR / "streamlit_app.py"
DASHBOARD = APP_DIR / "views" / "dashboard.py"
VISION_LAB = APP_DIR / "views" / "vision_lab.py"
TIMEOUT = 180  # first run in a process loads the model and the SOP index


def page(path: Path) -> AppTest:
    at = AppTest.from_file(str(path), default_timeout=TIMEOUT)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def texts(at: AppTest, kind: str = "markdown") -> list[str]:
    return [e.value for e in getattr(at, kind)]


def elements(at: AppTest, kind: str) -> list:
    return list(at.get(kind))


@pytest.fixture
def warehouse(use_app_home):
    from pcb_pipeline.backends.factory import warehouse

    return warehouse()


# ------------------------------------------------------------------------------------------------- navigation
def test_entry_script_navigates_between_the_two_pages(use_app_home):
    at = page(ENTRY)
    assert at.title[0].value == "Executive Dashboard"
    at.switch_page(str(VISION_LAB.relative_to(APP_DIR))).run()
    assert not at.exception and at.title[0].value == "Vision Lab"


# -------------------------------------------------------------------------------------------------- dashboard
def test_dashboard_cards_pareto_and_breakdowns(warehouse):
    at = page(DASHBOARD)
    cards = {m.label: m.value for m in at.metric}
    assert list(cards) == ["Yield rate", "Boards inspected", "Defects found", "Scrap rate", "False-call rate vs AOI"]
    start, end = at.date_input(key="dash_dates").value
    k = data.kpis(warehouse, data.DateRange(start, end))
    assert cards["Boards inspected"] == f"{k['boards_inspected']:,}" and k["boards_inspected"] > 0
    assert cards["Defects found"] == f"{k['defects_found']:,}"
    assert cards["Yield rate"] == f"{k['yield_rate_pct']:.1f}%" and cards["Scrap rate"] == f"{k['scrap_rate_pct']:.1f}%"
    assert cards["False-call rate vs AOI"] == "not measured"
    charts = elements(at, "vega_lite_chart")
    assert len(charts) == 1 + len(data.DIMENSIONS)  # the Pareto and one chart per breakdown
    pareto_spec = json.loads(charts[0].proto.spec)
    assert pareto_spec["resolve"]["scale"]["y"] == "independent" and len(pareto_spec["layer"]) == 2
    assert [t.label for t in at.tabs] == ["Factory line", "Product type", "Shift"]
    frames = [df.value for df in at.dataframe]
    by_line = next(f for f in frames if "Factory line" in f.columns)
    assert set(by_line["Factory line"]) >= {"SHANGHAI", "SHENZHEN", "PENANG", "GUADALAJARA"}
    assert any("Shift" in f.columns for f in frames) and any("Product type" in f.columns for f in frames)


def test_dashboard_date_filter_changes_the_figures(warehouse):
    at = page(DASHBOARD)
    start, end = at.date_input(key="dash_dates").value
    before = {m.label: m.value for m in at.metric}["Boards inspected"]
    narrow = (end - timedelta(days=6), end)
    at.date_input(key="dash_dates").set_value(narrow).run()
    assert not at.exception
    after = {m.label: m.value for m in at.metric}["Boards inspected"]
    assert after == f"{data.kpis(warehouse, data.DateRange(*narrow))['boards_inspected']:,}" and after != before
    at.date_input(key="dash_dates").set_value((end, end - timedelta(days=3))).run()  # reversed: message, no crash
    assert not at.exception


def test_dashboard_question_box_answers_with_sql_and_a_table(use_app_home):
    at = page(DASHBOARD)
    at.text_input(key="dash_question").input("How many defects per factory line?")
    at.button[0].click().run()
    assert not at.exception
    assert any("factory_line" in t for t in texts(at))
    assert any("DEFECT_LOGS" in c.value for c in at.code)
    assert any(set(df.value.columns) >= {"factory_line_id"} for df in at.dataframe)
    at.text_input(key="dash_question").input("'; DROP TABLE DEFECT_LOGS; --")
    at.button[0].click().run()
    assert not at.exception
    at.text_input(key="dash_question").input("How many defects per factory line?")
    at.button[0].click().run()
    assert any("DEFECT_LOGS" in c.value for c in at.code)  # the table is still there


def test_dashboard_shows_false_calls_against_the_aoi_baseline_when_measured(use_app_home):
    report = {"aoi_baseline": {"target_recall": 0.8, "model": {"fpr": 0.12}, "baseline": {"fpr": 0.48},
                               "fpr_reduction": 0.75}}
    target = use_app_home / "stage" / "models" / "evaluation.json"
    target.write_text(json.dumps(report))
    st.cache_data.clear()
    try:
        at = page(DASHBOARD)
        card = next(m for m in at.metric if m.label.startswith("False-call rate"))
        assert card.value == "12.0%" and card.delta == "-75% vs legacy AOI"
    finally:
        target.unlink()
        st.cache_data.clear()


# ------------------------------------------------------------------------------------------------- vision lab
def test_upload_shows_boxes_saves_to_the_stage_and_filters_by_confidence(use_app_home, board_files):
    at = page(VISION_LAB)
    raw = board_files[0].read_bytes()
    at.file_uploader(key="lab_upload").set_value((board_files[0].name, raw, "image/jpeg")).run()
    assert not at.exception and not at.error
    at.slider(key="lab_conf").set_value(0.0).run()  # the smoke-trained model is weak: show every candidate
    summary = next(t for t in texts(at) if "defect(s) at confidence" in t)
    table = at.dataframe[0].value
    assert len(table) > 0 and set(table["class"]) <= {"open", "short", "mousebite", "spur", "copper", "pin-hole"}
    assert summary.startswith(f"**{len(table)} defect(s)")
    assert elements(at, "image"), "the annotated image is shown"
    saved = f"uploads/{vision.safe_upload_name(board_files[0].name, raw)}"
    assert (use_app_home / "stage" / saved).read_bytes() == raw
    written = (use_app_home / "stage" / saved).stat().st_mtime_ns
    assert any(saved in c for c in texts(at, "caption"))
    # the upload is named like a board on the stage: its ground truth is overlaid
    assert at.checkbox(key="lab_show_gt").value is True
    at.slider(key="lab_conf").set_value(0.95).run()
    assert any(t.startswith("**No defects at confidence 0.95 or above") for t in texts(at))
    assert (use_app_home / "stage" / saved).stat().st_mtime_ns == written  # written once, not on every rerun


def test_board_from_the_stage_with_ground_truth(use_app_home, board_files):
    at = page(VISION_LAB)
    at.radio(key="lab_source").set_value("Board from the stage").run()
    options = at.selectbox(key="lab_board").options
    assert len(options) == len(board_files)
    at.selectbox(key="lab_board").select_index(2).run()
    assert not at.exception and not at.error
    gt = at.checkbox(key="lab_show_gt")
    assert "labelled defects" in gt.label and gt.value
    assert any("ground truth in green" in c for c in _image_captions(at))
    gt.uncheck().run()
    assert not at.exception and not any("ground truth in green" in c for c in _image_captions(at))


def test_a_reference_champion_reads_the_stage_template_or_says_why_not(use_app_home, board_files, monkeypatch):
    """With a reference-aware champion the page passes the stage board's template; an upload that matches no stage
    board gets a clear message, not a traceback."""
    from types import SimpleNamespace

    from pcb_pipeline.app import ui
    from pcb_pipeline.core.reference import MissingTemplateError
    from pcb_pipeline.vision.detector import Detection

    seen = []

    class ReferenceChampion:
        backend, imgsz, needs_template = "stub", 640, True

        def predict(self, images, conf=None, templates=None):
            if templates is None or templates[0] is None:
                raise MissingTemplateError("no template")
            seen.append(templates[0].shape)
            return [[Detection(2, "mousebite", 0.9, 10, 10, 60, 60)]]

    monkeypatch.setattr(ui, "get_detector", lambda: (ReferenceChampion(), SimpleNamespace(name="m", version="9")))
    at = page(VISION_LAB)
    at.radio(key="lab_source").set_value("Board from the stage").run()
    at.selectbox(key="lab_board").select_index(1).run()
    assert not at.exception and not at.error and seen and set(seen) == {(640, 640, 3)}  # a template each time
    assert any(t.startswith("**1 defect(s)") for t in texts(at))
    at = page(VISION_LAB)
    unknown = _img("L")
    at.file_uploader(key="lab_upload").set_value(("unknown_board.png", unknown, "image/png")).run()
    assert not at.exception
    assert any("compares each board with its defect-free template" in e.value and "upload its template below"
               in e.value for e in at.error)
    stage = use_app_home / "stage" / "uploads"
    base = vision.safe_upload_name("unknown_board.png", unknown, "")
    assert not (stage / f"{base}_test.png").exists(), "nothing is saved before it can be inspected"
    # a template that is not an image: said as the template's problem
    template_uploader = f"lab_template_upload_{vision.sha256(unknown)[:12]}"  # one per board
    at.file_uploader(key=template_uploader).set_value(("golden.png", b"not an image", "image/png")).run()
    assert not at.exception and any("the template golden.png: not an image" in e.value for e in at.error)
    # its template uploaded beside it: compared with it, and both saved as a pair the inference sensor reads together
    seen.clear()
    template = _img("RGB", fmt="BMP")  # any readable format; stored as PNG
    at.file_uploader(key=template_uploader).set_value(("golden.bmp", template, "image/bmp")).run()
    assert not at.exception and not at.error and seen == [(640, 640, 3)]
    assert (stage / f"{base}_test.png").read_bytes() == unknown
    assert Image.open(stage / f"{base}_temp.png").format == "PNG"
    assert any(f"uploads/{base}_test.png` with its template" in c for c in texts(at, "caption"))
    # a corrected template: compared again, and the pair on the stage follows it
    fixed = _img("L", fmt="PNG")
    at.file_uploader(key=template_uploader).set_value(("golden2.png", fixed, "image/png")).run()
    assert not at.exception and not at.error and (stage / f"{base}_temp.png").read_bytes() == fixed
    at.file_uploader(key=template_uploader).set_value(("golden.bmp", template, "image/bmp")).run()  # and back
    assert (stage / f"{base}_temp.png").read_bytes() == vision.stored_format(template)[1]
    # another board: the first board's template is not carried over to it
    other = _img("RGB", size=(640, 640), fmt="PNG")
    at.file_uploader(key="lab_upload").set_value(("other_board.png", other, "image/png")).run()
    assert not at.exception
    assert any("upload its template below" in e.value for e in at.error)
    # an upload named like a stage board: compared with that board's template, and saved with a copy of it
    at = page(VISION_LAB)
    raw = board_files[1].read_bytes()
    at.file_uploader(key="lab_upload").set_value((board_files[1].name, raw, "image/jpeg")).run()
    assert not at.exception and not at.error
    base = vision.safe_upload_name(board_files[1].name, raw, "")[: -len("_test")]
    stage_template = next(board_files[1].parent.glob(board_files[1].stem[: -len("_test")] + "_temp.*"))
    assert (stage / f"{base}_test.jpg").read_bytes() == raw
    assert (stage / f"{base}_temp{stage_template.suffix}").read_bytes() == stage_template.read_bytes()
    # a template the stage cannot serve: a clear error naming it, not a traceback
    monkeypatch.setattr(vision, "fetch_bytes", lambda *a, **k: (_ for _ in ()).throw(OSError("stage offline")))
    at = page(VISION_LAB)
    at.file_uploader(key="lab_upload").set_value((board_files[2].name, board_files[2].read_bytes(),
                                                  "image/jpeg")).run()
    assert not at.exception
    assert any("cannot read the template" in e.value and "_temp" in e.value for e in at.error)


def _image_captions(at) -> list[str]:
    return [c for im in elements(at, "image") for c in im.captions]


def test_chat_toggle_between_data_and_manuals(use_app_home):
    at = page(VISION_LAB)
    assert at.radio(key="chat_mode").options == list(chat.MODES)
    at.radio(key="chat_mode").set_value(chat.QUERY_DATA).run()
    at.chat_input(key="chat_input").set_value("How many defects per factory line?").run()
    assert not at.exception
    assert any("DEFECT_LOGS" in c.value for c in at.code) and any("Sources" in t for t in texts(at)) is False
    at.radio(key="chat_mode").set_value(chat.QUERY_MANUALS).run()
    at.chat_input(key="chat_input").set_value("How do I repair a short?").run()
    assert not at.exception
    md = texts(at)
    assert "**Sources**" in md
    assert any(t.startswith("- [1] ") and ".pdf" in t for t in md), md
    users = [t for t in md if t in ("How many defects per factory line?", "How do I repair a short?")]
    assert users == ["How many defects per factory line?", "How do I repair a short?"]  # history kept in order


def test_choosing_a_detected_defect_asks_how_to_repair_it(use_app_home, board_files):
    at = page(VISION_LAB)
    at.file_uploader(key="lab_upload").set_value(("board.jpg", board_files[1].read_bytes(), "image/jpeg")).run()
    at.slider(key="lab_conf").set_value(0.0).run()
    at.selectbox(key="lab_defect").select_index(0).run()
    first_class = at.dataframe[0].value["class"].iloc[0]
    button = at.button(key="lab_repair")
    assert button.label == f"How do I repair a {first_class}?"
    button.click().run()
    assert not at.exception
    assert at.radio(key="chat_mode").value == chat.QUERY_MANUALS
    md = texts(at)
    assert f"How do I repair a {first_class}?" in md and "**Sources**" in md


def _img(mode: str, size=(640, 640), fmt="PNG") -> bytes:
    arr = np.zeros((size[1], size[0]), np.uint8)
    arr[200:260, 100:500] = 255
    buf = io.BytesIO()
    Image.fromarray(arr).convert(mode).save(buf, format=fmt)
    return buf.getvalue()


BAD = [
    ("empty.jpg", b"", "the file is empty"),
    ("manual.pdf", b"%PDF-1.7\n1 0 obj\n<<>>\nendobj\n", "not an image"),
    ("truncated.jpg", None, "corrupt or truncated"),
    ("huge.png", None, "too large"),
    ("tiny.png", _img("L", (20, 20)), "too small"),
]


def test_bad_inputs_get_a_clear_message_and_the_page_keeps_working(use_app_home, board_files):
    at = page(VISION_LAB)
    good = board_files[2].read_bytes()
    sys_path = __import__("sys").path
    sys_path.insert(0, str(Path(__file__).parent))
    from test_app_vision import png_with_header_size

    cases = [(n, good[: len(good) // 3] if n == "truncated.jpg" else png_with_header_size(9000, 9000)
              if n == "huge.png" else b, msg) for n, b, msg in BAD]
    uploads_before = set((use_app_home / "stage" / "uploads").glob("*")) if (
        use_app_home / "stage" / "uploads").is_dir() else set()
    for name, payload, message in cases:
        at.file_uploader(key="lab_upload").set_value((name, payload, "application/octet-stream")).run()
        assert not at.exception, name
        errors = [e.value for e in at.error]
        assert len(errors) == 1 and message in errors[0] and errors[0].startswith(f"Cannot inspect this file. {name}")
    after = set((use_app_home / "stage" / "uploads").glob("*")) if (use_app_home / "stage" / "uploads").is_dir() \
        else set()
    assert after == uploads_before, "bad input is never written to the stage"
    # grayscale, RGBA and an odd size are accepted (converted), with a note for the size
    for name, payload in [("gray.png", _img("L")), ("rgba.png", _img("RGBA")), ("odd.jpg", _img("RGB", (800, 500),
                                                                                                    "JPEG"))]:
        at.file_uploader(key="lab_upload").set_value((name, payload, "image/png")).run()
        assert not at.exception and not at.error, name
        assert any("Model pcb_defect_detector" in c for c in texts(at, "caption"))
    assert any("800x500" in i.value for i in at.info)
    # and the page still works: a good board and a chat answer
    at.file_uploader(key="lab_upload").set_value(("good.jpg", good, "image/jpeg")).run()
    assert not at.error
    at.radio(key="chat_mode").set_value(chat.QUERY_MANUALS)
    at.chat_input(key="chat_input").set_value("How do I repair an open?").run()
    assert not at.exception and "**Sources**" in texts(at)


def test_without_a_champion_the_pages_say_what_to_do(tmp_path, monkeypatch):
    from pcb_pipeline import settings

    home = tmp_path / "empty_home"
    monkeypatch.setenv("PCB_HOME", str(home))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", settings.Paths(home).mlflow_uri)
    settings.configure()
    import mlflow

    original = mlflow.get_tracking_uri()
    try:
        dash = page(DASHBOARD)
        assert any("No boards have been inspected yet" in i.value for i in dash.info)
        lab = page(VISION_LAB)
        lab.file_uploader(key="lab_upload").set_value(("b.png", _img("L"), "image/png")).run()
        assert not lab.exception
        assert any("No champion model is registered yet" in w.value for w in lab.warning)
    finally:
        mlflow.set_tracking_uri(original)
        mlflow.set_registry_uri(original)
