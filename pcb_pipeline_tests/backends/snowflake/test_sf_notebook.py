"""The Snowflake Notebook: valid, uses only the package's functions, and its in-Snowflake helpers work."""
from __future__ import annotations

import ast
import importlib
import json
import zipfile
from pathlib import Path

NOTEBOOK = Path(__file__).resolve().parents[3] / "notebooks" / "pcb_training_snowflake.ipynb"


def _code_cells() -> list[str]:
    nb = json.loads(NOTEBOOK.read_text())
    assert nb["nbformat"] == 4 and nb["metadata"]["kernelspec"]["language"] == "python"
    return ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]


def test_cells_compile_and_import_only_what_exists():
    imported = []
    for src in _code_cells():
        python = "\n".join("pass" if line.lstrip().startswith("!") else line for line in src.splitlines())
        tree = ast.parse(python)
        assert not [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef))], \
            "the notebook calls the package; it defines no logic of its own"
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module.startswith("pcb_pipeline"):
                module = importlib.import_module(node.module)
                for alias in node.names:
                    assert hasattr(module, alias.name), f"{node.module}.{alias.name}"
                    imported.append(f"{node.module}.{alias.name}")
    assert {"pcb_pipeline.vision.train.train", "pcb_pipeline.backends.local.collect_training_output",
            "pcb_pipeline.backends.snowflake.connect.notebook_backends",
            "pcb_pipeline.vision.detector.Detector"} <= set(imported)
    from pcb_pipeline.backends.snowflake.connect import PACKAGE_ZIP

    assert f"@MODEL_STAGE/{PACKAGE_ZIP}" in "".join(_code_cells())


class _Session:
    def __init__(self, connection):
        self.connection = connection

    def get_current_database(self):
        return '"PCB"'

    def get_current_schema(self):
        return '"PIPELINE"'


def test_notebook_backends_and_package_publishing(connect, tmp_path):
    from pcb_pipeline.backends.snowflake.connect import PACKAGE_ZIP, notebook_backends, publish_package

    with connect() as conn:
        b = notebook_backends(_Session(conn))
        assert b["stage"].uri("x") == "@PCB.PIPELINE.MODEL_STAGE/x"
        assert publish_package(b["stage"]) == PACKAGE_ZIP
        got = b["stage"].get_file(PACKAGE_ZIP, tmp_path / "p.zip")
        names = zipfile.ZipFile(got).namelist()
        assert "pcb_pipeline/vision/train.py" in names and not any("__pycache__" in n for n in names)
        b["warehouse"].ensure_schema()
        assert b["warehouse"].query("SELECT COUNT(*) AS n FROM DEFECT_LOGS")["n"][0] == 0
        assert b["registry"].database == "PCB" and b["registry"].schema == "PIPELINE"
