"""Plain-English question -> Snowflake SQL, driven by the semantic model; no LLM, no network.

How a question is read:
1. A question that is SQL (starts with SELECT/WITH) is guarded and run as typed.
2. A question that matches a verified query of the model (same words) runs that verified query, like Cortex Analyst's
   verified query repository.
3. Otherwise the question is matched against the model: relative time ranges and time grains (regular expressions),
   numeric conditions, top-N and superlatives, then metric, fact, dimension, filter and sample-value phrases from the
   YAML (names, synonyms, sample values, values learned from the warehouse), longest match first.
4. The plan is checked: every content word must have been understood, the metrics must come from one table, and
   every dimension must be on that table or reachable through a relationship. Anything else is a CannotAnswer with
   suggestions, never a guess.
5. The SQL is emitted in Snowflake dialect, passed through the SQL guard and run through the Warehouse.
"""
from __future__ import annotations

import datetime as _dt
import decimal
import math
import re
from dataclasses import dataclass, field

from .semantic_model import LogicalTable, ModelColumn, ModelMetric, SemanticModel, load_semantic_model
from .sql_guard import MAX_RESULT_ROWS, GuardedSQL, UnsafeSQLError, guard_model_sql, run_guarded
from .text import fold_phrases, stem



class CannotAnswer(Exception):
    def __init__(self, message: str, suggestions: list[str] | None = None):
        super().__init__(message)
        self.message = message
        self.suggestions = suggestions or []


# --------------------------------------------------------------------------------------------------- vocabulary
# Words that carry no meaning for the query (beyond the cues handled explicitly).
FILLER = frozenset("""
a an the of in on at for to from by with without within into during over across per each every all any and or
me us we our i you my show give list tell display get got find see look let please what which who whom whose how
many much is are was were be been being has have had do does did there here it its this that these those so far
currently current recent recently overall total value values figure figures data number numbers count counts
statistic statistics stats summary report breakdown distribution split grouped group compare comparison versus vs
happen happened occur occurred record recorded log logged detect detected find found report reported see seen
observe observed when where time period range so far thus till until up now just only also then than
please kindly can could would will should tell summarize summarise versus against between
inspect inspected scanned checked processed produce produces producing make makes making generate generates
cause causes experience experienced contribute contributes see sees get gets
""".split()) | {"vs.", "s"}

GROUP_CUES = frozenset({"by", "per", "each", "every", "breakdown", "across", "split", "distribution", "grouped",
                        "compare", "comparison", "versus", "vs", "which", "what", "between"})
AGG_WORDS = {"average": "AVG", "avg": "AVG", "mean": "AVG", "max": "MAX", "maximum": "MAX", "highest": "MAX",
             "min": "MIN", "minimum": "MIN", "lowest": "MIN", "total": "SUM", "sum": "SUM", "median": "MEDIAN"}
DESC_WORDS = {"most", "highest", "largest", "biggest", "worst", "max", "maximum", "top", "greatest", "frequent",
              "common"}
ASC_WORDS = {"least", "lowest", "fewest", "smallest", "best", "min", "minimum", "bottom", "rarest"}
NUMBER_WORDS = {"zero": 0, "no": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
                "eight": 8, "nine": 9, "ten": 10, "twelve": 12, "fourteen": 14, "fifteen": 15, "twenty": 20,
                "thirty": 30}
# Values that are also ordinary English words need context (a plural, "defect", the dimension word, a list of values)
COMMON_WORD_VALUES = {"open", "short", "copper", "spur", "day", "pass", "night", "swing"}
CONTEXT_WORDS = {"defect", "circuit", "class", "type", "detection", "fault", "call", "issue", "shift", "problem",
                 "board"}
# Extra spellings of sample values (domain knowledge that the YAML specification has no field for)
VALUE_ALIASES = {
    "mousebite": ["mouse bite", "mouse-bite", "mousebites", "mouse bites"],
    "pin-hole": ["pinhole", "pin hole", "pinholes", "pin holes", "pin-holes"],
    "copper": ["spurious copper", "residual copper", "excess copper", "copper residue"],
    "short": ["short circuit", "short circuits", "copper bridge", "bridging"],
    "open": ["open circuit", "open circuits", "broken trace", "broken traces", "broken conductor"],
    "spur": ["spurs", "copper spur", "copper spurs"],
    "SHANGHAI": ["sha"],
    "SHENZHEN": ["szx"],
    "GUADALAJARA": ["gdl"],
    "PENANG": ["pen"],
    "PASS": ["passed", "passing"],
    "REWORK": ["reworked", "needing rework"],
}

TIME_GRAINS = {"day": "DAY", "week": "WEEK", "month": "MONTH"}
GENERIC_METRIC_WORDS = {"board", "defect", "detection", "inspection", "scrap"}


def _number(word: str) -> int | None:
    if word.isdigit():
        return int(word)
    return NUMBER_WORDS.get(word)


# ---------------------------------------------------------------------------------------------------- plan parts
@dataclass
class TimeRange:
    lower: str | None  # SQL expression, e.g. DATEADD(week, -1, CURRENT_DATE())
    upper: str | None  # exclusive
    label: str


@dataclass
class MetricRef:
    name: str
    table: str
    expr: str
    label: str  # how the interpretation names it


@dataclass
class DimRef:
    table: str
    column: ModelColumn


@dataclass
class Plan:
    base: LogicalTable
    metrics: list[MetricRef]
    group_by: list[DimRef] = field(default_factory=list)
    time_grain: str | None = None
    filters: list[tuple[DimRef, list[str]]] = field(default_factory=list)
    conditions: list[tuple[str, str, str]] = field(default_factory=list)  # (table, sql expr, label)
    time_range: TimeRange | None = None
    order_desc: bool | None = None
    limit: int | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def tables(self) -> list[str]:
        names = [self.base.name]
        for t in [d.table for d in self.group_by] + [d.table for d, _ in self.filters] + \
                 [c[0] for c in self.conditions] + [m.table for m in self.metrics]:
            if t not in names:
                names.append(t)
        return names


