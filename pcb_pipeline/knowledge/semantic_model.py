"""The Cortex Analyst semantic model (sql/semantic_model.yaml): loading, validation, logical -> physical SQL.

The YAML follows Snowflake's semantic model specification (tables with base_table, dimensions, time_dimensions,
facts, metrics, filters; relationships; verified_queries). Verified queries are written, as the specification asks,
in logical names (`__defect_logs`, `defect_type`); `logical_to_physical` rewrites them into SQL over the physical
tables so they can run through a Warehouse and be compared with the golden query.
"""
from __future__ import annotations

import copy
import os
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import sqlglot
import yaml
from sqlglot import exp


class SemanticModelError(ValueError):
    pass


@dataclass
class ModelColumn:
    """A dimension, time dimension or fact of a logical table."""

    name: str
    expr: str
    kind: str  # "dimension" | "time_dimension" | "fact"
    table: str  # logical table name
    data_type: str = ""
    description: str = ""
    synonyms: list[str] = field(default_factory=list)
    sample_values: list[str] = field(default_factory=list)
    is_enum: bool = False

    def parsed(self) -> exp.Expression:
        return parse_expr(self.expr)


@dataclass
class ModelMetric:
    name: str
    expr: str
    table: str
    description: str = ""
    synonyms: list[str] = field(default_factory=list)

    def parsed(self) -> exp.Expression:
        return parse_expr(self.expr)


@dataclass
class ModelFilter(ModelMetric):
    """A named boolean expression (same fields as a metric), e.g. `scrapped_boards`."""


@dataclass
class LogicalTable:
    name: str
    database: str
    schema: str
    table: str  # physical table name
    description: str = ""
    synonyms: list[str] = field(default_factory=list)
    primary_key: list[str] = field(default_factory=list)
    columns: dict[str, ModelColumn] = field(default_factory=dict)
    metrics: dict[str, ModelMetric] = field(default_factory=dict)
    filters: dict[str, ModelFilter] = field(default_factory=dict)

    def physical(self, qualified: bool = False) -> str:
        return f"{self.database}.{self.schema}.{self.table}" if qualified else self.table

    @property
    def dimensions(self) -> list[ModelColumn]:
        return [c for c in self.columns.values() if c.kind == "dimension"]

    @property
    def time_dimensions(self) -> list[ModelColumn]:
        return [c for c in self.columns.values() if c.kind == "time_dimension"]

    @property
    def facts(self) -> list[ModelColumn]:
        return [c for c in self.columns.values() if c.kind == "fact"]


@dataclass
class Relationship:
    name: str
    left_table: str
    right_table: str
    columns: list[tuple[str, str]]
    join_type: str = "left_outer"
    relationship_type: str = "many_to_one"

    @property
    def sql_join(self) -> str:
        return {"left_outer": "LEFT OUTER JOIN", "inner": "INNER JOIN"}.get(self.join_type.lower(), "LEFT OUTER JOIN")


@dataclass
class VerifiedQuery:
    name: str
    question: str
    sql: str
    use_as_onboarding_question: bool = False
    verified_by: str = ""
    verified_at: int | None = None


DATE_PARTS = ("day", "week", "month", "quarter", "year")  # what a relative window may count in (DATEADD parts)
LOCAL_VOCABULARY_KEY = "local_vocabulary"  # the YAML section only the local engine reads (not in the specification)


@dataclass(frozen=True)
class Vocabulary:
    """What the local question engine reads beyond the specification: value aliases per dimension, values that are
    also ordinary words (and the words that make them values), and the units a relative time window counts in."""

    value_aliases: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    ambiguous_values: frozenset[str] = frozenset()
    context_words: frozenset[str] = frozenset()
    countable_value_dimensions: frozenset[str] = frozenset()
    fraction_facts: frozenset[str] = frozenset()
    higher_is_better: frozenset[str] = frozenset()
    example_questions: tuple[str, ...] = ()
    identifier_words: dict[str, list[str]] = field(default_factory=dict)
    time_units: dict[str, tuple[str, int]] = field(default_factory=dict)

    @classmethod
    def from_yaml(cls, data: dict | None) -> "Vocabulary":
        data = data or {}
        aliases = {str(dim): {str(v): [str(a) for a in alist or []] for v, alist in (values or {}).items()}
                   for dim, values in (data.get("value_aliases") or {}).items()}
        units = {}
        for word, spec in (data.get("time_units") or {}).items():
            if not (isinstance(spec, list) and len(spec) == 2 and str(spec[1]).isdigit()
                    and str(spec[0]).lower() in DATE_PARTS):
                raise SemanticModelError(f"{LOCAL_VOCABULARY_KEY}.time_units.{word}: expected [date part, count] with "
                                         f"a date part among {', '.join(DATE_PARTS)}")
            units[str(word)] = (str(spec[0]).lower(), int(spec[1]))
        words = lambda key: frozenset(map(str, data.get(key) or []))  # noqa: E731
        identifiers = {str(dim): [str(w) for w in ws or []] for dim, ws in (data.get("identifier_words") or {}).items()}
        return cls(value_aliases=aliases, ambiguous_values=words("ambiguous_values"),
                   context_words=words("context_words"), countable_value_dimensions=words("countable_value_dimensions"),
                   fraction_facts=words("fraction_facts"), higher_is_better=words("higher_is_better"),
                   example_questions=tuple(map(str, data.get("example_questions") or [])),
                   identifier_words=identifiers, time_units=units)

    def aliases_of(self, dimension: str, value: str) -> list[str]:
        return self.value_aliases.get(dimension, {}).get(value, [])


