"""The evaluation sets in bench/eval/ as regression tests (the bench script reports the same numbers + latency)."""
from __future__ import annotations

import pytest

from pcb_pipeline.knowledge.api import ask_data
from pcb_pipeline.knowledge.evaluation import evaluate_data, evaluate_manuals, load_eval


def test_eval_sets_are_big_enough():
    data = load_eval("data_questions.yaml")
    manuals = load_eval("manual_questions.yaml")
    assert sum("expected_sql" in d for d in data) >= 25 and sum(d.get("expect") == "cannot_answer" for d in data) >= 5
    assert sum("document" in m for m in manuals) >= 25
    ids = [d["id"] for d in data] + [m["id"] for m in manuals]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("name", ["data_questions.yaml", "data_questions_holdout.yaml"])
def test_data_questions(warehouse, name):
    rep = evaluate_data(ask_data, warehouse, load_eval(name))
    assert rep.accuracy == 1.0, rep.failures


@pytest.mark.parametrize("name", ["manual_questions.yaml", "manual_questions_holdout.yaml"])
def test_manual_questions(manual_search, name):
    rep = evaluate_manuals(manual_search, load_eval(name))
    assert rep.accuracy >= 0.95, rep.failures
    assert rep.extra["retrieval_hit@3"] >= 0.95
