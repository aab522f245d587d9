"""The Cortex Analyst semantic model YAML: contents, validation, verified queries incl. the golden query."""
from __future__ import annotations

import pytest
import yaml

from knowledge_golden import GOLDEN_QUERY, GOLDEN_QUESTION
from pcb_pipeline.knowledge.evaluation import frame_multiset
from pcb_pipeline.knowledge.semantic_model import (SemanticModelError, default_semantic_model_path,
                                                   load_semantic_model, logical_to_physical, parse_semantic_model)


def test_required_measures_dimensions_time_and_relationships(model):
    metrics = {m for t in model.tables.values() for m in t.metrics}
    assert {"defect_count", "average_confidence_score", "scrap_rate_percentage", "yield_rate_percentage",
            "defects_per_board"} <= metrics
    dims = {c.name for t in model.tables.values() for c in t.dimensions}
    assert {"defect_type", "factory_line_id", "production_shift", "product_type"} <= dims
    assert model.tables["defect_logs"].time_dimensions[0].expr == "timestamp"
    rel = model.relationship("defect_logs", "pcb_metadata")
    assert rel and rel.relationship_type == "many_to_one" and rel.columns == [("board_id", "board_id")]
    dt = model.tables["defect_logs"].columns["defect_type"]
    assert dt.expr == "detected_class" and set(dt.sample_values) == {"open", "short", "mousebite", "spur", "copper",
                                                                      "pin-hole"}
    assert dt.synonyms and model.tables["defect_logs"].columns["factory_line_id"].sample_values == [
        "SHANGHAI", "SHENZHEN", "PENANG", "GUADALAJARA"]


def test_product_and_shift_values_match_the_metadata_generator(model):
    from pcb_pipeline.core.metadata import PRODUCT_TYPES, SHIFTS

    meta = model.tables["pcb_metadata"].columns
    assert set(meta["product_type"].sample_values) == set(PRODUCT_TYPES)
    assert set(meta["production_shift"].sample_values) == set(SHIFTS)


def test_scrap_rule_is_explicit_and_documented(model):
    text = default_semantic_model_path().read_text()
    assert "DISP-1" in text and "defect_count > 6" in text
    scrap = model.metric("scrap_rate_percentage")
    assert "defect_count > 6" in scrap.expr and "DISP-1" in scrap.description


def test_golden_query_is_a_verified_query_and_returns_the_golden_result(model, warehouse):
    vq = next(v for v in model.verified_queries if v.question == GOLDEN_QUESTION)
    physical = logical_to_physical(vq.sql, model)
    assert "FROM DEFECT_LOGS" in physical and "detected_class" in physical and "__" not in physical
    assert frame_multiset(warehouse.query(physical)) == frame_multiset(warehouse.query(GOLDEN_QUERY))
    assert len(warehouse.query(GOLDEN_QUERY)) == 6


def test_every_verified_query_runs(model, warehouse):
    from pcb_pipeline.knowledge.api import verify_semantic_model

    results = verify_semantic_model(warehouse, model)
    assert results and all(r["ok"] and r["rows"] > 0 for r in results), results


def test_database_and_schema_override():
    m = load_semantic_model(database="PROD_DB", schema="QA")
    assert {t.database for t in m.tables.values()} == {"PROD_DB"}
    assert "PROD_DB" in m.to_yaml()
    assert "PROD_DB.QA.DEFECT_LOGS" in logical_to_physical(m.verified_queries[0].sql, m, qualified=True)


@pytest.mark.parametrize("mutate, err", [
    (lambda d: d["relationships"][0].update(right_table="nope"), "unknown table"),
    (lambda d: d["tables"][0]["metrics"][0].update(expr="COUNT(("), "cannot parse"),
    (lambda d: d["verified_queries"][0].update(sql="SELECT x FROM DEFECT_LOGS"), "logical table"),
    (lambda d: d["relationships"][0]["relationship_columns"][0].update(right_column="product_type"),
     "primary key"),
])
def test_validation_catches_broken_models(mutate, err):
    data = yaml.safe_load(default_semantic_model_path().read_text())
    mutate(data)
    with pytest.raises(SemanticModelError, match=err):
        parse_semantic_model(data)
