"""The words of the semantic model: every name, synonym, sample value and value alias as a phrase of stems, and the
phrase matcher that finds them in a question. The YAML is the only vocabulary: nothing here names a table,
column or value."""
from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

from ..semantic_model import SemanticModel
from ..text import fold_phrases, stem

KIND_PRIORITY = {"metric": 0, "filter": 1, "value": 2, "dim": 3, "fact": 4, "time_dim": 5}
# words a phrase of the model may skip between two of its words ("number of the defects")
SKIPPABLE = frozenset({"the", "a", "an", "were", "was", "are", "is", "been", "have", "has", "did", "of", "per", "on",
                       "in", "for", "with"})


@dataclass(frozen=True)
class Entry:
    """One phrase and what it may mean: `candidates` are (table, name) pairs of one kind (for a value:
    (dimension, value)); the planner picks the one the question's base table can reach."""

    tokens: tuple[str, ...]
    kind: str  # metric | fact | dim | value | filter | time_dim
    candidates: tuple[tuple[str, str], ...]
    ambiguous: bool = False  # a value that is also an ordinary word

    @property
    def payload(self) -> tuple[str, str]:
        return self.candidates[0]


@dataclass(frozen=True)
class Span:
    start: int
    end: int
    entry: Entry


def phrase_tokens(text: str) -> tuple[str, ...]:
    return tuple(stem(t) for t in re.findall(r"[a-z0-9]+", fold_phrases(str(text)).replace("_", " ")))