@dataclass
class DataAnswer:
    sql: str | None
    columns: list[str]
    rows: list[list]
    interpretation: str
    suggestions: list[str] = field(default_factory=list)
    source: str = "generated"  # generated | verified | typed | cortex_analyst | none
    answered: bool = True
    request_id: str | None = None  # Cortex Analyst's id of the answer (what thumbs up / down refer to)

    def to_dict(self) -> dict:
        return {"sql": self.sql, "columns": self.columns, "rows": self.rows, "interpretation": self.interpretation,
                "suggestions": self.suggestions, "source": self.source, "answered": self.answered,
                "request_id": self.request_id}


# -------------------------------------------------------------------------------------------------- the lexicon
@dataclass
class Entry:
    tokens: tuple[str, ...]
    kind: str  # metric | fact | dim | value | filter | time_dim
    payload: tuple
    common: bool = False  # a value that is also an ordinary word


def _phrase_tokens(text: str) -> tuple[str, ...]:
    return tuple(stem(t) for t in re.findall(r"[a-z0-9]+", fold_phrases(str(text)).replace("_", " ")))


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.replace("_", " "))


class DataQuestionEngine:
    """Question -> plan -> Snowflake SQL over one semantic model."""

    def __init__(self, model: SemanticModel | None = None):
        self.model = model or load_semantic_model()
        self.learned: dict[tuple[str, str], set[str]] = {}
        self._build_lexicon()

    # -- lexicon
    def _build_lexicon(self) -> None:
        entries: list[Entry] = []
        for t in self.model.tables.values():
            for m in t.metrics.values():
                for phrase in [m.name, *m.synonyms]:
                    entries.append(Entry(_phrase_tokens(phrase), "metric", (t.name, m.name)))
            for f in t.filters.values():
                for phrase in [f.name, *f.synonyms]:
                    entries.append(Entry(_phrase_tokens(phrase), "filter", (t.name, f.name)))
            for c in t.columns.values():
                kind = {"dimension": "dim", "time_dimension": "time_dim", "fact": "fact"}[c.kind]
                # a fact is referred to by its synonyms; its identifier ("defects_on_board") reads like ordinary
                # words and would capture "how many defects on boards"
                phrases = [*c.synonyms] if c.kind == "fact" else [c.name, *c.synonyms]
                for phrase in phrases:
                    entries.append(Entry(_phrase_tokens(phrase), kind, (t.name, c.name)))
                if c.kind == "dimension":
                    values = set(c.sample_values) | self.learned.get((t.name, c.name), set())
                    for v in values:
                        for phrase in {v, *VALUE_ALIASES.get(v, [])}:
                            toks = _phrase_tokens(phrase)
                            if toks:
                                common = len(toks) == 1 and toks[0] in COMMON_WORD_VALUES
                                entries.append(Entry(toks, "value", (c.name, v), common))
        # partial product names ("automotive" -> AUTOMOTIVE_ECU) when the first word is unique among the values
        by_dim: dict[str, list[str]] = {}
        for e in entries:
            if e.kind == "value" and len(e.tokens) > 1:
                by_dim.setdefault(e.payload[0], []).append(e.payload[1])
        for dim, values in by_dim.items():
            firsts: dict[str, set[str]] = {}
            for v in set(values):
                toks = _phrase_tokens(v)
                if toks:
                    firsts.setdefault(toks[0], set()).add(v)
            for tok, vs in firsts.items():
                if len(vs) == 1 and len(tok) > 2:
                    entries.append(Entry((tok,), "value", (dim, next(iter(vs))), tok in COMMON_WORD_VALUES))
        seen = set()
        self.entries = []
        for e in entries:
            key = (e.tokens, e.kind, e.payload)
            if e.tokens and key not in seen:
                seen.add(key)
                self.entries.append(e)
        priority = {"metric": 0, "filter": 1, "value": 2, "dim": 3, "fact": 4, "time_dim": 5}
        self.entries.sort(key=lambda e: (-len(e.tokens), priority[e.kind]))
        self.known_tokens = {t for e in self.entries for t in e.tokens}

    def learn_values(self, warehouse, max_values: int = 60) -> None:
        """Add the distinct values of each enumerated dimension found in the warehouse to the lexicon."""
        for t in self.model.tables.values():
            for c in t.dimensions:
                if not c.is_enum:
                    continue
                sql = f"SELECT DISTINCT {c.expr} AS v FROM {t.physical()} WHERE {c.expr} IS NOT NULL LIMIT {max_values}"
                try:
                    df = warehouse.query(guard_model_sql(sql, self.model).sql)
                except Exception:  # noqa: BLE001 - a missing table must not stop questions on the others
                    continue
                vals = {str(v) for v in df.iloc[:, 0].tolist() if v is not None and str(v).strip()}
                vals = {v for v in vals if re.fullmatch(r"[A-Za-z0-9 _\-./]{1,60}", v)}
                self.learned[(t.name, c.name)] = vals
        self._build_lexicon()

    # -- suggestions
    def suggestions(self) -> list[str]:
        out = [v.question for v in self.model.verified_queries]
        out += ["How many defects per factory line last week?", "What are the top 3 defect types this month?",
                "What is the yield rate by product type?", "Defects per board by production shift in the last 30 days",
                "How many low confidence detections yesterday?"]
        return out

    def vocabulary_hint(self) -> str:
        metrics = [m.name for t in self.model.tables.values() for m in t.metrics.values()]
        dims = sorted({c.name for t in self.model.tables.values() for c in t.dimensions})
        return f"Known measures: {', '.join(metrics)}. Known dimensions: {', '.join(dims)}."

    # -- verified queries
    @staticmethod
    def _normalise(q: str) -> str:
        return " ".join(re.findall(r"[a-z0-9]+", q.lower()))

    def verified_match(self, question: str):
        nq = self._normalise(question)
        for v in self.model.verified_queries:
            if self._normalise(v.question) == nq:
                return v
        return None

    # -- parsing
    def plan(self, question: str) -> Plan:
        q = " " + question.lower().strip() + " "
        q = re.sub(r"[\u2018\u2019\u201c\u201d`]", "'", q)
        if re.search(r"\b(drop|delete|truncate|insert|update|alter|grant|revoke|merge|create|replace)\b\s+"
                     r"(table|from|into|database|schema|view|role|user|warehouse|all)\b", q) or ";" in q:
            raise CannotAnswer("This assistant only reads the defect data; it does not run commands that change "
                               "tables, and a question may not contain ';'.", self.suggestions())
        notes: list[str] = []
        consumed_text = q

        # relative and absolute time ranges
        time_range, consumed_text = _parse_time_range(consumed_text)
        grain, consumed_text = _parse_grain(consumed_text)
        # numeric conditions on facts (confidence below 0.5, more than 5 defects)
        conditions_raw, consumed_text = _parse_numeric_conditions(consumed_text)
        # top-N / bottom-N
        limit, order_desc, consumed_text = _parse_top_n(consumed_text)
        # an explicit board id ("board 20085000"): board_id is not an enumerated dimension
        board_ids = []
        for m in list(re.finditer(r"\bboards?\s+(?:id\s+|number\s+|#\s*)?([a-z0-9_-]*\d[a-z0-9_-]*)\b", consumed_text)):
            board_ids.append(m.group(1))
            consumed_text = _blank(consumed_text, m)

        raw_tokens = re.findall(r"[a-z0-9]+(?:\.[0-9]+)?", fold_phrases(consumed_text).replace("_", " "))
        toks = [stem(t) for t in raw_tokens]
        quoted = set(re.findall(r"'([a-z0-9 \-]+)'", q))
        spans = self._match(toks, raw_tokens, quoted)

        used = [False] * len(toks)
        for s in spans:
            for i in range(s[0], s[1]):
                used[i] = True

        # superlatives that decide ordering ("which line has the most defects")
        superlative = None
        for i, t in enumerate(raw_tokens):
            if used[i]:
                continue
            if t in DESC_WORDS:
                superlative = "desc"
                used[i] = True
            elif t in ASC_WORDS:
                superlative = "asc"
                used[i] = True

        # aggregations of facts
        metrics: list[MetricRef] = []
        agg_pending: list[tuple[int, str]] = []
        for i, t in enumerate(raw_tokens):
            if t in AGG_WORDS and not used[i]:
                agg_pending.append((i, AGG_WORDS[t]))

        dims: list[tuple[int, int, str, str]] = []  # (start, end, table, column name)
        values: list[tuple[int, int, str, str]] = []  # (start, end, dim name, value)
        named_filters: list[tuple[str, str]] = []
        facts: list[tuple[int, str, str]] = []
        time_dim_mentions: list[tuple[int, str, str]] = []
        # a bare "boards"/"defects" next to a more specific measure is a noun, not a second measure
        specific = [s for s in spans if s[2].kind == "metric" and len(s[2].tokens) > 1]
        value_ends = {s[1] for s in spans if s[2].kind == "value"}

        def _noun_only(s) -> bool:
            if not (s[2].kind == "metric" and len(s[2].tokens) == 1 and s[2].tokens[0] in GENERIC_METRIC_WORDS):
                return False
            next_to_specific = any(abs(s[0] - o[1]) <= 1 or abs(o[0] - s[1]) <= 1 for o in specific)
            return s[0] in value_ends or next_to_specific

        if specific:
            spans = [s for s in spans if not _noun_only(s)]
        else:
            # only bare nouns: "defects on boards" asks for defects; "boards" is where they are
            generic = {s[2].tokens[0] for s in spans if s[2].kind == "metric"}
            if generic & {"defect", "detection"} and generic & {"board", "inspection"}:
                spans = [s for s in spans if not (s[2].kind == "metric" and s[2].tokens[0] in ("board",
                                                                                               "inspection"))]
        for start, end, e in spans:
            if e.kind == "metric":
                t, name = e.payload
                m = self.model.tables[t].metrics[name]
                if not any(x.name == name for x in metrics):
                    metrics.append(MetricRef(name, t, m.expr, name))
            elif e.kind == "fact":
                if not any(f[1:] == e.payload for f in facts):  # "confidence score" = one mention
                    facts.append((start, *e.payload))
            elif e.kind == "dim":
                dims.append((start, end, *e.payload))
            elif e.kind == "value":
                values.append((start, end, *e.payload))
            elif e.kind == "filter":
                named_filters.append(e.payload)
            elif e.kind == "time_dim":
                time_dim_mentions.append((start, *e.payload))

        for pos, table, fact in facts:
            agg = None
            for j, (apos, a) in enumerate(agg_pending):
                if 0 < pos - apos <= 3 or (superlative is None and 0 < apos - pos <= 1):
                    agg = a
                    agg_pending.pop(j)
                    break
            col = self.model.tables[table].columns[fact]
            if agg is None:
                if any(c[0] == fact for c in conditions_raw):
                    continue  # only used in a condition
                if re.search(r"\b(how many|number of|count)\b", q):
                    raise CannotAnswer(f"Do you want the average or the total of {fact}? Ask e.g. 'average "
                                       f"{fact.replace('_', ' ')}' or 'total {fact.replace('_', ' ')}'.",
                                       self.suggestions())
                if superlative and not dims:
                    agg = "MAX" if superlative == "desc" else "MIN"
                    superlative = None
                else:
                    agg = "AVG"
                    notes.append(f"{fact} is averaged")
            label = f"{agg.lower()}_{fact}"
            metrics.append(MetricRef(label, table, f"ROUND({agg}({col.expr}), 4)" if agg in ("AVG", "MEDIAN")
                                     else f"{agg}({col.expr})", label))
        if agg_pending:
            word = raw_tokens[agg_pending[0][0]]
            leftover = [raw_tokens[i] for i in range(len(raw_tokens)) if not used[i] and raw_tokens[i] not in FILLER
                        and raw_tokens[i] != word]
            what = f" '{' '.join(leftover)}'" if leftover else ""
            raise CannotAnswer(f"I don't know how to compute the {word} of{what or ' that'}: the model has no such "
                               f"measure. {self.vocabulary_hint()}", self.suggestions())

        # unknown words: everything that is neither understood nor filler
        # a stray number is a condition we did not understand: refuse rather than drop it
        unknown = [raw_tokens[i] for i in range(len(raw_tokens)) if not used[i] and raw_tokens[i] not in FILLER
                   and toks[i] not in FILLER]
        unknown = [u for u in unknown if u not in ("defect", "defects", "board", "boards", "line", "lines",
                                                   "inspection", "inspections", "detection", "detections")]
        if unknown:
            near = self._near_value(unknown, raw_tokens, spans)
            raise CannotAnswer(
                f"I can't map {', '.join(repr(u) for u in unknown)} to the defect data model. "
                + (near or self.vocabulary_hint()), self.suggestions())

        # default measure
        words = set(toks)
        if not metrics:
            if {"manufactur", "produc", "built", "made", "build"} & {w[:8] for w in words} or \
                    words & {"manufactured", "produced", "built", "made"}:
                metrics.append(self._metric_ref("board_count"))
            elif words & {"board", "inspection"} and not words & {"defect", "detection"} and not values:
                metrics.append(self._metric_ref("inspected_boards"))
            elif words & {"defect", "detection", "many", "count", "number", "breakdown", "distribution"} or \
                    any(v[2] == "defect_type" for v in values) or named_filters or \
                    any(c[0] == "confidence_score" for c in conditions_raw):
                metrics.append(self._metric_ref("defect_count"))
                if not words & {"defect", "detection", "many", "count", "number"}:
                    notes.append("measured as the number of defects")
            else:
                raise CannotAnswer("I could not find anything to measure in the question. "
                                   + self.vocabulary_hint(), self.suggestions())

        base_name = metrics[0].table
        if any(m.table != base_name for m in metrics):
            names = ", ".join(f"{m.name} ({m.table})" for m in metrics)
            raise CannotAnswer(f"The measures {names} come from different tables with different grains "
                               f"(one row per defect vs one row per board); ask for them separately.",
                               self.suggestions())
        base = self.model.tables[base_name]
        plan = Plan(base=base, metrics=metrics, time_range=time_range, time_grain=grain, notes=notes)

        # named filters and numeric conditions
        for table, fname in named_filters:
            f = self.model.tables[table].filters[fname]
            self._require_reachable(base, table, f"the filter {fname}")
            plan.conditions.append((table, f.expr, f"{fname} ({f.expr})"))
        for fact, op, num in conditions_raw:
            tcol = self._resolve_column(base, fact, kinds=("fact",))
            if tcol is None:
                raise CannotAnswer(f"The condition on {fact} does not apply to {base.name}.", self.suggestions())
            table, col_name = tcol
            col = self.model.tables[table].columns[col_name]
            plan.conditions.append((table, f"{col.expr} {op} {num}", f"{fact} {op} {num}"))

        for bid in board_ids:
            tcol = self._resolve_column(base, "board_id", kinds=("dimension",))
            if tcol is None:
                raise CannotAnswer(f"{base.name} cannot be filtered by board.", self.suggestions())
            col = self.model.tables[tcol[0]].columns["board_id"]
            plan.conditions.append((tcol[0], f"{col.expr} = {_sql_str(bid)}",
                                    f"board_id = {bid}"))

        # values -> filters
        by_dim: dict[tuple[str, str], list[str]] = {}
        value_dims: dict[str, list[tuple[int, int]]] = {}
        for pos, vend, dim_name, value in values:
            tcol = self._resolve_value_dim(base, dim_name, value)
            if tcol is None:
                raise CannotAnswer(f"{value!r} is a value of {dim_name}, which cannot be combined with "
                                   f"{metrics[0].name} (no relationship from {base.name}).", self.suggestions())
            key = tcol
            lst = by_dim.setdefault(key, [])
            if value not in lst:
                lst.append(value)
            value_dims.setdefault(tcol[1], []).append((pos, vend))
        for (table, col_name), vals in by_dim.items():
            plan.filters.append((DimRef(table, self.model.tables[table].columns[col_name]), vals))

        # dimensions -> group by (or only the word that names a filtered dimension)
        for pos, dend, table, col_name in dims:
            tcol = self._resolve_column(base, col_name, kinds=("dimension",), prefer=table)
            if tcol is None:
                raise CannotAnswer(
                    f"{col_name} is recorded in {table}, which cannot be combined with {metrics[0].name} "
                    f"({base.name}): there is no relationship that keeps the counts right.", self.suggestions())
            t2, c2 = tcol
            spans_v = value_dims.get(c2, [])
            if spans_v:
                # "the Shanghai line", "line PENANG": the dimension word only names the filter, unless a grouping
                # word stands right before it ("Shanghai and Penang by line")
                adjacent = any(ve == pos or vs == dend or (ve == pos - 1 and raw_tokens[pos - 1] in ("the",))
                               for vs, ve in spans_v)
                near = any(abs(vs - pos) <= 3 for vs, _ in spans_v)
                if (adjacent or near) and not _direct_cue(raw_tokens, pos):
                    continue
            ref = DimRef(t2, self.model.tables[t2].columns[c2])
            if not any(d.column.name == c2 and d.table == t2 for d in plan.group_by):
                plan.group_by.append(ref)
        # several values of one dimension with a comparison cue: compare them side by side
        if re.search(r"\b(compare|comparison|versus|vs|each)\b", q):
            for ref, vals in plan.filters:
                if len(vals) > 1 and not any(d.column.name == ref.column.name for d in plan.group_by):
                    plan.group_by.append(ref)
        # "which day ..." / "when ..." with a superlative -> daily grain
        if time_dim_mentions and not plan.time_grain:
            for pos, table, name in time_dim_mentions:
                if raw_tokens[pos] in TIME_GRAINS and (superlative or limit or _has_cue(raw_tokens, pos)):
                    plan.time_grain = TIME_GRAINS[raw_tokens[pos]]
        # ordering
        if limit is not None:
            plan.limit, plan.order_desc = limit, order_desc
        elif superlative:
            plan.limit, plan.order_desc = 1, superlative == "desc"
            metric_name = metrics[0].name
            if "yield" in metric_name and ({"best"} & set(raw_tokens) or {"worst"} & set(raw_tokens)):
                plan.order_desc = "best" in raw_tokens
        if (plan.limit is not None) and not plan.group_by and not plan.time_grain:
            # "the most common defect" / "top 3 defects": rank defect types
            if base.name == "defect_logs" and words & {"defect", "detection"}:
                plan.group_by.append(DimRef(base.name, base.columns["defect_type"]))
            else:
                raise CannotAnswer("A ranking needs something to rank by, e.g. 'which factory line has the most "
                                   "defects'.", self.suggestions())
        return plan

    # -- helpers for plan()
    def _metric_ref(self, name: str) -> MetricRef:
        m: ModelMetric | None = self.model.metric(name)
        assert m is not None, name
        return MetricRef(m.name, m.table, m.expr, m.name)

    def _reachable(self, base: LogicalTable, table: str) -> bool:
        if table == base.name:
            return True
        r = self.model.relationship(base.name, table)
        # only follow many_to_one from the base: joining the "one" side keeps the base grain
        return r is not None and r.left_table == base.name and r.relationship_type in ("many_to_one", "one_to_one")

    def _require_reachable(self, base: LogicalTable, table: str, what: str) -> None:
        if not self._reachable(base, table):
            raise CannotAnswer(f"{what} belongs to {table}, which cannot be joined to {base.name}.",
                               self.suggestions())

    def _resolve_column(self, base: LogicalTable, name: str, kinds: tuple[str, ...],
                        prefer: str | None = None) -> tuple[str, str] | None:
        order = [base.name] + ([prefer] if prefer and prefer != base.name else []) + \
            [t for t in self.model.tables if t not in (base.name, prefer)]
        for t in order:
            c = self.model.tables[t].columns.get(name)
            if c is not None and c.kind in kinds and self._reachable(base, t):
                return t, name
        return None

    def _resolve_value_dim(self, base: LogicalTable, dim_name: str, value: str) -> tuple[str, str] | None:
        # a value may belong to several dimensions (SHANGHAI: factory_line_id, manufacturing_line); try the base first
        candidates = []
        for t in self.model.tables.values():
            for c in t.dimensions:
                vals = set(c.sample_values) | self.learned.get((t.name, c.name), set())
                if value in vals:
                    candidates.append((t.name, c.name))
        candidates.sort(key=lambda tc: (tc[0] != base.name, tc[1] != dim_name))
        for t, c in candidates:
            if self._reachable(base, t):
                return t, c
        return None

    def _near_value(self, unknown: list[str], raw: list[str], spans) -> str:
        """When an unknown word sits next to a dimension word ("the Tokyo line"), list that dimension's values."""
        for start, end, e in spans:
            if e.kind != "dim":
                continue
            around = raw[max(0, start - 1):start] + raw[end:end + 1]
            if any(u in around for u in unknown):
                t, name = e.payload
                c = self.model.tables[t].columns[name]
                vals = sorted(set(c.sample_values) | self.learned.get((t, name), set()))
                if vals:
                    return f"Known values of {name}: {', '.join(vals)}."
        return ""

    def _match(self, toks: list[str], raw: list[str], quoted: set[str]) -> list[tuple[int, int, Entry]]:
        """Greedy longest-first phrase matching; a phrase may skip up to one filler word between its words."""
        taken = [False] * len(toks)
        spans: list[tuple[int, int, Entry]] = []
        skippable = {"the", "a", "an", "were", "was", "are", "is", "been", "have", "has", "did", "of", "per", "on",
                     "in", "for", "with"}
        for e in self.entries:
            n = len(e.tokens)
            for i in range(len(toks)):
                if taken[i] or toks[i] != e.tokens[0]:
                    continue
                j, k, ok = i + 1, 1, True
                while k < n:
                    if j < len(toks) and not taken[j] and toks[j] == e.tokens[k]:
                        j, k = j + 1, k + 1
                    elif j + 1 < len(toks) and raw[j] in skippable and not taken[j + 1] and toks[j + 1] == e.tokens[k]:
                        j, k = j + 2, k + 1
                    else:
                        ok = False
                        break
                if not ok or any(taken[i:j]):
                    continue
                if e.kind == "value" and e.common and not self._value_in_context(i, toks, raw, quoted, e):
                    continue
                spans.append((i, j, e))
                for x in range(i, j):
                    taken[x] = True
        spans.sort(key=lambda s: s[0])
        return spans

    def _value_in_context(self, i: int, toks: list[str], raw: list[str], quoted: set[str], e: Entry) -> bool:
        word = raw[i]
        if word in quoted:
            return True
        dim = e.payload[0]
        dim_tokens = {t for x in self.entries if x.kind == "dim" and x.payload[1] == dim for t in x.tokens}
        neighbours = [toks[j] for j in (i - 1, i + 1) if 0 <= j < len(toks)]
        if word.endswith("s") and word[:-1] == toks[i] and dim == "defect_type":
            return True  # "opens", "shorts", "spurs"
        if set(neighbours) & (CONTEXT_WORDS | dim_tokens):
            return True
        # part of a list of values of the same dimension: "open and short", "spur, copper"
        other_values = {x.tokens[0] for x in self.entries if x.kind == "value" and x.payload[0] == dim
                        and len(x.tokens) == 1 and x.tokens[0] != toks[i]}
        for j in (i - 2, i - 1, i + 1, i + 2):
            if 0 <= j < len(toks) and toks[j] in other_values:
                between = raw[min(i, j) + 1:max(i, j)]
                if all(b in ("and", "or") for b in between):
                    return True
        return False