@dataclass
class SemanticModel:
    name: str
    description: str
    tables: dict[str, LogicalTable]
    relationships: list[Relationship]
    verified_queries: list[VerifiedQuery]
    raw: dict
    path: Path | None = None
    vocabulary: Vocabulary = field(default_factory=Vocabulary)

    @property
    def physical_tables(self) -> set[str]:
        return {t.table.upper() for t in self.tables.values()}

    def table_by_physical(self, name: str) -> LogicalTable | None:
        for t in self.tables.values():
            if t.table.upper() == name.upper():
                return t
        return None

    def relationship(self, a: str, b: str) -> Relationship | None:
        """The relationship joining logical tables a and b, in either direction."""
        for r in self.relationships:
            if {r.left_table, r.right_table} == {a, b}:
                return r
        return None

    def metric(self, name: str) -> ModelMetric | None:
        for t in self.tables.values():
            if name in t.metrics:
                return t.metrics[name]
        return None

    def metric_expr(self, table: str, name: str, alias: str | None = None) -> exp.Expression:
        """A metric (or fact, or dimension) of a logical table as an expression over its physical columns, each
        column qualified with `alias` when given: how other code reuses the model's definitions instead of
        restating them."""
        t = self.tables[table]
        item = t.metrics.get(name) or t.columns.get(name)
        if item is None:
            raise SemanticModelError(f"table {table!r} has no metric, fact or dimension {name!r}")
        return qualify_columns(item.parsed(), alias)

    def to_yaml(self) -> str:
        """The specification's YAML (with any database/schema override applied) for Cortex Analyst: the request body
        and the stage file; the local engine's vocabulary section is left out."""
        spec = {k: v for k, v in self.raw.items() if k != LOCAL_VOCABULARY_KEY}
        return yaml.safe_dump(spec, sort_keys=False, width=120)

    def onboarding_questions(self) -> list[str]:
        return [v.question for v in self.verified_queries if v.use_as_onboarding_question]


SEMANTIC_MODEL_STAGE_PATH = "semantic_model/semantic_model.yaml"  # where the semantic_model asset puts it; Cortex
# Analyst reads it from there (@DB.SCHEMA.STAGE/semantic_model/semantic_model.yaml)


def default_semantic_model_path() -> Path:
    env = os.environ.get("PCB_SEMANTIC_MODEL")
    if env:
        return Path(env).expanduser().resolve()
    from pcb_pipeline.resources import sql_dir

    return sql_dir() / "semantic_model.yaml"


def parse_expr(text: str) -> exp.Expression:
    """A Snowflake expression of the model as a fresh tree (callers may change it; the parse is cached)."""
    return _parsed(text).copy()


@lru_cache(maxsize=512)
def _parsed(text: str) -> exp.Expression:
    try:
        return sqlglot.parse_one(f"SELECT {text}", read="snowflake").expressions[0]
    except sqlglot.errors.ParseError as e:
        raise SemanticModelError(f"cannot parse expression {text!r}: {str(e).splitlines()[0]}") from None


