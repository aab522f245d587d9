"""Every SQL statement the Snowflake stage and warehouse send, built in one place from validated parts.

Builders are pure (strings in, a statement out) so tests can run each one against fakesnow and check its exact text.
Stage paths are restricted to a conservative character set, so they are sent unquoted (fakesnow and Snowflake agree
on that form) and PATTERN regexes need no backslash escaping.
"""
from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*$")
STAGE_PATH = re.compile(r"^[A-Za-z0-9_.=+-]+(/[A-Za-z0-9_.=+-]+)*$")
LOCAL_PATH_UNSAFE = re.compile(r"['\\*?\[\]]")


class UnsafeNameError(ValueError):
    pass


def identifier(name: str) -> str:
    """An unquoted identifier, optionally qualified (DB.SCHEMA.NAME)."""
    parts = str(name).split(".")
    if not name or len(parts) > 3 or not all(IDENTIFIER.match(p) for p in parts):
        raise UnsafeNameError(f"refusing unsafe SQL identifier {name!r}")
    return str(name)


def stage_path(path: str) -> str:
    """A relative stage path: no '..', no leading '/', only [A-Za-z0-9_.=+-] segments."""
    raw = str(path).replace("\\", "/")
    p = raw.rstrip("/")
    if p in ("", "."):
        return ""
    if raw.startswith("/") or ".." in PurePosixPath(p).parts or not STAGE_PATH.match(p):
        raise UnsafeNameError(f"stage path {path!r} must be relative, stay inside the stage and use only letters, "
                              f"digits and _ . = + - between slashes")
    return str(PurePosixPath(p))


def location(stage: str, path: str = "", directory: bool = False) -> str:
    """@STAGE/path, with a trailing slash for a directory (so prefixes match whole folders only)."""
    p = stage_path(path)
    loc = f"@{identifier(stage)}" + (f"/{p}" if p else "")
    return loc + "/" if directory and p else loc


def file_uri(local: Path) -> str:
    """'file:///abs/path' in single quotes (spaces are fine; quotes, backslashes and glob characters are not)."""
    text = Path(local).resolve().as_posix()
    if LOCAL_PATH_UNSAFE.search(text):
        raise UnsafeNameError(f"local path {text!r} contains a quote, backslash or glob character")
    return f"'file://{text}'"


def dir_glob_uri(local_dir: Path) -> str:
    """'file:///abs/dir/*': every file directly in a local folder (PUT expands the wildcard client side)."""
    return file_uri(Path(local_dir)).rstrip("'") + "/*'"


def pattern_for_children(directory: str) -> str:
    """A PATTERN regex for the files directly inside a stage directory, whether Snowflake matches it against
    'dir/file' or 'stage_name/dir/file', fully or partially. Only '.' and '+' need escaping; brackets do it."""
    escaped = stage_path(directory).replace(".", "[.]").replace("+", "[+]")
    return f"(.*/)?{escaped}/[^/]+$" if escaped else "[^/]+$"


def pattern_for_file(path: str) -> str:
    escaped = stage_path(path).replace(".", "[.]").replace("+", "[+]")
    return f"(.*/)?{escaped}$"


# --------------------------------------------------------------------------------------------------------- stage
def put(local: Path | str, stage: str, target_dir: str, glob: bool = False) -> str:
    src = dir_glob_uri(Path(local)) if glob else file_uri(Path(local))
    return f"PUT {src} {location(stage, target_dir, directory=True)} AUTO_COMPRESS = FALSE OVERWRITE = TRUE"


def get(stage: str, path: str, local_dir: Path, pattern: str | None = None, directory: bool = False) -> str:
    sql = f"GET {location(stage, path, directory=directory)} {file_uri(Path(local_dir)).rstrip(chr(39))}/'"
    return sql + (f" PATTERN = '{pattern}'" if pattern else "")


def list_files(stage: str, prefix: str = "") -> str:
    return f"LIST {location(stage, prefix)}"


def remove(stage: str, path: str, directory: bool) -> str:
    if directory:
        return f"REMOVE {location(stage, path, directory=True)}"
    return f"REMOVE {location(stage, path)} PATTERN = '{pattern_for_file(path)}'"


# ----------------------------------------------------------------------------------------------------- warehouse
def describe_table(table: str) -> str:
    return f"DESCRIBE TABLE {identifier(table)}"


def create_temp_table(name: str, columns: list[tuple[str, str]]) -> str:
    cols = ", ".join(f"{identifier(c)} {_type(t)}" for c, t in columns)
    return f"CREATE TEMPORARY TABLE {identifier(name)} ({cols})"


def drop_table(name: str) -> str:
    return f"DROP TABLE IF EXISTS {identifier(name)}"


def delete_where(table: str, key_column: str) -> str:
    """DELETE with one bound parameter (pyformat, the connector's default)."""
    return f"DELETE FROM {identifier(table)} WHERE {identifier(key_column)} = %s"


def insert_select(table: str, source: str, columns: list[str], variant: set[str]) -> str:
    cols = ", ".join(identifier(c) for c in columns)
    exprs = ", ".join(_value(c, variant) for c in columns)
    return f"INSERT INTO {identifier(table)} ({cols}) SELECT {exprs} FROM {identifier(source)}"


def merge(table: str, source: str, key_columns: list[str], columns: list[str], variant: set[str]) -> str:
    """MERGE from the staging table; semi-structured columns are parsed in a subquery source, so the MERGE itself
    only moves plain column values (fakesnow's MERGE only carries columns referenced directly)."""
    on = " AND ".join(f"t.{identifier(k)} = s.{identifier(k)}" for k in key_columns)
    updates = [c for c in columns if c not in key_columns]
    cols = ", ".join(identifier(c) for c in columns)
    values = ", ".join(f"s.{identifier(c)}" for c in columns)
    if any(c.upper() in variant for c in columns):
        parsed = ", ".join(f"{_value(c, variant)} AS {identifier(c)}" if c.upper() in variant else identifier(c)
                           for c in columns)
        using = f"(SELECT {parsed} FROM {identifier(source)})"
    else:
        using = identifier(source)
    sql = f"MERGE INTO {identifier(table)} AS t USING {using} AS s ON {on}"
    if updates:
        sets = ", ".join(f"{identifier(c)} = s.{identifier(c)}" for c in updates)
        sql += f" WHEN MATCHED THEN UPDATE SET {sets}"
    return sql + f" WHEN NOT MATCHED THEN INSERT ({cols}) VALUES ({values})"


BEGIN, COMMIT, ROLLBACK = "BEGIN", "COMMIT", "ROLLBACK"

SEMI_STRUCTURED = ("VARIANT", "OBJECT", "ARRAY")


def _type(t: str) -> str:
    t = str(t).upper().strip()
    if not re.match(r"^[A-Z_]+(\(\d+(,\s*\d+)?\))?$", t):
        raise UnsafeNameError(f"refusing unexpected column type {t!r}")
    return t


def _value(column: str, variant: set[str], prefix: str = "") -> str:
    """Semi-structured columns arrive as JSON text in the staging table: PARSE_JSON makes them real values."""
    ref = f"{prefix}{identifier(column)}"
    return f"PARSE_JSON({ref})" if column.upper() in variant else ref
