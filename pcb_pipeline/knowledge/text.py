"""Text normalisation shared by the manual search (BM25) and the question -> SQL matcher."""
from __future__ import annotations

import re

STOPWORDS = frozenset("""
a about above after again against all am an and any are as at be because been before being below between both but
by can could did do does doing down during each few for from further had has have having he her here hers herself
him himself his how i if in into is it its itself just me more most my myself no nor not now of off on once only or
other our ours ourselves out over own same she should so some such than that the their theirs them themselves then
there these they this those through to too under until up very was we were what when where which while who whom why
will with would you your yours yourself yourselves tell show give please explain describe let
""".split())

# Phrases folded into one token before tokenising, so that "mouse bite", "mouse-bites" and "mousebite" meet, and
# "Class 2" stays one term instead of the very common "class" plus the number "2".
_PHRASES = [
    (re.compile(r"\bmouse[\s-]?bites?\b"), "mousebite"),
    (re.compile(r"\bpin[\s-]?holes?\b"), "pinhole"),
    (re.compile(r"\bspurious[\s-]+copper\b"), "spurious_copper"),
    (re.compile(r"\bshort[\s-]+circuits?\b"), "short"),
    (re.compile(r"\bopen[\s-]+circuits?\b"), "open"),
    (re.compile(r"\bclass[\s-]*([123])\b"), r"class_\1"),
    (re.compile(r"\bipc[\s-]*a[\s-]*610\b"), "ipc_a_610"),
]


def fold_phrases(text: str) -> str:
    out = text.lower()
    for rx, rep in _PHRASES:
        out = rx.sub(rep, out)
    return out


def stem(word: str) -> str:
    """A deliberately small suffix stripper: plural and a few verb endings. Enough for BM25 on a 10-document corpus."""
    w = word
    if len(w) <= 3 or "_" in w:
        return w
    for suffix, rep in (("ies", "y"), ("sses", "ss"), ("ches", "ch"), ("shes", "sh")):
        if w.endswith(suffix):
            return w[: -len(suffix)] + rep
    if w.endswith("s") and not w.endswith(("ss", "us", "is")):
        w = w[:-1]
    for suffix in ("ing", "ed"):
        if w.endswith(suffix) and len(w) - len(suffix) >= 4:
            w = w[: -len(suffix)]
            if len(w) > 2 and w[-1] == w[-2] and w[-1] not in "ls":  # scrapp -> scrap
                w = w[:-1]
            break
    return w


def tokenize(text: str, keep_stopwords: bool = False) -> list[str]:
    toks = re.findall(r"[a-z0-9_]+(?:\.[0-9]+)?", fold_phrases(text))
    return [stem(t) for t in toks if keep_stopwords or t not in STOPWORDS]
