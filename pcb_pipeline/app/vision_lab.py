"""Vision Lab page. Left: an uploaded image or a board from the stage with boxes, confidences, a confidence slider and
the ground truth when the board is labelled. Right: a chat that queries the data or the repair manuals."""
from __future__ import annotations

import streamlit as st

from pcb_pipeline import settings
from pcb_pipeline.core.reference import MissingTemplateError, TemplateError

from . import chat, ui, vision

UPLOAD, STAGE = "Upload an image", "Board from the stage"
CONF_DEFAULT = 0.25


@st.cache_data(ttl=60, show_spinner=False)
def _boards(key: str) -> list[vision.StageBoard]:
    return vision.list_stage_boards(ui.get_stage())


def _cache_dir():
    return settings.paths().work / "app" / "stage_cache"


# ----------------------------------------------------------------------------------------------------- callbacks
def _ask_repair(class_name: str) -> None:
    st.session_state["chat_mode"] = chat.QUERY_MANUALS
    st.session_state["chat_pending"] = (chat.repair_question(class_name), class_name)


# ------------------------------------------------------------------------------------------------- left column
def _current_image() -> dict | None:
    """{"name", "data", "origin", "board"} for the image to inspect, or None."""
    source = st.radio("Image", (UPLOAD, STAGE), horizontal=True, key="lab_source", label_visibility="collapsed")
    if source == UPLOAD:
        f = st.file_uploader("Board image (JPEG, PNG, BMP, TIFF, WebP)", key="lab_upload",
                             help=f"Up to {vision.MAX_UPLOAD_BYTES // 2**20} MB. The upload is also saved to the "
                                  "stage's uploads/ folder, where the inference sensor logs it to DEFECT_LOGS.")
        if f is None:
            return None
        data = f.getvalue()
        try:
            board = vision.board_for_upload(f.name, _boards(ui.backend_key()))
        except Exception:  # noqa: BLE001 - no stage listing: no ground truth, still inspect
            board = None
        return {"name": f.name, "data": data, "origin": "upload", "board": board}
    try:
        boards = _boards(ui.backend_key())
    except Exception as e:  # noqa: BLE001
        st.error(f"The stage could not be listed: {type(e).__name__}: {e}")
        return None
    if not boards:
        st.info(f"No Deep PCB boards on the stage yet (under {vision.RAW_DATA_PREFIX}/). Run `pcb-pipeline demo` or "
                "materialise `raw_pcb_images`, or upload an image.")
        return None
    board = st.selectbox("Board", boards, format_func=lambda b: b.label, key="lab_board")
    try:
        data = vision.fetch_bytes(ui.get_stage(), board.image_path, _cache_dir())
    except Exception as e:  # noqa: BLE001
        st.error(f"Could not read {board.image_path} from the stage: {type(e).__name__}: {e}")
        return None
    return {"name": board.image_path.rsplit("/", 1)[-1], "data": data, "origin": "stage", "board": board}


def _inspection(current: dict, detector) -> vision.Inspection:
    """Decode + detect once per image content; later reruns (slider, chat) reuse the result."""
    digest = vision.sha256(current["data"])
    board = current.get("board")
    template = _template_file(current) if detector.needs_template else None  # (name, bytes)
    current["template_used"] = template
    # same bytes picked as a stage board get its ground truth; a new champion model or template re-inspects
    key = (digest, board.image_path if board is not None else None, id(detector),
           vision.sha256(template[1]) if template else None)
    cached = st.session_state.get("lab_inspection")
    if cached is not None and cached[0] == key:
        return cached[1]
    image = vision.load_image(current["data"], current["name"])  # BadImageError: shown by the caller
    insp = vision.inspect_image(detector, image, vision.display_name(current["name"]), digest,
                                template=_decode_template(*template) if template else None)
    if board is not None:
        try:
            insp.ground_truth = vision.ground_truth(ui.get_stage(), board, (insp.width, insp.height),
                                                    _cache_dir())
        except Exception as e:  # noqa: BLE001 - bad or unreadable labels: inspect without ground truth
            insp.notes.append(f"Ground truth not shown: {e}")
    st.session_state["lab_inspection"] = (key, insp)
    return insp


def _template_file(current: dict) -> tuple[str, bytes]:
    """A reference-aware champion's second input, (name, bytes): the template uploaded beside the board, else the
    stage board's template (TemplateError if neither)."""
    if current.get("template"):
        return current["template"]
    board = current.get("board")
    if board is None or not board.template_path:
        raise MissingTemplateError(
            "The champion model compares each board with its defect-free template, and this image has none: "
            + ("upload its template below" if current["origin"] == "upload" else "pick a board that has one"))
    try:
        return board.template_path.rsplit("/", 1)[-1], vision.fetch_bytes(ui.get_stage(), board.template_path,
                                                                          _cache_dir())
    except Exception as e:  # noqa: BLE001 - stage failure: this board cannot be compared, say which file
        raise TemplateError(f"cannot read the template {board.template_path} ({type(e).__name__})") from None


def _decode_template(name: str, data: bytes):
    try:
        return vision.load_image(data, name)
    except vision.BadImageError as e:  # said as the template's problem, not the board's
        raise TemplateError(f"the template {e}") from None


