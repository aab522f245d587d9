"""Question -> Plan, in named steps over the semantic model. No LLM, no network; a refusal rather than a guess.

1. Phrases first (time window, time grain, numeric conditions, top-N, identifiers), each blanked once read.
2. The words left are matched against the model's phrases (lexicon), longest first.
3. Measures (metrics, aggregated facts), then every word must be understood; a refusal names the unknown words
   and the closest measures and dimensions ("did you mean").
4. One base table (the measures' grain); filters, conditions and dimensions are resolved to the base table or a
   table it reaches many-to-one, so counts stay right.
A ratio ("percentage of boards that passed") that does not match a metric of the model is read as two plans: the
population and the clause that the percentage counts.
"""
from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from typing import Callable

from sqlglot import exp

from ..semantic_model import LogicalTable, SemanticModel, load_semantic_model, parse_expr
from ..sql_guard import guard_model_sql
from ..text import fold_phrases, stem
from . import conditions
from .conditions import PhraseReader, RatioClause
from .lexicon import Lexicon, Span, phrase_tokens
from .plan import CannotAnswer, Condition, Dimension, Measure, Plan, Ranking, ValueFilter
from .sql_builder import percentage
from .time_phrases import TimePhrases, grain

# Words that carry no meaning for the query beyond the cues read explicitly. English, not vocabulary of the model.
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
cause causes experience experienced contribute contributes see sees get gets break broken down account accounts
""".split()) | {"vs.", "s"}
GROUP_CUES = frozenset({"by", "per", "each", "every", "breakdown", "across", "split", "distribution", "grouped",
                        "compare", "comparison", "versus", "vs", "which", "what", "between"})
AGGREGATES = {"average": "AVG", "avg": "AVG", "mean": "AVG", "max": "MAX", "maximum": "MAX", "highest": "MAX",
              "min": "MIN", "minimum": "MIN", "lowest": "MIN", "total": "SUM", "sum": "SUM", "median": "MEDIAN"}
DESCENDING = conditions.DESCENDING | {"frequent", "common"}
ASCENDING = conditions.ASCENDING
COMMANDS = re.compile(r"\b(drop|delete|truncate|insert|update|alter|grant|revoke|merge|create|replace)\b\s+"
                      r"(?:(?:the|a|an|all|every|this|that|these|those)\s+)?"
                      r"(tables?|from|into|databases?|schemas?|views?|roles?|users?|warehouses?|all|rows?|data)\b")


@dataclass
class Reading:
    """A question as read so far: the phrases found, the words left, and which words are understood."""

    question: str
    raw: list[str]
    toks: list[str]
    spans: list[Span]
    window: object = None
    grain: str | None = None
    numeric: list = field(default_factory=list)
    ranking: tuple[int, str] | None = None  # (N, the ordering word: "top", "worst", "most", ...)
    identifiers: list = field(default_factory=list)
    used: list[bool] = field(default_factory=list)
    superlative: str | None = None  # "desc" | "asc"
    notes: list[str] = field(default_factory=list)  # assumptions the answer states

    def mark(self, start: int, end: int) -> None:
        self.used[start:end] = [True] * (end - start)

    def spans_of(self, kind: str) -> list[Span]:
        return [s for s in self.spans if s.entry.kind == kind]


class DataQuestionEngine:
    """Question -> Plan over one semantic model; `plan_to_sql` renders it."""

    def __init__(self, model: SemanticModel | None = None, today: Callable[[], dt.date] = dt.date.today):
        self.model = model or load_semantic_model()
        self.vocabulary = self.model.vocabulary
        self.time = TimePhrases(self.vocabulary.time_units, today)
        self.learned: dict[tuple[str, str], set[str]] = {}
        self._rebuild()

    def _rebuild(self) -> None:
        self.lexicon = Lexicon(self.model, self.learned)
        self.phrases = PhraseReader(self.lexicon)

    def learn_values(self, warehouse, max_values: int = 60) -> None:
        """Add the distinct values of each enumerated dimension found in the warehouse to the lexicon."""
        for t in self.model.tables.values():
            for c in (c for c in t.dimensions if c.is_enum):
                value = parse_expr(c.expr)
                sql = exp.select(value.as_("v")).distinct().from_(t.physical()) \
                    .where(exp.Not(this=exp.Is(this=value.copy(), expression=exp.Null()))).limit(max_values)
                try:
                    df = warehouse.query(guard_model_sql(sql.sql(dialect="snowflake"), self.model).sql)
                except Exception:  # noqa: BLE001 - a missing table must not stop questions on the others
                    continue
                values = {str(v) for v in df.iloc[:, 0].tolist() if v is not None and str(v).strip()}
                self.learned[(t.name, c.name)] = {v for v in values if re.fullmatch(r"[A-Za-z0-9 _\-./]{1,60}", v)}
        self._rebuild()

    # -- help
    def suggestions(self) -> list[str]:
        return [v.question for v in self.model.verified_queries] + list(self.vocabulary.example_questions)

    def vocabulary_hint(self) -> str:
        metrics = [m.name for t in self.model.tables.values() for m in t.metrics.values()]
        dims = sorted({c.name for t in self.model.tables.values() for c in t.dimensions})
        return f"Known measures: {', '.join(metrics)}. Known dimensions: {', '.join(dims)}."

    def refuse(self, message: str) -> CannotAnswer:
        return CannotAnswer(message, self.suggestions())

    def verified_match(self, question: str):
        def words(q: str) -> str:
            return " ".join(re.findall(r"[a-z0-9]+", q.lower()))

        return next((v for v in self.model.verified_queries if words(v.question) == words(question)), None)

    # -- the plan
    def plan(self, question: str) -> Plan:
        q = " " + re.sub(r"[\u2018\u2019\u201c\u201d`]", "'", question.lower().strip()) + " "
        if COMMANDS.search(q) or ";" in q:
            raise self.refuse("This assistant only reads the defect data; it does not run commands that change "
                              "tables, and a question may not contain ';'.")
        try:
            return self._plan(q)
        except CannotAnswer as first:
            ratio, rest = self.phrases.ratio_clause(q)
            if ratio is not None:
                try:
                    return self._ratio_plan(ratio, rest)
                except CannotAnswer:
                    pass
            population, rest = self.phrases.share_of_total(q)
            if population is None:
                raise first
            return self._share_plan(population, rest)

    def _plan(self, q: str) -> Plan:
        r = self._read(q)
        measures = self._measures(r)
        self._refuse_unknown_words(r)
        plan = self._new_plan(measures or [self._default_measure(r)], r)
        self._add_conditions(plan, r)
        value_spans = self._add_value_filters(plan, r)
        self._add_dimensions(plan, r, value_spans)
        self._add_time_grain(plan, r)
        self._add_ranking(plan, r)
        return plan

    # -- 1. phrases, then words
    def _read(self, q: str) -> Reading:
        window, text = self.time.window(q)
        time_grain, text = grain(text)
        numeric, text = self.phrases.numeric_conditions(text)
        ranking, text = self.phrases.ranking(text)
        identifiers, text = self.phrases.identifiers_in(text)
        raw = re.findall(r"[a-z0-9]+(?:\.[0-9]+)?", fold_phrases(text).replace("_", " "))
        toks = [stem(t) for t in raw]
        spans = self.lexicon.match(toks, raw, set(re.findall(r"'([a-z0-9 \-]+)'", q)), FILLER)
        r = Reading(q, raw, toks, spans, window, time_grain, numeric, ranking, identifiers, [False] * len(toks))
        for s in spans:
            r.mark(s.start, s.end)
        fact_starts = {s.start for s in spans if s.entry.kind == "fact"}
        for i, word in enumerate(raw):
            if word in AGGREGATES and fact_starts & set(range(i + 1, i + 4)):
                continue  # "max confidence": an aggregate of the fact, not a ranking
            if not r.used[i] and word in DESCENDING | ASCENDING:
                r.superlative = "desc" if word in DESCENDING else "asc"
                r.used[i] = True
        r.spans = self._without_bare_nouns(r.spans)
        return r

    @staticmethod
    def _without_bare_nouns(spans: list[Span]) -> list[Span]:
        """A one-word count ("boards", "defects") beside a more specific measure or a value is a noun, not a
        second measure; with two bare nouns ("defects on boards") the first one is the measure."""
        metrics = [s for s in spans if s.entry.kind == "metric"]
        specific = [s for s in metrics if len(s.entry.tokens) > 1]
        value_ends = {s.end for s in spans if s.entry.kind == "value"}

        def noun(s: Span) -> bool:
            return s.entry.kind == "metric" and len(s.entry.tokens) == 1

        if specific:
            return [s for s in spans if not (noun(s) and (s.start in value_ends or any(
                abs(s.start - o.end) <= 1 or abs(o.start - s.end) <= 1 for o in specific)))]
        bare = [s for s in metrics if noun(s)]
        return [s for s in spans if not (noun(s) and bare and s is not bare[0]
                                         and s.entry.tokens != bare[0].entry.tokens)]

    # -- 2. measures
    def _measures(self, r: Reading) -> list[Measure]:
        measures: list[Measure] = []
        for s in r.spans_of("metric"):
            table, name = s.entry.payload
            if not any(m.name == name for m in measures):
                measures.append(Measure(name, table, parse_expr(self.model.tables[table].metrics[name].expr)))
        return measures + self._aggregated_facts(r)

    def _aggregated_facts(self, r: Reading) -> list[Measure]:
        pending = [(i, AGGREGATES[w]) for i, w in enumerate(r.raw) if w in AGGREGATES and not r.used[i]]
        out, seen = [], set()
        for s in r.spans_of("fact"):
            table, fact = s.entry.payload
            if (table, fact) in seen:
                continue  # "confidence score" is one mention
            seen.add((table, fact))
            agg = self._aggregate_for(s.start, pending, r)
            if agg is None:
                if any(c.fact[1] == fact for c in r.numeric):
                    continue  # the fact is only used in a condition
                agg = self._implicit_aggregate(r, fact)
            col = parse_expr(self.model.tables[table].columns[fact].expr)
            expr = exp.func(agg, col)
            out.append(Measure(f"{agg.lower()}_{fact}", table,
                               exp.func("ROUND", expr, exp.Literal.number(4)) if agg in ("AVG", "MEDIAN") else expr))
        for i, agg in list(pending):
            if agg == "SUM":  # "in total", "total boards inspected": the count itself
                pending.remove((i, agg))
                r.used[i] = True
        if pending:
            word = r.raw[pending[0][0]]
            rest = [w for i, w in enumerate(r.raw) if not r.used[i] and w not in FILLER and w != word]
            what = f" '{' '.join(rest)}'" if rest else " that"
            raise self.refuse(f"I don't know how to compute the {word} of{what}: the model has no such measure. "
                              f"{self.vocabulary_hint()}")
        return out

    @staticmethod
    def _aggregate_for(pos: int, pending: list, r: Reading) -> str | None:
        for j, (apos, agg) in enumerate(pending):
            if 0 < pos - apos <= 3 or (r.superlative is None and 0 < apos - pos <= 1):
                pending.pop(j)
                r.used[apos] = True
                return agg
        return None

    def _implicit_aggregate(self, r: Reading, fact: str) -> str:
        """A fact named without an aggregate: the maximum / minimum after a superlative, else the average."""
        if re.search(r"\b(how many|number of|count)\b", r.question):
            words = fact.replace("_", " ")
            raise self.refuse(f"Do you want the average or the total of {fact}? Ask e.g. 'average {words}' or "
                              f"'total {words}'.")
        if r.superlative and not r.spans_of("dim"):
            agg, r.superlative = ("MAX" if r.superlative == "desc" else "MIN"), None
            return agg
        r.notes.append(f"{fact} is averaged")
        return "AVG"

    def _default_measure(self, r: Reading) -> Measure:
        """No measure named: a count. Which rows: a count metric whose several words are all in the question
        ("boards were manufactured"), else the table of the first noun, value, filter or condition."""
        words = {w[:6] for w in r.toks}
        for t in self.model.tables.values():
            for m in t.metrics.values():
                if any(len(p) > 1 and {w[:6] for w in p} <= words for p in map(phrase_tokens, m.synonyms)):
                    return self._count_of(t, m.name)
        for table, named in self._tables_mentioned(r):
            count = self._count_metric(self.model.tables[table])
            if count is not None:
                if not named:
                    r.notes.append(f"measured as {count.name}")
                return count
        raise self.refuse("I could not find anything to measure in the question. " + self.vocabulary_hint())

    def _tables_mentioned(self, r: Reading) -> list[tuple[str, bool]]:
        """(table, named by a noun or a counting word) in the order the question points at them."""
        named = [(s.entry.payload[0], True) for s in r.spans_of("metric")]
        implied = [(t, False) for s in r.spans_of("value") for t in self.model.tables
                   if s.entry.payload[0] in self.model.tables[t].columns]
        implied += [(s.entry.payload[0], False) for s in r.spans_of("filter")]
        implied += [(c.fact[0], False) for c in r.numeric]
        counting = r.ranking or re.search(r"\b(how many|number|count|breakdown|distribution)\b", r.question)
        if counting:
            implied = [(t, True) for t, _ in implied]
        # "top 3 defect types", "defect types this month": the rows the dimension's words name are counted
        implied += [(s.entry.payload[0], True) for s in r.spans_of("dim")
                    if counting or set(s.entry.tokens) & self._row_nouns(s.entry.payload[0])]
        main = [(next(iter(self.model.tables)), True)] if counting else []  # the first table: the main fact
        return named + implied + main

    def _row_nouns(self, table: str) -> set[str]:
        """One-word names of a table's rows: its synonyms and those of its row count ("defects", "detections")."""
        t = self.model.tables[table]
        count = self._count_metric(t)
        names = [*t.synonyms, *(t.metrics[count.name].synonyms if count else [])]
        return {p[0] for p in map(phrase_tokens, names) if len(p) == 1}

    @staticmethod
    def _count_metric(t: LogicalTable) -> Measure | None:
        m = next((m for m in t.metrics.values() if m.expr.replace(" ", "").upper() == "COUNT(*)"), None)
        return None if m is None else Measure(m.name, t.name, parse_expr(m.expr))

    def _count_of(self, t: LogicalTable, name: str) -> Measure:
        return Measure(name, t.name, parse_expr(t.metrics[name].expr))

    # -- 3. every word understood
    def _refuse_unknown_words(self, r: Reading) -> None:
        unknown = [w for i, w in enumerate(r.raw) if not r.used[i] and w not in FILLER and r.toks[i] not in FILLER]
        if not unknown:
            return
        near = self._did_you_mean(unknown) or self._values_near(unknown, r) or self.vocabulary_hint()
        raise self.refuse(f"I can't map {', '.join(repr(u) for u in unknown)} to the defect data model. {near}")

    def _values_near(self, unknown: list[str], r: Reading) -> str:
        """An unknown word next to a dimension word ("the Tokyo line"): list that dimension's values."""
        for s in r.spans_of("dim"):
            around = r.raw[max(0, s.start - 1):s.start] + r.raw[s.end:s.end + 1]
            if any(u in around for u in unknown):
                table, name = s.entry.payload
                values = sorted(self.lexicon.values_of(table, name))
                if values:
                    return f"Known values of {name}: {', '.join(values)}."
        return ""

    def _did_you_mean(self, unknown: list[str]) -> str:
        names = [n for u in unknown for n in self.lexicon.closest(u)]
        return f"Did you mean {', '.join(dict.fromkeys(names))}? {self.vocabulary_hint()}" if names else ""

    # -- 4. one base table, and what the question filters and groups by
    def _new_plan(self, measures: list[Measure], r: Reading) -> Plan:
        base = measures[0].table
        if any(m.table != base for m in measures):
            names = ", ".join(f"{m.name} ({m.table})" for m in measures)
            raise self.refuse(f"The measures {names} come from different tables with different grains (one row per "
                              "defect vs one row per board); ask for them separately.")
        return Plan(base=self.model.tables[base], measures=measures, window=r.window, grain=r.grain, notes=r.notes)

    def _reachable(self, base: LogicalTable, table: str) -> bool:
        if table == base.name:
            return True
        rel = self.model.relationship(base.name, table)
        # only many-to-one from the base: joining the "one" side keeps the base grain
        return rel is not None and rel.left_table == base.name and rel.relationship_type in ("many_to_one",
                                                                                              "one_to_one")

    def _column(self, base: LogicalTable, name: str, kinds: tuple[str, ...],
                candidates: tuple[tuple[str, str], ...] = ()) -> tuple[str, str] | None:
        """A column reachable from the base: the named candidates first (the base table's before the others),
        then any table with a column of that name."""
        pairs = list(candidates) + [(t, name) for t in self.model.tables]
        pairs.sort(key=lambda tc: (tc not in candidates, tc[0] != base.name))
        for table, column in pairs:
            col = self.model.tables[table].columns.get(column)
            if col is not None and col.kind in kinds and self._reachable(base, table):
                return table, column
        return None

    def _add_conditions(self, plan: Plan, r: Reading) -> None:
        base = plan.base
        for s in r.spans_of("filter"):
            table, name = s.entry.payload
            if not self._reachable(base, table):
                raise self.refuse(f"the filter {name} belongs to {table}, which cannot be joined to {base.name}.")
            f = self.model.tables[table].filters[name]
            plan.conditions.append(Condition(table, parse_expr(f.expr), f"{name} ({f.expr})"))
        for c in r.numeric:
            found = self._column(base, c.fact[1], ("fact",))
            if found is None:
                raise self.refuse(f"The condition on {c.fact[1]} does not apply to {base.name}.")
            col = parse_expr(self.model.tables[found[0]].columns[found[1]].expr)
            value = exp.Literal.number(f"{c.value:g}" if isinstance(c.value, float) else c.value)
            plan.conditions.append(Condition(found[0], _compare(c.op, col, value), f"{c.fact[1]} {c.op} {c.value:g}"))
        for name, value in r.identifiers:
            found = self._column(base, name, ("dimension",))
            if found is None:
                raise self.refuse(f"{base.name} cannot be filtered by {name}.")
            col = parse_expr(self.model.tables[found[0]].columns[name].expr)
            plan.conditions.append(Condition(found[0], col.eq(exp.Literal.string(value)), f"{name} = {value}"))

    def _add_value_filters(self, plan: Plan, r: Reading) -> dict[str, list[tuple[int, int]]]:
        """Values -> filters; returns, per dimension, where its values were named."""
        where: dict[str, list[tuple[int, int]]] = {}
        for s in r.spans_of("value"):
            dim, value = s.entry.payload
            found = self._value_dimension(plan.base, dim, value)
            if found is None:
                raise self.refuse(f"{value!r} is a value of {dim}, which cannot be combined with "
                                  f"{plan.measures[0].name} (no relationship from {plan.base.name}).")
            ref = Dimension(found[0], self.model.tables[found[0]].columns[found[1]])
            f = next((f for f in plan.filters if f.dimension == ref), None)
            if f is None:
                plan.filters.append(ValueFilter(ref, [value]))
            elif value not in f.values:
                f.values.append(value)
            where.setdefault(found[1], []).append((s.start, s.end))
        return where

    def _value_dimension(self, base: LogicalTable, dim: str, value: str) -> tuple[str, str] | None:
        """A value may belong to several dimensions (SHANGHAI: factory_line_id, manufacturing_line)."""
        owners = [(t.name, c.name) for t in self.model.tables.values() for c in t.dimensions
                  if value in self.lexicon.values_of(t.name, c.name)]
        owners.sort(key=lambda tc: (tc[0] != base.name, tc[1] != dim))
        return next((tc for tc in owners if self._reachable(base, tc[0])), None)

    def _add_dimensions(self, plan: Plan, r: Reading, value_spans: dict[str, list[tuple[int, int]]]) -> None:
        for s in r.spans_of("dim"):
            found = self._column(plan.base, s.entry.payload[1], ("dimension",), s.entry.candidates)
            if found is None:
                table, name = s.entry.payload
                raise self.refuse(f"{name} is recorded in {table}, which cannot be combined with "
                                  f"{plan.measures[0].name} ({plan.base.name}): there is no relationship that keeps "
                                  "the counts right.")
            if self._names_a_filter(s, value_spans.get(found[1], []), r.raw):
                continue
            ref = Dimension(found[0], self.model.tables[found[0]].columns[found[1]])
            if ref not in plan.dimensions:
                plan.dimensions.append(ref)
        if re.search(r"\b(compare|comparison|versus|vs|each)\b", r.question):  # several values side by side
            plan.dimensions += [f.dimension for f in plan.filters
                                if len(f.values) > 1 and f.dimension not in plan.dimensions]

    @staticmethod
    def _names_a_filter(s: Span, value_spans: list[tuple[int, int]], raw: list[str]) -> bool:
        """"the Shanghai line", "line PENANG": the dimension word only names the filter, unless a grouping word
        stands right before it ("Shanghai and Penang by line")."""
        if not value_spans:
            return False
        adjacent = any(ve == s.start or vs == s.end or (ve == s.start - 1 and raw[s.start - 1] == "the")
                       for vs, ve in value_spans)
        near = any(abs(vs - s.start) <= 3 for vs, _ in value_spans)
        return (adjacent or near) and not _direct_cue(raw, s.start)

    def _add_time_grain(self, plan: Plan, r: Reading) -> None:
        """"which day ...", "when ..." with a superlative or a grouping cue: a daily series."""
        if plan.grain:
            return
        grains = {"day": "DAY", "week": "WEEK", "month": "MONTH"}
        for s in r.spans_of("time_dim"):
            word = r.raw[s.start]
            if word in grains and (r.superlative or r.ranking or _has_cue(r.raw, s.start)):
                plan.grain = grains[word]

    def _add_ranking(self, plan: Plan, r: Reading) -> None:
        if r.ranking is not None:
            n, word = r.ranking
            plan.ranking = Ranking(n, self._descending(plan, word in DESCENDING, {word}))
        elif r.superlative:
            plan.ranking = Ranking(1, self._descending(plan, r.superlative == "desc", set(r.raw)))
        if plan.ranking is None or plan.dimensions or plan.grain:
            return
        # "the most common defect", "top 3 defects": rank the base table's countable values
        countable = [c for c in plan.base.dimensions if c.name in self.vocabulary.countable_value_dimensions]
        if not countable:
            raise self.refuse("A ranking needs something to rank by, e.g. 'which factory line has the most defects'.")
        plan.dimensions.append(Dimension(plan.base.name, countable[0]))

    def _descending(self, plan: Plan, descending: bool, words: set[str]) -> bool:
        """"best" and "worst" rank from the top of a measure where more is better (yield), else from the bottom."""
        if plan.measures[0].name in self.vocabulary.higher_is_better and {"best", "worst"} & words:
            return "best" in words
        return descending

    # -- ratios
    def _ratio_plan(self, ratio: RatioClause, rest: str) -> Plan:
        """'percentage of boards that passed on line X': the population's count, and the clause it counts."""
        plan = self._plan(rest)
        # the clause before its noun, so that the clause's own words lead ("how many scrapped boards")
        clause = self._plan(f" how many {ratio.clause} {ratio.population} ")
        whole = plan.measures[0]
        if len(plan.measures) > 1 or whole.expr is None or whole.expr.sql().upper() != "COUNT(*)":
            raise self.refuse(f"A percentage counts rows; '{ratio.population}' is not a count of rows.")
        if clause.base.name != plan.base.name or clause.dimensions or clause.grain or clause.window:
            raise self.refuse(f"'{ratio.clause}' cannot be counted among {ratio.population}.")
        numerator = tuple(_value_condition(f) for f in clause.filters) + tuple(clause.conditions) + \
            tuple(c for m in clause.measures for c in _counted_condition(m))
        if not numerator:
            raise self.refuse(f"I don't know which {ratio.population} '{ratio.clause}' means. "
                              + self.vocabulary_hint())
        name = "percentage_" + "_".join(re.findall(r"[a-z0-9]+", ratio.clause))[:40]
        plan.measures = [Measure(name, plan.base.name, None, numerator)]
        return plan

    def _share_plan(self, population: str, rest: str) -> Plan:
        """'percentage of defects by line': each group's share of all the population's rows in the window."""
        plan = self._plan(rest)
        if len(plan.measures) > 1 or plan.measures[0].expr is None or plan.measures[0].expr.sql().upper() != \
                "COUNT(*)":
            raise self.refuse(f"A percentage counts rows; '{population}' is not a count of rows.")
        if not (plan.dimensions or plan.grain):
            raise self.refuse(f"A percentage of all {population} needs a part to measure: which {population} "
                              "(e.g. 'percentage of defects that are shorts') or by what (e.g. 'by line')?")
        plan.measures = [Measure(f"share_of_{plan.measures[0].name}_pct", plan.base.name, share_of_total())]
        plan.notes.append(f"each group's percentage of all {population} in the answer")
        return plan


