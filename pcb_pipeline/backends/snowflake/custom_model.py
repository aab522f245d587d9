"""The detector as a Snowflake Model Registry custom model.

Input (one row per image):  IMAGE (BYTES, the encoded jpg/png; nullable), IMAGE_PATH (STRING), BOARD_ID (STRING),
  TEMPLATE (BYTES, the board's template, i.e. its golden board; nullable), TEMPLATE_PATH (STRING; nullable)
  - run_batch fills IMAGE (and TEMPLATE) from a stage path column (InputFormat.FULL_STAGE_PATH ->
    FileEncoding.RAW_BYTES); BASE64 / BASE64_DATA_URL strings are decoded too;
  - without IMAGE the model reads IMAGE_PATH as a local file (local tests, a notebook on the container);
  - an empty BOARD_ID is derived from the image name (`20085000_test.jpg` -> `20085000`);
  - a reference-aware model (`Detector.needs_template`, stamped `pcb_input=reference`) takes each row's template from
    TEMPLATE, else reads TEMPLATE_PATH as a local file; a row with neither (or with the NO_TEMPLATE placeholder that
    `RegistryInference` sends for a board without one) gets the "needs its template" ERROR, the other rows go on.
    A test-image model never reads the template columns.
Output (one row per image, as Snowflake requires of a FUNCTION method: same rows in as out):
  BOARD_ID, IMAGE_PATH, IMAGE_WIDTH, IMAGE_HEIGHT, NUM_DETECTIONS, DETECTIONS (JSON array of
  {class_id, class_name, confidence, x1, y1, x2, y2}), ERROR ('' or why the image, or its template, could not be
  used).
One row per detection (class, confidence, box) is `explode_detections(output)` in Python, or
`LATERAL FLATTEN(PARSE_JSON(DETECTIONS))` in SQL.
Parameter: conf (FLOAT, default 0.25), the confidence threshold.

Artifacts: `weights` (best.pt, always: it carries the training image size) and `onnx` (best.onnx, preferred for
inference when present). The package travels as code_paths, so the container imports pcb_pipeline like here.
"""
# No `from __future__ import annotations` here: CustomModel checks predict's annotations at runtime and needs the
# real pandas.DataFrame type, not the string "pd.DataFrame".
import base64
import json
from pathlib import Path

import pandas as pd
from snowflake.ml.model import custom_model

INPUT_COLUMNS = ["IMAGE", "IMAGE_PATH", "BOARD_ID", "TEMPLATE", "TEMPLATE_PATH"]
OUTPUT_COLUMNS = ["BOARD_ID", "IMAGE_PATH", "IMAGE_WIDTH", "IMAGE_HEIGHT", "NUM_DETECTIONS", "DETECTIONS", "ERROR"]
DETECTION_COLUMNS = ["BOARD_ID", "IMAGE_PATH", "CLASS_ID", "CLASS_NAME", "CONFIDENCE", "X1", "Y1", "X2", "Y2"]
DEFAULT_CONF = 0.25
# What a TEMPLATE holds for a board that has no template when a batch job must still read a file for every row
# (inference.RegistryInference): the model takes it for "no template", as it does NULL.
NO_TEMPLATE = b"pcb_pipeline: this board has no template\n"


def signatures() -> dict:
    from snowflake.ml.model.model_signature import DataType, FeatureSpec, ModelSignature, ParamSpec

    return {"predict": ModelSignature(
        inputs=[FeatureSpec("IMAGE", DataType.BYTES, nullable=True), FeatureSpec("IMAGE_PATH", DataType.STRING),
                FeatureSpec("BOARD_ID", DataType.STRING), FeatureSpec("TEMPLATE", DataType.BYTES, nullable=True),
                FeatureSpec("TEMPLATE_PATH", DataType.STRING, nullable=True)],
        outputs=[FeatureSpec("BOARD_ID", DataType.STRING), FeatureSpec("IMAGE_PATH", DataType.STRING),
                 FeatureSpec("IMAGE_WIDTH", DataType.INT64), FeatureSpec("IMAGE_HEIGHT", DataType.INT64),
                 FeatureSpec("NUM_DETECTIONS", DataType.INT64), FeatureSpec("DETECTIONS", DataType.STRING),
                 FeatureSpec("ERROR", DataType.STRING)],
        params=[ParamSpec("conf", DataType.FLOAT, DEFAULT_CONF)],
    )}


def _get(rec: dict, name: str):
    for k, v in rec.items():
        if str(k).upper() == name:
            return v
    return None


# Bytes that mean "no value": the placeholder above, and b"None", which is what a NULL of a BYTES column becomes when
# snowflake-ml casts the input to the signature's dtypes (`astype(numpy.bytes_)` in its infer_function template).
_NO_BYTES = (NO_TEMPLATE, b"None")


