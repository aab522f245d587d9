from pcb_pipeline import settings
from pcb_pipeline.app.dashboard import render

settings.configure()
render()
