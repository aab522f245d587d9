"""Evaluation of both knowledge paths against the sets in bench/eval/ (used by the bench script and the tests)."""
from __future__ import annotations

import math
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import yaml


def eval_dir() -> Path:
    from pcb_pipeline.settings import REPO_ROOT

    return REPO_ROOT / "bench" / "eval"


def load_eval(name: str, directory: Path | None = None) -> list[dict]:
    with open((directory or eval_dir()) / name, encoding="utf-8") as f:
        return yaml.safe_load(f)


def _norm_value(v):
    if v is None:
        return None
    if hasattr(v, "item"):
        v = v.item()
    if hasattr(v, "isoformat"):
        v = v.isoformat()
    if isinstance(v, str):
        s = v.replace("T00:00:00", "").replace(" 00:00:00", "")
        try:
            v = float(s) if s.replace(".", "", 1).lstrip("-").isdigit() else s
        except ValueError:
            v = s
        if isinstance(v, str):
            return v
    if isinstance(v, bool):
        return v
    if isinstance(v, (int, float)):
        f = float(v)
        return None if math.isnan(f) else round(f, 3)
    return str(v)


def rows_multiset(rows) -> Counter:
    return Counter(tuple(_norm_value(v) for v in r) for r in rows)


def frame_multiset(df) -> Counter:
    return rows_multiset(df.itertuples(index=False, name=None))


@dataclass
class EvalReport:
    total: int = 0
    correct: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    failures: list[dict] = field(default_factory=list)
    extra: dict = field(default_factory=dict)

    @property
    def accuracy(self) -> float:
        return self.correct / self.total if self.total else 0.0

    def latency(self) -> dict:
        lat = sorted(self.latencies_ms)
        if not lat:
            return {}
        p95 = lat[min(len(lat) - 1, int(math.ceil(0.95 * len(lat))) - 1)]
        return {"p50_ms": round(statistics.median(lat), 1), "p95_ms": round(p95, 1), "max_ms": round(lat[-1], 1),
                "mean_ms": round(statistics.mean(lat), 1)}


def evaluate_data(ask, warehouse, items: list[dict]) -> EvalReport:
    """`ask(question, warehouse) -> dict` (ask_data's shape). Reference SQL runs directly on the warehouse."""
    rep = EvalReport()
    for it in items:
        rep.total += 1
        t = time.perf_counter()
        out = ask(it["question"], warehouse)
        rep.latencies_ms.append((time.perf_counter() - t) * 1000)
        if it.get("expect") == "cannot_answer":
            ok = out.get("sql") is None and bool(out.get("suggestions"))
        else:
            expected = frame_multiset(warehouse.query(it["expected_sql"]))
            ok = out.get("sql") is not None and rows_multiset(out["rows"]) == expected
        if ok:
            rep.correct += 1
        else:
            rep.failures.append({"id": it["id"], "question": it["question"], "sql": out.get("sql"),
                                 "interpretation": out.get("interpretation"), "rows": out.get("rows", [])[:5]})
    return rep


def evaluate_manuals(search, items: list[dict]) -> EvalReport:
    """Answer-level accuracy (a citation from the expected document/section) and retrieval hit@1 / hit@3."""
    rep = EvalReport()
    hit1 = hit3 = n_ret = 0
    for it in items:
        rep.total += 1
        t = time.perf_counter()
        ans = search.answer(it["question"], category=it.get("category"))
        rep.latencies_ms.append((time.perf_counter() - t) * 1000)
        if it.get("expect") == "no_answer":
            ok = not ans.citations
        else:
            ok = any(c.document == it["document"] and (not it.get("section") or c.section == it["section"])
                     for c in ans.citations)
            hits = search.search(it["question"], category=it.get("category"), k=3)
            docs = [h.chunk.document for h in hits]
            n_ret += 1
            hit1 += bool(docs[:1] == [it["document"]])
            hit3 += it["document"] in docs
        if ok:
            rep.correct += 1
        else:
            rep.failures.append({"id": it["id"], "question": it["question"],
                                 "cited": [(c.document, c.page, c.section) for c in ans.citations],
                                 "answer": ans.answer[:300]})
    rep.extra = {"retrieval_hit@1": hit1 / n_ret if n_ret else 0.0, "retrieval_hit@3": hit3 / n_ret if n_ret else 0.0,
                 "retrieval_questions": n_ret}
    return rep