# ------------------------------------------------------------------------------------------- regex-level parsing
def _blank(text: str, m: re.Match) -> str:
    return text[: m.start()] + " " * (m.end() - m.start()) + text[m.end():]


_TR = [
    (r"\byesterday\b", lambda m: TimeRange("DATEADD(day, -1, CURRENT_DATE())", "CURRENT_DATE()", "yesterday")),
    (r"\btoday\b", lambda m: TimeRange("CURRENT_DATE()", None, "today")),
    (r"\b(?:in\s+the\s+|over\s+the\s+|during\s+the\s+|for\s+the\s+)?(?:last|past|previous|preceding)\s+"
     r"(\d+|one|two|three|four|five|six|seven|eight|nine|ten|twelve|fourteen|fifteen|twenty|thirty)\s+"
     r"(day|week|month)s?\b",
     lambda m: TimeRange(f"DATEADD({m.group(2)}, -{_number(m.group(1))}, CURRENT_DATE())", None,
                         f"the last {_number(m.group(1))} {m.group(2)}s")),
    (r"\b(?:in\s+the\s+|over\s+the\s+|during\s+the\s+|for\s+the\s+)?(?:last|past|previous)\s+week\b",
     lambda m: TimeRange("DATEADD(week, -1, CURRENT_DATE())", None, "the last 7 days (last week)")),
    (r"\bthis\s+week\b|\bweek\s+to\s+date\b|\bwtd\b",
     lambda m: TimeRange("DATE_TRUNC('week', CURRENT_DATE())", None, "this week (since Monday)")),
    (r"\bthis\s+month\b|\bmonth\s+to\s+date\b|\bmtd\b",
     lambda m: TimeRange("DATE_TRUNC('month', CURRENT_DATE())", None, "this calendar month")),
    (r"\b(?:in\s+the\s+|over\s+the\s+)?past\s+month\b",
     lambda m: TimeRange("DATEADD(month, -1, CURRENT_DATE())", None, "the past month (rolling)")),
    (r"\b(?:last|previous)\s+month\b",
     lambda m: TimeRange("DATEADD(month, -1, DATE_TRUNC('month', CURRENT_DATE()))",
                         "DATE_TRUNC('month', CURRENT_DATE())", "the previous calendar month")),
    (r"\bthis\s+year\b|\byear\s+to\s+date\b|\bytd\b",
     lambda m: TimeRange("DATE_TRUNC('year', CURRENT_DATE())", None, "this year")),
    (r"\bbetween\s+(\d{4}-\d{2}-\d{2})\s+and\s+(\d{4}-\d{2}-\d{2})\b",
     lambda m: TimeRange(f"'{m.group(1)}'", f"DATEADD(day, 1, '{m.group(2)}')",
                         f"{m.group(1)} to {m.group(2)}")),
    (r"\b(?:since|after|from)\s+(\d{4}-\d{2}-\d{2})\b",
     lambda m: TimeRange(f"'{m.group(1)}'", None, f"since {m.group(1)}")),
    (r"\b(?:on)\s+(\d{4}-\d{2}-\d{2})\b",
     lambda m: TimeRange(f"'{m.group(1)}'", f"DATEADD(day, 1, '{m.group(1)}')", f"on {m.group(1)}")),
]


