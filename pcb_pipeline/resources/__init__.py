"""Files a run needs, shipped inside the package (importlib.resources), so an installed wheel works anywhere.

- sql/: tables.sql, cortex_search.sql, semantic_model.yaml. The repository's top-level sql/ is the admin-facing
  copy of the same files (a test keeps them byte-identical); sql/setup/ is admin-only and stays there.
- manuals/: the SOP / repair manual sources that the sop_documents asset renders to PDF.
"""
from __future__ import annotations

from importlib.resources import as_file, files
from pathlib import Path

PACKAGED_SQL_FILES = ("tables.sql", "cortex_search.sql", "semantic_model.yaml")


def resource_dir(name: str) -> Path:
    """A packaged resource folder as a real path (wheels and editable installs unpack to the file system)."""
    with as_file(files(__name__) / name) as path:
        return Path(path)


def sql_dir() -> Path:
    return resource_dir("sql")


def manuals_dir() -> Path:
    return resource_dir("manuals")
