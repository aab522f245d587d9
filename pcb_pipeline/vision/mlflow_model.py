"""MLflow "model from code" for the detector: the registry stores this file plus the weights, never a pickle.

Input: a DataFrame with a column `image_path` (or `image_bytes`) and optional `board_id`; a reference-aware model
(``Detector.needs_template``) also reads each board's template from `template_path` (or `template_bytes`).
Output: one row per detection: board_id, class_id, class_name, confidence, x1, y1, x2, y2.
"""
from __future__ import annotations

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel

OUTPUT_COLUMNS = ["board_id", "class_id", "class_name", "confidence", "x1", "y1", "x2", "y2"]


class PCBDefectDetectorModel(PythonModel):
    def load_context(self, context):
        from pcb_pipeline.vision.detector import Detector

        self.detector = Detector(context.artifacts["weights"])

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        from pcb_pipeline.core.images import decode_image, read_image

        rows = []
        for i, rec in enumerate(model_input.to_dict("records")):
            if rec.get("image_bytes") is not None:
                image = decode_image(rec["image_bytes"], f"row {i}")
            else:
                image = read_image(rec["image_path"])
            board = rec.get("board_id") or str(i)
            kwargs = {}
            if self.detector.needs_template:
                if rec.get("template_bytes") is not None:
                    kwargs["templates"] = [decode_image(rec["template_bytes"], f"row {i} template")]
                else:
                    kwargs["templates"] = [read_image(rec["template_path"]) if rec.get("template_path") else None]
            for d in self.detector.predict([image], **kwargs)[0]:
                rows.append({"board_id": board, **{k: v for k, v in d.to_dict().items()}})
        return pd.DataFrame(rows, columns=OUTPUT_COLUMNS)


mlflow.models.set_model(PCBDefectDetectorModel())