def share_of_total() -> exp.Expression:
    """Each group's rows as a percentage of all rows: COUNT(*) over SUM(COUNT(*)) OVER ()."""
    return percentage(exp.Count(this=exp.Star()), exp.Window(this=exp.Sum(this=exp.Count(this=exp.Star()))))


def _compare(op: str, left: exp.Expression, right: exp.Expression) -> exp.Expression:
    node = {"<": exp.LT, "<=": exp.LTE, ">": exp.GT, ">=": exp.GTE, "=": exp.EQ}[op]
    return node(this=left, expression=right)


def _counted_condition(m: Measure) -> list[Condition]:
    """The condition a metric counts, when it counts one (`COUNT_IF(defect_count > 6)` in the scrap rate)."""
    counted = list(m.expr.find_all(exp.CountIf)) if m.expr is not None else []
    return [Condition(m.table, counted[0].this.copy(), f"{m.name} counts {counted[0].this.sql('snowflake')}")] \
        if len(counted) == 1 else []


def _value_condition(f: ValueFilter) -> Condition:
    col = parse_expr(f.dimension.column.expr)
    values = [exp.Literal.string(v) for v in f.values]
    expr = col.eq(values[0]) if len(values) == 1 else col.isin(*values)
    return Condition(f.dimension.table, expr, f"{f.dimension.name} {'=' if len(values) == 1 else 'in'} "
                                              f"{', '.join(f.values)}")


def _direct_cue(raw: list[str], pos: int) -> bool:
    cues = ("by", "per", "each", "across", "every")
    return (pos >= 1 and raw[pos - 1] in cues) or (pos >= 2 and raw[pos - 2] in cues
                                                   and raw[pos - 1] in ("the", "each", "every", "a", "all"))


def _has_cue(raw: list[str], pos: int) -> bool:
    """A grouping word right before a dimension: "by line", "per shift", "for each product", "which line"."""
    before = raw[max(0, pos - 3):pos]
    if not before:
        return False
    if before[-1] in GROUP_CUES or (len(before) >= 2 and before[-2] in GROUP_CUES
                                    and before[-1] in ("the", "each", "every", "a", "all")):
        return True
    return any(b in ("breakdown", "distribution", "split", "compare", "comparison") for b in raw[max(0, pos - 4):pos])
