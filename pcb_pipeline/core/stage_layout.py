"""Where things live on the stage (the local folder or the Snowflake internal stage): one home for every prefix and
limit that the assets, the upload sensor, the app and the Snowflake code share."""
from __future__ import annotations

RAW_PREFIX = "raw/deeppcb"  # a landed Deep PCB folder: RAW_PREFIX/PCBData/<split>.txt, groups, labels
RAW_DATA_PREFIX = f"{RAW_PREFIX}/PCBData"  # the boards, templates, labels and split files themselves
DATASET_PREFIX = "datasets/yolo"  # the YOLO dataset (data.yaml, images/, labels/)
HELDOUT_PREFIX = f"{DATASET_PREFIX}/images/val"  # the held-out boards batch inference runs on
UPLOAD_PREFIX = "uploads"  # the app writes uploads here; the upload sensor watches it
# The largest upload anyone may put there (app or script): a 640x640 Deep PCB board is ~50 kB, a 6000x6000 scan PNG
# fits; the decoder's pixel limit (core.images.MAX_PIXELS) guards the rest.
MAX_UPLOAD_BYTES = 64 * 1024 * 1024