def parse_semantic_model(data: dict, path: Path | None = None, database: str | None = None,
                         schema: str | None = None) -> SemanticModel:
    data = copy.deepcopy(data)
    if not isinstance(data, dict) or not data.get("name") or not data.get("tables"):
        raise SemanticModelError("a semantic model needs a name and at least one table")
    tables: dict[str, LogicalTable] = {}
    for t in data["tables"]:
        bt = t.get("base_table") or {}
        if database:
            bt["database"] = database
        if schema:
            bt["schema"] = schema
        for key in ("database", "schema", "table"):
            if not bt.get(key):
                raise SemanticModelError(f"table {t.get('name')!r}: base_table lacks {key}")
        lt = LogicalTable(name=t["name"], database=bt["database"], schema=bt["schema"], table=bt["table"],
                          description=t.get("description", ""), synonyms=list(t.get("synonyms") or []),
                          primary_key=list((t.get("primary_key") or {}).get("columns") or []))
        for kind, key in (("dimension", "dimensions"), ("time_dimension", "time_dimensions"), ("fact", "facts"),
                          ("fact", "measures")):  # `measures` is the older name of `facts`
            for c in t.get(key) or []:
                if c["name"] in lt.columns:
                    raise SemanticModelError(f"table {lt.name!r}: duplicate column {c['name']!r}")
                lt.columns[c["name"]] = ModelColumn(
                    name=c["name"], expr=str(c.get("expr", c["name"])), kind=kind, table=lt.name,
                    data_type=str(c.get("data_type", "")), description=c.get("description", ""),
                    synonyms=[str(s) for s in c.get("synonyms") or []],
                    sample_values=[str(v) for v in c.get("sample_values") or []], is_enum=bool(c.get("is_enum")))
        for m in t.get("metrics") or []:
            lt.metrics[m["name"]] = ModelMetric(name=m["name"], expr=str(m["expr"]), table=lt.name,
                                                description=m.get("description", ""),
                                                synonyms=[str(s) for s in m.get("synonyms") or []])
        for f in t.get("filters") or []:
            lt.filters[f["name"]] = ModelFilter(name=f["name"], expr=str(f["expr"]), table=lt.name,
                                                description=f.get("description", ""),
                                                synonyms=[str(s) for s in f.get("synonyms") or []])
        if lt.name in tables:
            raise SemanticModelError(f"duplicate logical table {lt.name!r}")
        tables[lt.name] = lt
    rels = [Relationship(name=r["name"], left_table=r["left_table"], right_table=r["right_table"],
                         columns=[(c["left_column"], c["right_column"]) for c in r["relationship_columns"]],
                         join_type=r.get("join_type", "left_outer"),
                         relationship_type=r.get("relationship_type", "many_to_one"))
            for r in data.get("relationships") or []]
    vqs = [VerifiedQuery(name=v["name"], question=v["question"], sql=v["sql"],
                         use_as_onboarding_question=bool(v.get("use_as_onboarding_question")),
                         verified_by=str(v.get("verified_by", "")), verified_at=v.get("verified_at"))
           for v in data.get("verified_queries") or []]
    model = SemanticModel(name=data["name"], description=data.get("description", ""), tables=tables,
                          relationships=rels, verified_queries=vqs, raw=data, path=path,
                          vocabulary=Vocabulary.from_yaml(data.get(LOCAL_VOCABULARY_KEY)))
    problems = validate_semantic_model(model)
    if problems:
        raise SemanticModelError("invalid semantic model:\n- " + "\n- ".join(problems))
    return model


def load_semantic_model(path: Path | None = None, database: str | None = None,
                        schema: str | None = None) -> SemanticModel:
    """Read and validate the semantic model (default sql/semantic_model.yaml; env PCB_SEMANTIC_MODEL overrides).

    The base tables' database and schema come from the arguments, else from SNOWFLAKE_DATABASE / SNOWFLAKE_SCHEMA
    (the names sql/setup/01_account_setup.sql creates), else from the YAML (PCB.PIPELINE).
    """
    path = Path(path) if path is not None else default_semantic_model_path()
    database = database or os.environ.get("SNOWFLAKE_DATABASE") or None
    schema = schema or os.environ.get("SNOWFLAKE_SCHEMA") or None
    return _load_cached(str(path), path.stat().st_mtime_ns, database, schema)


@lru_cache(maxsize=8)
def _load_cached(path: str, _mtime: int, database: str | None, schema: str | None) -> SemanticModel:
    with open(path, encoding="utf-8") as f:
        data = yaml.safe_load(f)
    return parse_semantic_model(data, Path(path), database, schema)