def _parse_time_range(text: str) -> tuple[TimeRange | None, str]:
    found: TimeRange | None = None
    for rx, make in _TR:
        m = re.search(rx, text)
        if m:
            for d in re.findall(r"\d{4}-\d{2}-\d{2}", m.group(0)):
                try:
                    _dt.date.fromisoformat(d)
                except ValueError:
                    raise CannotAnswer(f"{d!r} is not a valid date (use YYYY-MM-DD).") from None
            if found is not None:
                raise CannotAnswer(f"The question names two time ranges ({found.label} and "
                                   f"{make(m).label}); ask for one at a time.")
            found = make(m)
            text = _blank(text, m)
    return found, text


def _parse_grain(text: str) -> tuple[str | None, str]:
    for rx, grain in ((r"\b(daily|per\s+day|by\s+day|each\s+day|every\s+day|day\s+by\s+day)\b", "DAY"),
                      (r"\b(weekly|per\s+week|by\s+week|each\s+week|every\s+week|week\s+by\s+week)\b", "WEEK"),
                      (r"\b(monthly|per\s+month|by\s+month|each\s+month|every\s+month)\b", "MONTH"),
                      (r"\b(over\s+time|trend|trends|timeline|time\s+series)\b", "DAY")):
        m = re.search(rx, text)
        if m:
            return grain, _blank(text, m)
    return None, text


