"""The Snowflake side of the manual search: SOP_CHUNKS, Cortex Search PCB_SOP_SEARCH_SERVICE, AI_COMPLETE answers.

`SnowflakeManualSearch` implements the same ManualSearch interface as the local index: `search()` queries the Cortex
Search service through snowflake.core
(`Root(session).databases[db].schemas[schema].cortex_search_services[name].search(query, columns, filter, limit)`)
and `answer()` sends the numbered passages to AI_COMPLETE with an instruction to cite them as [n].
Nothing here is imported by the local path; snowflake.core is imported only when a Root is needed.
"""
from __future__ import annotations

import re
from pathlib import Path

from .corpus import Chunk, chunks_to_frame
from .search import NO_ANSWER, Answer, Hit, citation_from_chunk, resolve_category

SERVICE_NAME = "PCB_SOP_SEARCH_SERVICE"
CHUNKS_TABLE = "SOP_CHUNKS"
DEFAULT_WAREHOUSE = "PCB_WH"
RESULT_COLUMNS = ["chunk", "chunk_id", "document", "doc_id", "title", "page", "section", "defect_category",
                  "defect_class"]
DEFAULT_LLM = "mistral-large2"
AI_COMPLETE_SQL = "SELECT AI_COMPLETE(?, ?) AS ANSWER"  # Snowpark qmark binding
AI_COMPLETE_SQL_PYFORMAT = "SELECT AI_COMPLETE(%s, %s) AS ANSWER"  # snowflake.connector pyformat binding


def cortex_search_sql_path() -> Path:
    from pcb_pipeline.resources import sql_dir

    return sql_dir() / "cortex_search.sql"


def cortex_search_statements(warehouse: str = DEFAULT_WAREHOUSE, target_lag: str | None = None,
                             path: Path | None = None) -> list[str]:
    """The statements of sql/cortex_search.sql (comments dropped), with the warehouse (and lag) substituted.

    Split on semicolons at line ends rather than with sqlglot, which does not know CREATE CORTEX SEARCH SERVICE.
    """
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_$]*", warehouse):
        raise ValueError(f"not a plain warehouse identifier: {warehouse!r}")
    text = Path(path or cortex_search_sql_path()).read_text(encoding="utf-8")
    lines = [ln for ln in text.splitlines() if not ln.strip().startswith("--")]
    stmts = [s.strip() for s in re.split(r";[ \t]*(?:\n|$)", "\n".join(lines)) if s.strip()]
    out = []
    for s in stmts:
        s = re.sub(r"(\bWAREHOUSE\s*=\s*)[A-Za-z_][A-Za-z0-9_$]*", lambda m: m.group(1) + warehouse, s)
        if target_lag is not None:
            if not re.fullmatch(r"\d+\s+(seconds?|minutes?|hours?|days?)", target_lag):
                raise ValueError(f"bad TARGET_LAG {target_lag!r}")
            s = re.sub(r"(\bTARGET_LAG\s*=\s*)'[^']*'", lambda m: f"{m.group(1)}'{target_lag}'", s)
        out.append(s)
    return out


_DDL_RE = re.compile(
    r"^CREATE\s+(?:OR\s+REPLACE\s+)?CORTEX\s+SEARCH\s+SERVICE\s+(?:IF\s+NOT\s+EXISTS\s+)?(?P<name>[\w$.\"]+)\s+"
    r"ON\s+(?P<on>\w+)\s+"
    r"ATTRIBUTES\s+(?P<attributes>\w+(?:\s*,\s*\w+)*)\s+"
    r"WAREHOUSE\s*=\s*(?P<warehouse>[\w$]+)\s+"
    r"TARGET_LAG\s*=\s*'(?P<target_lag>\d+\s+(?:seconds?|minutes?|hours?|days?))'\s*"
    r"(?:EMBEDDING_MODEL\s*=\s*'(?P<embedding_model>[^']+)'\s*)?"
    r"(?:REFRESH_MODE\s*=\s*(?P<refresh_mode>FULL|INCREMENTAL)\s*)?"
    r"(?:INITIALIZE\s*=\s*(?P<initialize>ON_CREATE|ON_SCHEDULE)\s*)?"
    r"(?:COMMENT\s*=\s*'(?P<comment>(?:[^']|'')*)'\s*)?"
    r"AS\s*\(?(?P<query>.*?)\)?\s*$", re.S | re.I)


def parse_search_service_ddl(statement: str) -> dict:
    """Check a CREATE CORTEX SEARCH SERVICE statement against the documented syntax and return its parts.

    fakesnow (and sqlglot) cannot parse this statement, so this is its contract test: the clause order of
    `CREATE [OR REPLACE] CORTEX SEARCH SERVICE <name> ON <col> ATTRIBUTES <cols> WAREHOUSE = <wh>
    TARGET_LAG = '<n> <unit>' [EMBEDDING_MODEL = '<m>'] [REFRESH_MODE] [INITIALIZE] [COMMENT] AS <query>`,
    and that the search column and every attribute are selected by the source query.
    """
    m = _DDL_RE.match(statement.strip())
    if not m:
        raise ValueError("not a CREATE CORTEX SEARCH SERVICE statement in the documented clause order")
    parts = m.groupdict()
    parts["attributes"] = [a.strip() for a in parts["attributes"].split(",")]
    import sqlglot

    query = sqlglot.parse_one(parts["query"], read="snowflake")
    selected = {e.alias_or_name.lower() for e in query.expressions}
    missing = [c for c in [parts["on"], *parts["attributes"]] if c.lower() not in selected and "*" not in selected]
    if missing:
        raise ValueError(f"search column/attributes not selected by the source query: {missing}")
    parts["selected"] = sorted(selected)
    return parts