def _template_upload(current: dict) -> None:
    """For a reference-aware champion: the uploaded board's template (golden board), optional when the stage has
    one for a board of that name."""
    board = current.get("board")
    on_stage = board is not None and board.template_path
    f = st.file_uploader("Its template: the same board without defects" + (" (optional: the stage has one)"
                                                                           if on_stage else ""),
                         key=f"lab_template_upload_{vision.sha256(current['data'])[:12]}",  # one per board
                         help="The champion compares the board with its defect-free template (golden board). "
                              "Both are saved to the stage's uploads/ folder as <id>_test / <id>_temp.")
    if f is not None:
        current["template"] = (f.name, f.getvalue())


def _save_upload(current: dict, insp: vision.Inspection) -> None:
    """The upload (and the template it was compared with, if any) to uploads/, once per content."""
    template = current.get("template_used")
    template_sha = vision.sha256(template[1]) if template else None
    saved = st.session_state.setdefault("lab_uploaded", {})  # board sha -> (stage path, template sha written)
    if insp.sha256 not in saved or saved[insp.sha256][1] != template_sha:
        try:  # a board saved with another template is written again: the stage holds what the page shows
            saved[insp.sha256] = (vision.write_upload(ui.get_stage(), current["data"], current["name"],
                                                      settings.paths().work,
                                                      template=template[1] if template else None), template_sha)
        except Exception as e:  # noqa: BLE001 - the inspection is still shown
            st.warning(f"The upload could not be saved to the stage: {type(e).__name__}: {e}")
            return
    st.caption(f"Saved to the stage as `{saved[insp.sha256][0]}`" + (" with its template beside it" if template
                                                                    else "")
               + ": the inference sensor logs it to DEFECT_LOGS.")


def _left() -> None:
    st.subheader("Inspect a board")
    current = _current_image()
    conf = st.slider("Confidence threshold", min_value=0.0, max_value=0.95, value=CONF_DEFAULT, step=0.01,
                     key="lab_conf", help="Boxes at or above this confidence are shown; 0 shows every candidate.")
    if current is None:
        return
    try:
        detector, version = ui.get_detector()
    except Exception as e:  # noqa: BLE001 - NoChampionError or a registry failure
        st.warning(str(e))
        return
    if current["origin"] == "upload" and detector.needs_template:
        _template_upload(current)
    try:
        insp = _inspection(current, detector)
    except (vision.BadImageError, TemplateError) as e:
        st.session_state.pop("lab_inspection", None)
        st.error(f"Cannot inspect this file. {e}.")
        return
    shown = insp.above(conf)
    show_gt = False
    if insp.ground_truth is not None:
        show_gt = st.checkbox(f"Show ground truth ({len(insp.ground_truth)} labelled defects, green)", value=True,
                              key="lab_show_gt")
    annotated = vision.render(insp, conf, show_gt)
    st.markdown(f"**{vision.summary(shown, conf)}**")
    st.image(vision.for_display(annotated), channels="BGR", width="stretch",
             caption=f"{insp.name}: predicted boxes with class and confidence"
                     + ("; ground truth in green" if show_gt else ""))
    for note in insp.notes:
        st.info(note)
    st.caption(f"Model {version.name} v{version.version} ({detector.backend}), {insp.width}x{insp.height} px")
    if current["origin"] == "upload":
        _save_upload(current, insp)
    if shown:
        st.dataframe(vision.detections_table(shown), hide_index=True, key="lab_detections")
        picked = st.selectbox("Ask about a detected defect", range(len(shown)), key="lab_defect",
                              format_func=lambda i: f"#{i + 1} {shown[i].class_name} ({shown[i].confidence:.2f})")
        cls = shown[min(picked or 0, len(shown) - 1)].class_name
        st.button(chat.repair_question(cls), key="lab_repair", on_click=_ask_repair, args=(cls,), type="primary")


# ------------------------------------------------------------------------------------------------ right column
def _right() -> None:
    st.subheader("Ask")
    mode = st.radio("Ask about", chat.MODES, horizontal=True, key="chat_mode",
                    help="Query Data: plain-English questions over DEFECT_LOGS and BOARD_INSPECTIONS. "
                         "Query Manuals: cited answers from the repair SOPs.")
    history: list[dict] = st.session_state.setdefault("chat_history", [])
    box = st.container(height=560)
    placeholder = ("e.g. How many defects per factory line last week?" if mode == chat.QUERY_DATA
                   else "e.g. How do I repair a short?")
    typed = st.chat_input(placeholder, key="chat_input")
    pending = st.session_state.pop("chat_pending", None)
    question, category = (typed, None) if typed else (pending if pending else (None, None))
    with box:
        for msg in history:
            ui.render_message(msg)
        if question:
            user = chat.user_message(question, mode)
            ui.render_message(user)
            with st.spinner("Searching the manuals ..." if mode == chat.QUERY_MANUALS else "Querying the data ..."):
                reply = ui.ask(mode, question, category)
            ui.render_message(reply)
            history.extend([user, reply])
        elif not history:
            st.caption("Ask a question, or pick a detected defect and press \"How do I repair ...\".")
    if history and st.button("Clear chat", key="chat_clear"):
        history.clear()
        st.rerun()


def render() -> None:
    st.title("Vision Lab")
    left, right = st.columns([3, 2], gap="large")
    with left:
        _left()
    with right:
        _right()