_CMP = [(r"below|under|less\s+than|lower\s+than|fewer\s+than|<", "<"),
        (r"at\s+most|no\s+more\s+than|<=", "<="),
        (r"above|over|greater\s+than|more\s+than|higher\s+than|>", ">"),
        (r"at\s+least|no\s+less\s+than|>=", ">="),
        (r"exactly|equal\s+to|=", "=")]


def _parse_numeric_conditions(text: str) -> tuple[list[tuple[str, str, str]], str]:
    """'confidence below 0.5', 'confidence above 90%', 'boards with more than 5 defects'."""
    out = []
    cmp_alt = "|".join(f"(?:{rx})" for rx, _ in sorted(_CMP, key=lambda c: -len(c[0])))
    rx_conf = re.compile(rf"\b(?:confidence(?:\s+score)?|score)s?\s+(?:is\s+|was\s+|of\s+)?({cmp_alt})\s*"
                         rf"(\d+(?:\.\d+)?)\s*(%|percent)?")
    m = rx_conf.search(text)
    if m:
        op = _op(m.group(1))
        val = float(m.group(2))
        if m.group(3) or val > 1:
            val = val / 100.0
        out.append(("confidence_score", op, f"{val:g}"))
        text = _blank(text, m)
    num_alt = r"\d+|" + "|".join(NUMBER_WORDS)
    rx_def = re.compile(rf"\b(?:(?:with|having|had|has|that\s+had|that\s+have)\s+)?(?:({cmp_alt})\s*)?"
                        rf"({num_alt})\s+defects?\b")
    for m in rx_def.finditer(text):
        if m.group(1) is None and not re.match(r"(with|having|had|has|that)\b", m.group(0)):
            continue  # "3 defects" without a comparison or "with" is not a condition
        out.append(("defects_on_board", _op(m.group(1)) if m.group(1) else "=", str(_number(m.group(2)))))
        text = _blank(text, m)
        break
    return out, text


