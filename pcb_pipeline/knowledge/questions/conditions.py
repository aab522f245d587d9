"""Phrases read before the words: numeric conditions on facts, top-N, identifiers, the clause of a ratio.

Each reader returns what it found and the question with the phrase blanked out, so that the word matcher sees only
what is left. Fact and dimension phrases come from the lexicon (the semantic model), never from this file.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from .lexicon import Lexicon
from .time_phrases import NUMBER, blank, number

COMPARISONS = [(r"at\s+most|no\s+more\s+than|<=", "<="), (r"at\s+least|no\s+less\s+than|>=", ">="),
               (r"below|under|less\s+than|lower\s+than|fewer\s+than|<", "<"),
               (r"above|over|greater\s+than|more\s+than|higher\s+than|>", ">"),
               (r"exactly|equal\s+to|=", "=")]
_CMP = "|".join(f"(?:{rx})" for rx, _ in COMPARISONS)
_HAVING = r"with|having|had|has|that\s+had|that\s+have|that\s+has"
RATIO_WORDS = r"percentage|percent|share|fraction|proportion"
DESCENDING = {"most", "highest", "largest", "biggest", "worst", "max", "maximum", "top", "greatest", "first"}
ASCENDING = {"least", "lowest", "fewest", "smallest", "best", "min", "minimum", "bottom", "rarest", "last"}
RATIO_CLAUSE_MARKERS = r"that|which|who|were|was|are|is|with|having|had|got|being"
CLAUSE_END = r"on|in|at|for|by|per|from|during|over|across|last|this|past|yesterday|today|since|between|and"


@dataclass(frozen=True)
class NumericCondition:
    fact: tuple[str, str]  # (table, fact name)
    op: str
    value: float | int


@dataclass(frozen=True)
class RatioClause:
    population: str  # "boards", "defects"
    clause: str  # "passed", "are shorts", "with more than 3 defects"


def comparison(word: str) -> str:
    w = re.sub(r"\s+", " ", word.strip())
    return next((op for rx, op in COMPARISONS if re.fullmatch(rx, w)), "=")


def _alternatives(phrases) -> str:
    return "|".join(re.escape(p) for p in sorted(set(phrases), key=len, reverse=True))


class PhraseReader:
    """Regular-expression readers built from one lexicon."""

    def __init__(self, lexicon: Lexicon):
        self.lexicon = lexicon
        model = lexicon.model
        self.facts = {(t.name, c.name): [s.lower() for s in c.synonyms]
                      for t in model.tables.values() for c in t.facts if c.synonyms}
        self.fractions = model.vocabulary.fraction_facts
        self.identifiers = {c.name: model.vocabulary.identifier_words.get(c.name, [])
                            for t in model.tables.values() for c in t.dimensions if not c.is_enum}

    def numeric_conditions(self, text: str) -> tuple[list[NumericCondition], str]:
        """'confidence below 0.5', 'confidence above 90%', 'boards with more than 5 defects' (one per fact)."""
        found = []
        for fact, phrases in self.facts.items():
            words = _alternatives(phrases)
            after = re.search(rf"\b(?:{words})s?\s+(?:is\s+|was\s+|of\s+|are\s+)?({_CMP})\s*(\d+(?:\.\d+)?)\s*"
                              rf"(%|percent\b)?", text)
            before = re.search(rf"\b(?:({_HAVING})\s+)?(?:({_CMP})\s*)?({NUMBER})\s+(?:{words})s?\b", text)
            if after:
                value = float(after.group(2))
                if fact[1] in self.fractions and (after.group(3) or value > 1):
                    value /= 100.0
                found.append(NumericCondition(fact, comparison(after.group(1)), value))
                text = blank(text, after)
            elif before and (before.group(1) or before.group(2)):  # "3 defects" alone is not a condition
                op = comparison(before.group(2)) if before.group(2) else "="
                found.append(NumericCondition(fact, op, number(before.group(3))))
                text = blank(text, before)
        return found, text

    def ranking(self, text: str) -> tuple[tuple[int, str] | None, str]:
        """(N, the word that orders): 'top 3', 'worst 2', 'the two most common', 'three lowest'."""
        n = r"\d+|one|two|three|four|five|six|seven|eight|nine|ten"
        m = re.search(rf"\b(top|bottom|first|last|best|worst)\s+({n})\b", text)
        if m:
            return (number(m.group(2)), m.group(1)), blank(text, m)
        m = re.search(rf"\b({n})\s+({'|'.join(DESCENDING | ASCENDING)})\b", text)
        if m:
            return (number(m.group(1)), m.group(2)), blank(text, m)
        return None, text

    def identifiers_in(self, text: str) -> tuple[list[tuple[str, str]], str]:
        """'board 20085000', 'batch upload-17': (dimension name, value) for dimensions that are not enumerated."""
        found = []
        for dim, words in self.identifiers.items():
            if not words:
                continue
            rx = rf"\b(?:{_alternatives(words)})s?\s+(?:id\s+|number\s+|#\s*)?([a-z0-9_-]*\d[a-z0-9_.-]*)\b"
            for m in list(re.finditer(rx, text)):
                found.append((dim, m.group(1)))
                text = blank(text, m)
        return found, text

    @staticmethod
    def ratio_clause(text: str) -> tuple[RatioClause | None, str]:
        """'percentage of boards that passed on line X' -> (boards, passed) and the question with the clause
        replaced by a count of the population ('how many boards on line X')."""
        m = re.search(rf"\b(?:{RATIO_WORDS})\s+of\s+(?:the\s+|all\s+)?([a-z]+)\b", text)
        if not m:
            return None, text
        after = text[m.end():]
        marker = re.search(rf"\b(?:{RATIO_CLAUSE_MARKERS})\s+(?:(?:{RATIO_CLAUSE_MARKERS})\s+)*", after)
        start = marker.end() if marker else len(after) - len(after.lstrip())
        clause = re.match(rf"(?!(?:{CLAUSE_END})\b)(.+?)(?=\s+(?:{CLAUSE_END})\b|\s*[?.!]|\s*$)", after[start:])
        if not clause:
            return None, text
        between = after[:marker.start()] if marker else ""
        rest = text[: m.start()] + f" how many {m.group(1)} {between} " + after[start + clause.end():]
        return RatioClause(m.group(1), clause.group(1).strip()), rest

    @staticmethod
    def share_of_total(text: str) -> tuple[str | None, str]:
        """'percentage of defects by line', 'what share of all defects does each line account for': the population,
        and the question as a count of it (each group's share of the whole)."""
        m = re.search(rf"\b(?:{RATIO_WORDS})\s+of\s+(?:the\s+|all\s+)?([a-z]+)\b", text)
        if not m:
            return None, text
        return m.group(1), text[: m.start()] + f" how many {m.group(1)} " + text[m.end():]
