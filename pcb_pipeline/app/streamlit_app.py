"""Entry script: `streamlit run pcb_pipeline/app/streamlit_app.py` (or `pcb-pipeline app`)."""
from pathlib import Path

import streamlit as st

from pcb_pipeline import settings

settings.configure()
st.set_page_config(page_title="PCB defect intelligence", page_icon=":mag:", layout="wide")

VIEWS = Path(__file__).resolve().parent / "views"
page = st.navigation([
    st.Page(VIEWS / "dashboard.py", title="Executive Dashboard", icon=":material/monitoring:", default=True),
    st.Page(VIEWS / "vision_lab.py", title="Vision Lab", icon=":material/center_focus_strong:", url_path="vision_lab"),
])
page.run()
