"""ask(question, warehouse) -> DataAnswer on the embedded default: typed SQL, a verified query, or a generated plan,
always through the SQL guard and the warehouse's bounded read."""
from __future__ import annotations

import re

from ..semantic_model import SemanticModel, load_semantic_model, logical_to_physical
from ..sql_guard import GuardedSQL, UnsafeSQLError, guard_model_sql, run_guarded
from .answer import DataAnswer, frame_to_rows
from .plan import CannotAnswer, interpret
from .planner import DataQuestionEngine
from .sql_builder import plan_to_sql


class LocalDataAnalyst:
    """The local counterpart of Cortex Analyst."""

    backend = "local"

    def __init__(self, model: SemanticModel | None = None, engine: DataQuestionEngine | None = None):
        self.model = model or load_semantic_model()
        self.engine = engine or DataQuestionEngine(self.model)
        self._learned_from: int | None = None

    def to_sql(self, question: str) -> tuple[str, str, str]:
        """(sql, interpretation, source) without running anything; raises CannotAnswer."""
        q = question.strip()
        if re.match(r"^\s*(select|with)\b", q, re.I):
            return guard_model_sql(q, self.model).sql, "SQL as typed (checked read-only)", "typed"
        verified = self.engine.verified_match(q)
        if verified is not None:
            return (logical_to_physical(verified.sql, self.model),
                    f"verified query '{verified.name}': {verified.question}", "verified")
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
