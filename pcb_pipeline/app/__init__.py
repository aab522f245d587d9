"""Streamlit app: Executive Dashboard and Vision Lab.

Pure logic (testable without Streamlit): `data` (KPI SQL, Pareto, AOI false-call figures), `vision` (decode, detect,
draw, uploads, stage boards), `chat` (Query Data / Query Manuals through the knowledge API), `charts` (Altair).
Streamlit pages: `dashboard`, `vision_lab` (rendered by views/*.py under streamlit_app.py). Start it with
`pcb_pipeline.app.launch.launch()` (the `pcb-pipeline app` command).
"""
