from pcb_pipeline import settings
from pcb_pipeline.app.vision_lab import render

settings.configure()
render()