def _image_bytes(value) -> bytes | None:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return None
    if isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
    elif isinstance(value, str) and value:  # BASE64 / BASE64_DATA_URL encodings of run_batch
        data = base64.b64decode(value.split(",", 1)[1] if value.startswith("data:") else value)
    else:
        return None
    return None if data in _NO_BYTES else data


def _read(value, path: str, name: str):
    """The image in a BYTES value (see _image_bytes), else the local file `path`; None when there is neither."""
    from pcb_pipeline.core.images import decode_image, read_image

    data = _image_bytes(value)
    if data is not None:
        return decode_image(data, path or name)
    return read_image(Path(path)) if path else None


class PCBDefectDetectorModel(custom_model.CustomModel):
    def __init__(self, context: custom_model.ModelContext) -> None:
        self._detector = None  # before super().__init__, which inspects every attribute
        super().__init__(context)

    def load_detector(self):
        """Loaded on first use, once per process (ONNX Runtime when the export is present, else PyTorch)."""
        if self._detector is None:
            from pcb_pipeline.vision.detector import Detector

            weights = Path(self.context.path("weights"))
            onnx = self.context.artifacts.get("onnx")
            # the registry keeps both artifacts in one folder, so the detector finds best.pt beside best.onnx (the
            # training image size) just as it does on the stage
            self._detector = (Detector(Path(onnx)) if onnx and Path(onnx).is_file()
                              else Detector(weights, prefer_onnx=False))
        return self._detector

    @custom_model.inference_api
    def predict(self, input_df: pd.DataFrame, *, conf: float = DEFAULT_CONF) -> pd.DataFrame:
        from pcb_pipeline.core.defect_logs import board_id_from_path
        from pcb_pipeline.core.images import BadImageError
        from pcb_pipeline.core.reference import TemplateError

        detector = self.load_detector()  # outside the rows' try: a model that cannot load fails the job, loudly
        rows = []
        for i, rec in enumerate(input_df.to_dict("records")):
            path = str(_get(rec, "IMAGE_PATH") or "")
            name = path or f"row {i}"
            board = str(_get(rec, "BOARD_ID") or "") or (board_id_from_path(path) if path else str(i))
            row = {"BOARD_ID": board, "IMAGE_PATH": path, "IMAGE_WIDTH": 0, "IMAGE_HEIGHT": 0, "NUM_DETECTIONS": 0,
                   "DETECTIONS": "[]", "ERROR": ""}
            try:
                image = _read(_get(rec, "IMAGE"), path, name)
                if image is None:
                    raise BadImageError(f"row {i}: neither IMAGE nor IMAGE_PATH given")
                kwargs = {}
                if detector.needs_template:  # None without one: the detector raises MissingTemplateError
                    kwargs["templates"] = [_read(_get(rec, "TEMPLATE"), str(_get(rec, "TEMPLATE_PATH") or ""),
                                                 f"{name} (template)")]
                dets = detector.predict([image], conf=float(conf), **kwargs)[0]
                row.update(IMAGE_WIDTH=int(image.shape[1]), IMAGE_HEIGHT=int(image.shape[0]),
                           NUM_DETECTIONS=len(dets), DETECTIONS=json.dumps([d.to_dict() for d in dets]))
            except BadImageError as e:
                row["ERROR"] = str(e)
            except TemplateError as e:  # no template for a reference-aware model, or one of another size
                row["ERROR"] = f"{name}: {e}"
            except Exception as e:  # one unreadable file must not fail a whole batch job
                row["ERROR"] = f"{name}: {type(e).__name__}: {e}"
            rows.append(row)
        return pd.DataFrame(rows, columns=OUTPUT_COLUMNS).astype(
            {"IMAGE_WIDTH": "int64", "IMAGE_HEIGHT": "int64", "NUM_DETECTIONS": "int64"})


def explode_detections(output: pd.DataFrame) -> pd.DataFrame:
    """One row per detection from predict()'s output (images without detections, or with errors, drop out)."""
    rows = []
    for rec in output.to_dict("records"):
        for d in json.loads(_get(rec, "DETECTIONS") or "[]"):
            rows.append([_get(rec, "BOARD_ID"), _get(rec, "IMAGE_PATH"), int(d["class_id"]), d["class_name"],
                         float(d["confidence"]), float(d["x1"]), float(d["y1"]), float(d["x2"]), float(d["y2"])])
    return pd.DataFrame(rows, columns=DETECTION_COLUMNS)


def model_context(weights: Path, onnx: Path | None = None) -> custom_model.ModelContext:
    artifacts = {"weights": str(weights)}
    if onnx is not None and Path(onnx).is_file():
        artifacts["onnx"] = str(onnx)
    return custom_model.ModelContext(**artifacts)