def validate_semantic_model(model: SemanticModel) -> list[str]:
    """Structural checks the local engine relies on (Cortex Analyst does its own on upload)."""
    problems = []
    for t in model.tables.values():
        if not t.columns and not t.metrics:
            problems.append(f"table {t.name}: no dimensions, facts or metrics")
        for c in t.columns.values():
            try:
                c.parsed()
            except SemanticModelError as e:
                problems.append(f"{t.name}.{c.name}: {e}")
        for m in list(t.metrics.values()) + list(t.filters.values()):
            try:
                m.parsed()
            except SemanticModelError as e:
                problems.append(f"{t.name}.{m.name}: {e}")
        for pk in t.primary_key:  # a key column need not be a dimension (inference_id is not); it must be a name
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", pk):
                problems.append(f"table {t.name}: primary key column {pk!r} is not an identifier")
    for r in model.relationships:
        for side in (r.left_table, r.right_table):
            if side not in model.tables:
                problems.append(f"relationship {r.name}: unknown table {side!r}")
        if r.left_table in model.tables and r.right_table in model.tables:
            for lc, rc in r.columns:
                if lc not in model.tables[r.left_table].columns:
                    problems.append(f"relationship {r.name}: {r.left_table} has no column {lc!r}")
                if rc not in model.tables[r.right_table].columns:
                    problems.append(f"relationship {r.name}: {r.right_table} has no column {rc!r}")
            if r.relationship_type == "many_to_one" and \
                    [rc for _, rc in r.columns] != model.tables[r.right_table].primary_key:
                problems.append(f"relationship {r.name}: the right table's primary key must be the join column")
    for v in model.verified_queries:
        try:
            logical_to_physical(v.sql, model)
        except Exception as e:  # noqa: BLE001 - report every broken verified query
            problems.append(f"verified query {v.name}: {e}")
    return problems


# ------------------------------------------------------------------------------------------ logical -> physical SQL
def logical_to_physical(sql: str, model: SemanticModel, qualified: bool = False) -> str:
    """Rewrite SQL written in the model's logical names (`__table`, logical columns) into physical SQL.

    Bare logical columns in the SELECT list keep their logical name as alias, so `SELECT defect_type ...` becomes
    `SELECT detected_class AS defect_type ...`.
    """
    try:
        tree = sqlglot.parse_one(sql, read="snowflake")
    except sqlglot.errors.ParseError as e:
        raise SemanticModelError(f"cannot parse: {str(e).splitlines()[0]}") from None
    cte_names = {c.alias_or_name.lower() for c in tree.find_all(exp.CTE)}

    for select in list(tree.find_all(exp.Select)):
        scope_tables: dict[str, LogicalTable] = {}  # alias or name (lower) -> logical table
        for t in select.find_all(exp.Table):
            if t.find_ancestor(exp.Select) is not select:
                continue
            name = t.name
            if name.lower() in cte_names:
                continue
            if not name.startswith("__"):
                raise SemanticModelError(f"table {name!r} is not a logical table reference (expected __<table>)")
            lt = model.tables.get(name[2:])
            if lt is None:
                raise SemanticModelError(f"unknown logical table {name!r}")
            key = (t.alias or name).lower()
            scope_tables[key] = lt
            phys = exp.to_table(lt.physical(qualified), dialect="snowflake")
            if t.alias:
                phys.set("alias", exp.TableAlias(this=exp.to_identifier(t.alias)))
            t.replace(phys)
        if not scope_tables:
            continue
        multi = len(scope_tables) > 1
        aliases = {e.alias.lower() for e in select.expressions if isinstance(e, exp.Alias)}

        def resolve(col: exp.Column) -> tuple[str, ModelColumn] | None:
            if col.table:
                lt = scope_tables.get(col.table.lower())
                if lt is None:
                    return None
                c = lt.columns.get(col.name)
                return (col.table, c) if c else None
            found = [(k, lt.columns[col.name]) for k, lt in scope_tables.items() if col.name in lt.columns]
            if len(found) > 1:
                raise SemanticModelError(f"column {col.name!r} is ambiguous; qualify it")
            return found[0] if found else None

        # SELECT list first: bare logical columns get their logical name as alias
        for i, e in enumerate(list(select.expressions)):
            if isinstance(e, exp.Column):
                r = resolve(e)
                if r is not None:
                    key, c = r
                    new = qualify_columns(c.parsed(), key if (multi or e.table) else None)
                    if new.sql(dialect="snowflake") != c.name:
                        select.expressions[i] = exp.alias_(new, c.name)
                        select.expressions[i].parent = select
                    else:
                        select.expressions[i] = new
                        new.parent = select
        for col in list(select.find_all(exp.Column)):
            if col.find_ancestor(exp.Select) is not select:
                continue
            if not col.table and col.name.lower() in aliases and col.find_ancestor(exp.Order) is not None:
                continue  # ORDER BY a select alias
            r = resolve(col)
            if r is None:
                continue
            key, c = r
            new = qualify_columns(c.parsed(), key if (multi or col.table) else None)
            col.replace(new)
    return tree.sql(dialect="snowflake")


def qualify_columns(expr: exp.Expression, table_key: str | None) -> exp.Expression:
    expr = expr.copy()
    if table_key is None:
        return expr
    for col in expr.find_all(exp.Column):
        if not col.table:
            col.set("table", exp.to_identifier(table_key))
    return expr
