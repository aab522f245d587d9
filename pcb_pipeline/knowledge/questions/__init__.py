"""Plain-English question -> Snowflake SQL over the semantic model: the local counterpart of Cortex Analyst.

lexicon (the model's words) -> time_phrases / conditions (phrases read first) -> planner (a typed Plan, or a
CannotAnswer with suggestions) -> sql_builder (sqlglot expressions, rendered per dialect) -> local_analyst (guard,
run, answer).
"""
from .answer import DataAnswer, frame_to_rows
from .local_analyst import LocalDataAnalyst
from .plan import CannotAnswer, Plan, interpret
from .planner import DataQuestionEngine
from .sql_builder import plan_to_sql

__all__ = ["CannotAnswer", "DataAnswer", "DataQuestionEngine", "LocalDataAnalyst", "Plan", "frame_to_rows",
           "interpret", "plan_to_sql"]
