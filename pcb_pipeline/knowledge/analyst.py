"""Cortex Analyst REST API client: the Snowflake counterpart of the local question -> SQL engine.

POST https://<account>.snowflakecomputing.com/api/v2/cortex/analyst/message with
`{"messages": [{"role": "user", "content": [{"type": "text", "text": QUESTION}]}],
  "semantic_model_file": "@DB.SCHEMA.STAGE/semantic_model.yaml"}`
(or `"semantic_model": <yaml text>`); the answer message holds content blocks of type text, sql (`statement`) and
suggestions. The returned SQL is passed through the same SQL guard as local SQL before it runs on the warehouse.
The HTTP transport is injectable (anything with `post(url, json=, headers=, timeout=)`), which is how it is tested.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .semantic_model import SemanticModel, load_semantic_model
from .sql_guard import UnsafeSQLError, guard_model_sql, run_guarded
from .text2sql import DataAnswer, frame_to_rows

ANALYST_PATH = "/api/v2/cortex/analyst/message"
TOKEN_TYPES = ("OAUTH", "KEYPAIR_JWT", "PROGRAMMATIC_ACCESS_TOKEN")


class CortexAnalystError(RuntimeError):
    pass


@dataclass
class AnalystReply:
    text: str
    sql: str | None
    suggestions: list[str] = field(default_factory=list)
    request_id: str | None = None
    warnings: list[str] = field(default_factory=list)
    confidence: dict | None = None


class CortexAnalystClient:
    """Send questions to Cortex Analyst with the project's semantic model."""

    backend = "cortex_analyst"

    def __init__(self, account_url: str, token: str, token_type: str | None = "OAUTH",
                 semantic_model_file: str | None = None, semantic_model_yaml: str | None = None,
                 model: SemanticModel | None = None, http=None, timeout: float = 60.0):
        if not account_url.startswith("https://"):
            account_url = "https://" + account_url
        if (semantic_model_file is None) == (semantic_model_yaml is None):
            raise ValueError("give exactly one of semantic_model_file (a stage path) or semantic_model_yaml")
        if semantic_model_file is not None and not semantic_model_file.startswith("@"):
            raise ValueError("semantic_model_file must be a stage path, "
                             "e.g. @PCB.PIPELINE.MODEL_STAGE/semantic_model.yaml")
        if token_type is not None and token_type not in TOKEN_TYPES and token_type != "SNOWFLAKE_SESSION":
            raise ValueError(f"token_type must be one of {TOKEN_TYPES} or SNOWFLAKE_SESSION")
        self.url = account_url.rstrip("/") + ANALYST_PATH
        self.token = token
        self.token_type = token_type
        self.semantic_model_file = semantic_model_file
        self.semantic_model_yaml = semantic_model_yaml
        self.model = model or load_semantic_model()
        self.timeout = timeout
        if http is None:
            import requests

            http = requests.Session()
        self.http = http
        self.history: list[dict] = []

    @classmethod
    def from_connection(cls, conn, **kw) -> "CortexAnalystClient":
        """Reuse the session token of an open snowflake.connector connection (as Snowflake's own samples do)."""
        token = conn.rest.token
        return cls(f"https://{conn.host}", token, token_type="SNOWFLAKE_SESSION", **kw)

    def headers(self) -> dict:
        h = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.token_type == "SNOWFLAKE_SESSION":
            h["Authorization"] = f'Snowflake Token="{self.token}"'
        else:
            h["Authorization"] = f"Bearer {self.token}"
            if self.token_type:
                h["X-Snowflake-Authorization-Token-Type"] = self.token_type
        return h

    def build_request(self, question: str, multi_turn: bool = False) -> dict:
        messages = (list(self.history) if multi_turn else []) + [
            {"role": "user", "content": [{"type": "text", "text": question}]}]
        body: dict = {"messages": messages, "stream": False}
        if self.semantic_model_file:
            body["semantic_model_file"] = self.semantic_model_file
        else:
            body["semantic_model"] = self.semantic_model_yaml
        return body

    def send(self, question: str, multi_turn: bool = False) -> AnalystReply:
        body = self.build_request(question, multi_turn)
        resp = self.http.post(self.url, json=body, headers=self.headers(), timeout=self.timeout)
        status = getattr(resp, "status_code", 200)
        if status >= 400:
            detail = getattr(resp, "text", "")
            raise CortexAnalystError(f"Cortex Analyst returned HTTP {status}: {str(detail)[:500]}")
        data = resp.json()
        reply = parse_reply(data)
        if multi_turn:
            self.history = body["messages"] + [data["message"]]
        return reply

    def ask(self, question: str, warehouse) -> DataAnswer:
        """Question -> Cortex Analyst SQL -> guard -> warehouse; the same result shape as the local engine."""
        reply = self.send(question)
        if not reply.sql:
            return DataAnswer(None, [], [], f"Cannot answer: {reply.text}".strip(), reply.suggestions,
                              self.backend, False)
        try:
            guarded = guard_model_sql(reply.sql, self.model)
        except UnsafeSQLError as e:
            return DataAnswer(None, [], [], f"Cannot answer: Cortex Analyst SQL refused by the guard: {e}",
                              reply.suggestions, self.backend, False)
        cols, rows = frame_to_rows(run_guarded(warehouse, guarded))
        return DataAnswer(guarded.sql, cols, rows, reply.text or "Cortex Analyst", reply.suggestions, self.backend,
                          True)


def parse_reply(data: dict) -> AnalystReply:
    """Read a send-message response: message.content[] blocks of type text / sql / suggestions."""
    try:
        content = data["message"]["content"]
    except (KeyError, TypeError):
        raise CortexAnalystError(f"unexpected Cortex Analyst response: {str(data)[:300]}") from None
    texts, sql, suggestions, confidence = [], None, [], None
    for block in content:
        kind = block.get("type")
        if kind == "text":
            texts.append(block.get("text", ""))
        elif kind == "sql":
            sql = block.get("statement")
            confidence = block.get("confidence")
        elif kind == "suggestions":
            suggestions.extend(block.get("suggestions") or [])
    warnings = [w.get("message", str(w)) if isinstance(w, dict) else str(w) for w in data.get("warnings") or []]
    return AnalystReply("\n".join(t for t in texts if t), sql, suggestions, data.get("request_id"), warnings,
                        confidence)