def _op(word: str) -> str:
    w = re.sub(r"\s+", " ", word.strip())
    for rx, op in sorted(_CMP, key=lambda c: -len(c[0])):
        if re.fullmatch(rx, w):
            return op
    return "="


def _parse_top_n(text: str) -> tuple[int | None, bool | None, str]:
    m = re.search(r"\b(top|bottom|first|best|worst)\s+(\d+|one|two|three|four|five|six|seven|eight|nine|ten)\b", text)
    if m:
        n = _number(m.group(2))
        desc = m.group(1) in ("top", "first", "worst")
        return n, desc, _blank(text, m)
    return None, None, text


def _direct_cue(raw: list[str], pos: int) -> bool:
    if pos >= 1 and raw[pos - 1] in ("by", "per", "each", "across", "every"):
        return True
    return pos >= 2 and raw[pos - 2] in ("by", "per", "each", "across", "every") and raw[pos - 1] in (
        "the", "each", "every", "a", "all")


def _has_cue(raw: list[str], pos: int) -> bool:
    """A grouping word right before a dimension: "by line", "per shift", "for each product", "which line"."""
    before = raw[max(0, pos - 3):pos]
    if not before:
        return False
    if before[-1] in GROUP_CUES:
        return True
    if len(before) >= 2 and before[-2] in GROUP_CUES and before[-1] in ("the", "each", "every", "a", "all"):
        return True
    if any(b in ("breakdown", "distribution", "split", "compare", "comparison") for b in raw[max(0, pos - 4):pos]):
        return True
    return False