def sync_chunks(warehouse, chunks: list[Chunk]) -> int:
    """Upsert the chunks into SOP_CHUNKS and delete chunks that no longer exist (through the Warehouse interface)."""
    df = chunks_to_frame(chunks)
    n = warehouse.upsert(CHUNKS_TABLE, ["chunk_id"], df)
    ids = ", ".join("'" + str(i).replace("'", "''") + "'" for i in df["chunk_id"])
    if ids:
        warehouse.execute(f"DELETE FROM {CHUNKS_TABLE} WHERE chunk_id NOT IN ({ids})")
    return n


def cortex_filter(category: str | None) -> dict | None:
    """Cortex Search filter for a category argument (a defect_category or a defect class)."""
    cat, cls = resolve_category(category)
    if cat:
        return {"@eq": {"defect_category": cat}}
    if cls:
        return {"@eq": {"defect_class": cls}}
    return None


def build_rag_prompt(question: str, hits: list[Hit]) -> str:
    passages = "\n\n".join(
        f"[{n}] {h.chunk.document}, page {h.chunk.page}, section '{h.chunk.section}' "
        f"(category {h.chunk.defect_category}):\n{h.chunk.text}" for n, h in enumerate(hits, 1))
    return (
        "You are a PCB quality engineer. Answer the question using only the numbered passages from the company's "
        "SOP manuals below. After every statement put the number of the passage it comes from in square brackets, "
        "for example [2]. If the passages do not contain the answer, say that the manuals do not cover it. "
        "Product classes are IPC-A-610 Class 1, 2 and 3; quote the limits exactly as the passages state them.\n\n"
        f"Passages:\n{passages}\n\nQuestion: {question}\nAnswer:")


def _row_to_chunk(row: dict) -> Chunk:
    r = {str(k).lower(): v for k, v in row.items()}
    return Chunk(chunk_id=str(r.get("chunk_id", "")), document=str(r.get("document", "")),
                 doc_id=str(r.get("doc_id", "")), title=str(r.get("title", "")), page=int(r.get("page") or 0),
                 section=str(r.get("section", "")), defect_category=str(r.get("defect_category", "")),
                 defect_class=str(r.get("defect_class", "")), text=str(r.get("chunk", "")))


class SnowflakeManualSearch:
    """ManualSearch over Cortex Search + AI_COMPLETE. `session` is a Snowpark Session or a connector connection."""

    backend = "snowflake"

    def __init__(self, session, database: str, schema: str, service: str = SERVICE_NAME, llm: str = DEFAULT_LLM,
                 limit: int = 5, root=None):
        self.session = session
        self.database = database
        self.schema = schema
        self.service = service
        self.llm = llm
        self.limit = limit
        self._root = root

    @property
    def root(self):
        if self._root is None:
            from snowflake.core import Root

            self._root = Root(self.session)
        return self._root

    def _service(self):
        return self.root.databases[self.database].schemas[self.schema].cortex_search_services[self.service]

    def search(self, query: str, category: str | None = None, k: int = 5) -> list[Hit]:
        resp = self._service().search(query=query, columns=RESULT_COLUMNS, filter=cortex_filter(category), limit=k)
        results = resp.results if hasattr(resp, "results") else resp["results"]
        return [Hit(_row_to_chunk(r), score=1.0 / (n + 1)) for n, r in enumerate(results)]

    def complete(self, prompt: str) -> str:
        if hasattr(self.session, "sql"):  # Snowpark
            rows = self.session.sql(AI_COMPLETE_SQL, params=[self.llm, prompt]).collect()
            return str(rows[0][0])
        cur = self.session.cursor()  # snowflake.connector
        try:
            cur.execute(AI_COMPLETE_SQL_PYFORMAT, (self.llm, prompt))
            return str(cur.fetchone()[0])
        finally:
            cur.close()

    def answer(self, question: str, category: str | None = None) -> Answer:
        hits = self.search(question, category, k=self.limit)
        if not hits:
            return Answer(NO_ANSWER, [], question, category, backend=self.backend)
        text = self.complete(build_rag_prompt(question, hits)).strip()
        cited = sorted({int(n) for n in re.findall(r"\[(\d+)\]", text) if 1 <= int(n) <= len(hits)})
        numbers = cited or list(range(1, len(hits) + 1))
        citations = [citation_from_chunk(n, hits[n - 1].chunk) for n in numbers]
        return Answer(text, citations, question, category, backend=self.backend)


class ConnectedManualSearch:
    """SnowflakeManualSearch on a connection opened for each question and closed after it.

    For callers that live longer than a Snowflake session (the app, the CLI, the Dagster resource): `connect()`
    returns a context manager yielding a snowflake.connector connection (e.g. `SnowflakeResource.get_connection`);
    `root_factory(conn)` builds the snowflake.core Root for it (None: `Root(conn)`); `options` (service, llm, limit)
    go to SnowflakeManualSearch as they are. Nothing connects before a question is asked.
    """

    backend = "snowflake"

    def __init__(self, connect, database: str, schema: str, root_factory=None, **options):
        self.connect, self.database, self.schema = connect, database, schema
        self.root_factory = root_factory
        self.options = options

    def _run(self, use):
        with self.connect() as conn:
            root = self.root_factory(conn) if self.root_factory is not None else None
            return use(SnowflakeManualSearch(conn, self.database, self.schema, root=root, **self.options))

    def search(self, query: str, category: str | None = None, k: int = 5) -> list[Hit]:
        return self._run(lambda s: s.search(query, category, k))

    def answer(self, question: str, category: str | None = None) -> Answer:
        return self._run(lambda s: s.answer(question, category))