class Lexicon:
    def __init__(self, model: SemanticModel, learned: dict[tuple[str, str], set[str]] | None = None):
        self.model = model
        self.vocabulary = model.vocabulary
        self.learned = learned or {}
        self.entries = self._merge(self._phrases())
        self.known_tokens = {t for e in self.entries for t in e.tokens}

    # -- building
    def values_of(self, table: str, column: str) -> set[str]:
        col = self.model.tables[table].columns[column]
        return set(col.sample_values) | self.learned.get((table, column), set())

    def _phrases(self) -> list[tuple[tuple[str, ...], str, tuple[str, str], bool]]:
        out = []
        for t in self.model.tables.values():
            for kind, items in (("metric", t.metrics.values()), ("filter", t.filters.values())):
                out += [(phrase_tokens(p), kind, (t.name, m.name), False) for m in items for p in [m.name, *m.synonyms]]
            for c in t.columns.values():
                kind = {"dimension": "dim", "time_dimension": "time_dim", "fact": "fact"}[c.kind]
                # a fact is named by its synonyms only: an identifier like "defects_on_board" reads as ordinary words
                names = list(c.synonyms) if c.kind == "fact" else [c.name, *c.synonyms]
                out += [(phrase_tokens(p), kind, (t.name, c.name), False) for p in names]
                if c.kind == "dimension":
                    out += self._value_phrases(c.name, self.values_of(t.name, c.name))
        return out

    def _value_phrases(self, dimension: str, values: set[str]) -> list:
        out = []
        for v in values:
            for phrase in {v, *self.vocabulary.aliases_of(dimension, v)}:
                toks = phrase_tokens(phrase)
                out.append((toks, "value", (dimension, v), len(toks) == 1 and toks[0] in self._ambiguous))
        # the first word of a multi-word value alone ("automotive" -> AUTOMOTIVE_ECU) when no other value shares it
        firsts: dict[str, set[str]] = {}
        for v in values:
            toks = phrase_tokens(v)
            if len(toks) > 1:
                firsts.setdefault(toks[0], set()).add(v)
        out += [((tok,), "value", (dimension, next(iter(vs))), tok in self._ambiguous)
                for tok, vs in firsts.items() if len(vs) == 1 and len(tok) > 2]
        return out

    @property
    def _ambiguous(self) -> set[str]:
        return {stem(w.lower()) for w in self.vocabulary.ambiguous_values}

    @staticmethod
    def _merge(phrases) -> list[Entry]:
        """One entry per (phrase, kind), its candidates in model order; longest phrases first."""
        merged: dict[tuple, list] = {}
        for toks, kind, payload, ambiguous in phrases:
            if not toks:
                continue
            slot = merged.setdefault((toks, kind), [[], False])
            if payload not in slot[0]:
                slot[0].append(payload)
            slot[1] = slot[1] or ambiguous
        entries = [Entry(toks, kind, tuple(c), amb) for (toks, kind), (c, amb) in merged.items()]
        return sorted(entries, key=lambda e: (-len(e.tokens), KIND_PRIORITY[e.kind]))

    # -- matching
    def match(self, toks: list[str], raw: list[str], quoted: set[str], filler: frozenset[str] = frozenset()) \
            -> list[Span]:
        """Longest phrases first; a phrase may skip one skippable word between two of its words. When that leaves a
        meaningful word (not in `filler`) unexplained, the cover that explains the most words is taken instead
        ("number of boards produced": "boards produced", not "number of boards" and an unknown "produced")."""
        greedy = self._longest_first(toks, raw, quoted)
        left = self._unexplained(greedy, toks, raw, filler)
        if not filler or not left:
            return greedy
        best = self._best_cover(toks, raw, quoted, filler)
        return best if self._unexplained(best, toks, raw, filler) < left else greedy

    @staticmethod
    def _unexplained(spans: list[Span], toks: list[str], raw: list[str], filler: frozenset[str]) -> int:
        covered = {i for s in spans for i in range(s.start, s.end)}
        return sum(1 for i in range(len(toks)) if i not in covered and raw[i] not in filler and toks[i] not in filler)

    def _best_cover(self, toks: list[str], raw: list[str], quoted: set[str], filler: frozenset[str]) -> list[Span]:
        """Non-overlapping phrases leaving the fewest meaningful words unexplained, then the fewest phrases
        (dynamic programming from the end of the question; ties keep the lexicon's order)."""
        free = [False] * len(toks)
        best: list[tuple[int, int, list[Span]]] = [(0, 0, [])] * (len(toks) + 1)
        for i in range(len(toks) - 1, -1, -1):
            skip = best[i + 1]
            choice = (skip[0] + int(raw[i] not in filler and toks[i] not in filler), skip[1], skip[2])
            for e in self.entries:
                if e.tokens[0] != toks[i]:
                    continue
                j = self._phrase_end(e, i, toks, raw, free)
                if j is None or (e.ambiguous and not self._value_in_context(i, toks, raw, quoted, e)):
                    continue
                option = (best[j][0], best[j][1] + 1, [Span(i, j, e)] + best[j][2])
                if option[:2] < choice[:2]:
                    choice = option
            best[i] = choice
        return best[0][2]

    def _longest_first(self, toks: list[str], raw: list[str], quoted: set[str]) -> list[Span]:
        taken = [False] * len(toks)
        spans = []
        for e in self.entries:
            for i in range(len(toks)):
                if taken[i] or toks[i] != e.tokens[0]:
                    continue
                j = self._phrase_end(e, i, toks, raw, taken)
                if j is None or (e.ambiguous and not self._value_in_context(i, toks, raw, quoted, e)):
                    continue
                spans.append(Span(i, j, e))
                taken[i:j] = [True] * (j - i)
        return sorted(spans, key=lambda s: s.start)

    @staticmethod
    def _phrase_end(e: Entry, i: int, toks: list[str], raw: list[str], taken: list[bool]) -> int | None:
        j, k = i + 1, 1
        while k < len(e.tokens):
            if j < len(toks) and not taken[j] and toks[j] == e.tokens[k]:
                j, k = j + 1, k + 1
            elif j + 1 < len(toks) and raw[j] in SKIPPABLE and not taken[j + 1] and toks[j + 1] == e.tokens[k]:
                j, k = j + 2, k + 1
            else:
                return None
        return None if any(taken[i:j]) else j

    def _value_in_context(self, i: int, toks: list[str], raw: list[str], quoted: set[str], e: Entry) -> bool:
        """An ordinary word is a value only in quotes, as a plural, beside a context word or its dimension's words,
        or in a list of values of the same dimension ("open and short")."""
        dim = e.payload[0]
        plural = raw[i].endswith("s") and raw[i][:-1] == toks[i]
        if raw[i] in quoted or (plural and dim in self.vocabulary.countable_value_dimensions):
            return True
        dim_tokens = {t for x in self.entries if x.kind == "dim" for _, c in x.candidates if c == dim
                      for t in x.tokens}
        context = {stem(w) for w in self.vocabulary.context_words} | dim_tokens
        if {toks[j] for j in (i - 1, i + 1) if 0 <= j < len(toks)} & context:
            return True
        others = {x.tokens[0] for x in self.entries if x.kind == "value" and x.payload[0] == dim
                  and len(x.tokens) == 1 and x.tokens[0] != toks[i]}
        for j in (i - 2, i - 1, i + 1, i + 2):
            if 0 <= j < len(toks) and toks[j] in others and all(b in ("and", "or")
                                                               for b in raw[min(i, j) + 1:max(i, j)]):
                return True
        return False

    # -- help for a refusal
    def closest(self, word: str, cutoff: float = 0.8) -> list[str]:
        """Names of the measures and dimensions whose words are spelled like `word` ("prodcut" -> product_type)."""
        words = {t for e in self.entries if e.kind in ("metric", "dim", "fact", "filter") for t in e.tokens}
        near = difflib.get_close_matches(stem(word), sorted(words), n=2, cutoff=cutoff)
        names = []
        for e in self.entries:
            if e.kind in ("metric", "dim", "fact", "filter") and set(e.tokens) & set(near):
                for _, name in e.candidates:
                    if name not in names:
                        names.append(name)
        return names[:4]