# ------------------------------------------------------------------------------------------------ SQL emission
def plan_to_sql(plan: Plan, model: SemanticModel) -> str:
    tables = plan.tables
    joined = len(tables) > 1
    alias = {}
    if joined:
        for t in tables:
            a = t[0]
            while a in alias.values():
                a += t[len(a)] if len(a) < len(t) else "x"
            alias[t] = a

    def col(table: str, expr: str) -> str:
        if not joined:
            return expr
        from .semantic_model import _parse_expr, _qualified

        return _qualified(_parse_expr(expr), alias[table]).sql(dialect="snowflake")

    select, group = [], []
    if plan.time_grain:
        td = _time_dim(plan, model)
        g = f"DATE_TRUNC('{plan.time_grain.lower()}', {col(td[0], td[1].expr)})"
        select.append(f"{g} AS {plan.time_grain.lower()}")
        group.append(g)
    for d in plan.group_by:
        e = col(d.table, d.column.expr)
        select.append(e if e == d.column.name else f"{e} AS {d.column.name}")
        group.append(e)
    for m in plan.metrics:
        select.append(f"{col(m.table, m.expr)} AS {m.name}")
    base = plan.base
    from_sql = base.physical() + (f" AS {alias[base.name]}" if joined else "")
    for t in tables[1:]:
        r = model.relationship(base.name, t)
        assert r is not None
        on = " AND ".join(f"{alias[base.name]}.{model.tables[base.name].columns[lc].expr} = "
                          f"{alias[t]}.{model.tables[t].columns[rc].expr}" for lc, rc in r.columns)
        from_sql += f" {r.sql_join} {model.tables[t].physical()} AS {alias[t]} ON {on}"
    where = []
    for d, vals in plan.filters:
        e = col(d.table, d.column.expr)
        quoted = [_sql_str(v) for v in vals]
        where.append(f"{e} = {quoted[0]}" if len(quoted) == 1 else f"{e} IN ({', '.join(quoted)})")
    for table, expr, _ in plan.conditions:
        where.append(col(table, expr))
    if plan.time_range:
        td = _time_dim(plan, model)
        te = col(td[0], td[1].expr)
        if plan.time_range.lower:
            where.append(f"{te} >= {plan.time_range.lower}")
        if plan.time_range.upper:
            where.append(f"{te} < {plan.time_range.upper}")
    sql = f"SELECT {', '.join(select)} FROM {from_sql}"
    if where:
        sql += " WHERE " + " AND ".join(where)
    if group:
        sql += " GROUP BY " + ", ".join(group)
    if plan.limit is not None:
        sql += f" ORDER BY {plan.metrics[0].name} {'DESC' if plan.order_desc else 'ASC'}"
        if plan.time_grain:
            sql += f", {plan.time_grain.lower()}"
        sql += f" LIMIT {int(plan.limit)}"
    elif plan.time_grain:
        sql += f" ORDER BY {plan.time_grain.lower()}"
    elif plan.group_by:
        sql += f" ORDER BY {plan.metrics[0].name} DESC"
    return sql


