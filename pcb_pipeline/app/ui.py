"""Streamlit glue shared by both pages: backends and the model cached per process, chat rendering."""
from __future__ import annotations

import os

import pandas as pd
import streamlit as st

from pcb_pipeline import settings

from . import chat


def backend_key() -> str:
    """Cache key for everything that depends on where data lives (backend and PCB_HOME)."""
    return f"{os.environ.get('PCB_BACKEND', 'local').strip().lower()}|{settings.pcb_home()}"


@st.cache_resource(show_spinner=False)
def _stage(key: str):
    from pcb_pipeline.backends.factory import stage

    return stage()


@st.cache_resource(show_spinner=False)
def _warehouse(key: str):
    from pcb_pipeline.backends.factory import warehouse

    return warehouse(read_only=True)  # the app only reads; it never holds the pipeline's write lock


def get_stage():
    return _stage(backend_key())


def get_warehouse():
    return _warehouse(backend_key())


@st.cache_data(ttl=60, show_spinner=False)
def _champion(key: str):
    from .model import champion_version

    return champion_version()


def champion():
    """The champion ModelVersion (checked at most once a minute), or raise NoChampionError."""
    return _champion(backend_key())


@st.cache_resource(show_spinner="Loading the champion model ...", max_entries=2)
def _detector(key: str, version: str, run_id: str):
    from .model import champion_weights, load_detector

    return load_detector(champion_weights(champion()))


def get_detector():
    """The champion's Detector, loaded once per process and per champion version."""
    v = champion()
    return _detector(backend_key(), v.version, v.run_id), v


def knowledge_clients(mode: str) -> tuple[object | None, object | None]:
    """(analyst, search) for ask_data / ask_manuals from the backend factory: the local engines, or on
    PCB_BACKEND=snowflake Cortex Search for the manuals and Cortex Analyst for the data (PCB_DATA_ANALYST; the local
    engine answers, and says so, when Analyst cannot). Only the one the mode needs is built (the other is None), so
    a data question never loads the manual index."""
    from pcb_pipeline.backends import factory

    if mode == chat.QUERY_MANUALS:
        return None, factory.manual_search()
    return session_analyst(), None


def session_analyst():
    """This browser session's data analyst, kept across questions so that Cortex Analyst follows the conversation
    (multi-turn); a new one when the backend or PCB_DATA_ANALYST changes."""
    from pcb_pipeline.backends import factory

    key = f"{backend_key()}|{os.environ.get('PCB_DATA_ANALYST', '')}"
    held = st.session_state.get("_data_analyst")
    if not held or held[0] != key:
        analyst = factory.data_analyst()
        if hasattr(analyst, "multi_turn"):
            analyst.multi_turn = True
        st.session_state["_data_analyst"] = held = (key, analyst)
    return held[1]


def ask(mode: str, question: str, category: str | None = None) -> dict:
    try:
        analyst, search = knowledge_clients(mode)
    except Exception as e:  # noqa: BLE001 - missing credentials etc.: say so in the chat
        return chat._error(mode, f"The {mode.lower()} service is not available: {e}")
    return chat.answer(mode, question, warehouse_factory=get_warehouse, category=category, analyst=analyst,
                       search=search)


def feedback_buttons(request_id: str) -> None:
    """Thumbs up / down on a Cortex Analyst answer, sent once to its feedback endpoint."""
    choice = st.feedback("thumbs", key=f"analyst_feedback_{request_id}")
    sent = st.session_state.setdefault("_feedback_sent", set())
    if choice is None or request_id in sent:
        return
    try:
        session_analyst().feedback(request_id, positive=choice == 1)
        sent.add(request_id)
        st.caption("Thanks: sent to Cortex Analyst.")
    except Exception as e:  # noqa: BLE001 - feedback is optional; say so, never break the page
        st.caption(f"Feedback not sent: {type(e).__name__}: {e}")


def render_message(msg: dict) -> None:
    """One chat message: text; for data answers the table and the SQL; for manual answers the citations."""
    with st.chat_message(msg["role"], avatar=None):
        if msg["role"] == "user":
            st.markdown(msg["text"])
            return
        if msg.get("error"):
            st.error(msg["text"])
            return
        st.markdown(msg["text"])
        if msg.get("columns"):
            st.dataframe(pd.DataFrame(msg["rows"], columns=msg["columns"]), hide_index=True)
        if msg.get("sql"):
            with st.expander("SQL"):
                st.code(msg["sql"], language="sql")
        if msg.get("suggestions"):
            st.caption("Try: " + " | ".join(msg["suggestions"][:4]))
        if msg.get("request_id") and msg.get("source") == "cortex_analyst":
            feedback_buttons(msg["request_id"])
        if msg.get("citations"):
            st.markdown("**Sources**")
            for c in msg["citations"]:
                st.markdown(f"- {chat.citation_label(c)}")
            with st.expander("Cited passages"):
                for c in msg["citations"]:
                    st.markdown(f"**{chat.citation_label(c)}**")
                    st.caption(str(c.get("text", ""))[:600])