def _time_dim(plan: Plan, model: SemanticModel) -> tuple[str, ModelColumn]:
    tds = plan.base.time_dimensions
    if tds:
        return plan.base.name, tds[0]
    for t in plan.tables[1:]:
        if model.tables[t].time_dimensions:
            return t, model.tables[t].time_dimensions[0]
    for r in model.relationships:
        if r.left_table == plan.base.name and model.tables[r.right_table].time_dimensions:
            return r.right_table, model.tables[r.right_table].time_dimensions[0]
    raise CannotAnswer(f"{plan.base.name} has no time dimension to filter on.")


def _sql_str(v: str) -> str:
    return "'" + str(v).replace("'", "''") + "'"


def interpret(plan: Plan) -> str:
    parts = [", ".join(m.label for m in plan.metrics)]
    if plan.time_grain:
        parts.append(f"per {plan.time_grain.lower()}")
    if plan.group_by:
        parts.append("by " + ", ".join(d.column.name for d in plan.group_by))
    conds = [f"{d.column.name} {'=' if len(v) == 1 else 'in'} {', '.join(v)}" for d, v in plan.filters]
    conds += [label for _, _, label in plan.conditions]
    if plan.time_range:
        conds.append(f"time in {plan.time_range.label}")
    if conds:
        parts.append("where " + " and ".join(conds))
    if plan.limit is not None:
        parts.append(f"{'top' if plan.order_desc else 'bottom'} {plan.limit} by {plan.metrics[0].name}")
    tables = ", ".join(plan.tables)
    text = " ".join(parts) + f" (from {tables})"
    if plan.notes:
        text += "; " + "; ".join(plan.notes)
    return text


# ------------------------------------------------------------------------------------------------ running it
def frame_to_rows(df) -> tuple[list[str], list[list]]:
    cols = [str(c) for c in df.columns]
    rows = []
    for rec in df.head(MAX_RESULT_ROWS).itertuples(index=False, name=None):
        rows.append([_json_safe(v) for v in rec])
    return cols, rows


def _json_safe(v):
    if v is None:
        return None
    try:
        import numpy as np

        if isinstance(v, np.generic):
            v = v.item()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(v, float) and (math.isnan(v) or math.isinf(v)):
        return None
    if isinstance(v, decimal.Decimal):
        return float(v)
    if hasattr(v, "isoformat"):
        try:
            import pandas as pd

            if v is pd.NaT:
                return None
        except ImportError:  # pragma: no cover
            pass
        return v.isoformat()
    return v


class LocalDataAnalyst:
    """ask(question, warehouse) -> DataAnswer, the local counterpart of Cortex Analyst."""

    backend = "local"

    def __init__(self, model: SemanticModel | None = None, engine: DataQuestionEngine | None = None):
        self.model = model or load_semantic_model()
        self.engine = engine or DataQuestionEngine(self.model)
        self._learned_from: int | None = None

    def to_sql(self, question: str) -> tuple[str, str, str]:
        """(sql, interpretation, source) without running anything; raises CannotAnswer."""
        q = question.strip()
        if re.match(r"^\s*(select|with)\b", q, re.I):
            guarded = guard_model_sql(q, self.model)
            return guarded.sql, "SQL as typed (checked read-only)", "typed"
        v = self.engine.verified_match(q)
        if v is not None:
            from .semantic_model import logical_to_physical

            return logical_to_physical(v.sql, self.model), f"verified query '{v.name}': {v.question}", "verified"
        plan = self.engine.plan(q)
        return plan_to_sql(plan, self.model), interpret(plan), "generated"

    def ask(self, question: str, warehouse, learn_values: bool = True) -> DataAnswer:
        if learn_values and self._learned_from != id(warehouse):
            self.engine.learn_values(warehouse)
            self._learned_from = id(warehouse)
        try:
            sql, interpretation, source = self.to_sql(question)
            guarded: GuardedSQL = guard_model_sql(sql, self.model)
        except CannotAnswer as e:
            return DataAnswer(None, [], [], f"Cannot answer: {e.message}",
                              e.suggestions or self.engine.suggestions(), "none", False)
        except UnsafeSQLError as e:
            return DataAnswer(None, [], [], f"Cannot answer: {e}", self.engine.suggestions(), "none", False)
        cols, rows = frame_to_rows(run_guarded(warehouse, guarded))
        return DataAnswer(guarded.sql, cols, rows, interpretation, [], source, True)
