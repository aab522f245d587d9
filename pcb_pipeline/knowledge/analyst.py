"""Cortex Analyst REST API client: the Snowflake counterpart of the local question -> SQL engine.

POST https://<account>.snowflakecomputing.com/api/v2/cortex/analyst/message with
`{"messages": [{"role": "user", "content": [{"type": "text", "text": QUESTION}]}],
  "semantic_model_file": "@DB.SCHEMA.STAGE/semantic_model.yaml"}`
(or `"semantic_model": <yaml text>`); the answer message holds content blocks of type text, sql (`statement`) and
suggestions. The returned SQL is passed through the same SQL guard as local SQL before it runs on the warehouse.
The HTTP transport is injectable (anything with `post(url, json=, headers=, timeout=)`), which is how it is tested;
inside Streamlit in Snowflake it is `SnowApiTransport` (`_snowflake.send_snow_api_request`, the session's own auth).

Failure policy (`ask`): HTTP 429 / 503 are retried (Retry-After honoured, bounded); any other HTTP error, a timeout, a
malformed body, an answer without SQL or suggestions, or SQL the guard refuses falls back to the local engine when
one is given, and the answer says so. Suggestions-only replies are shown as suggestions.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .semantic_model import SemanticModel, load_semantic_model
from .sql_guard import UnsafeSQLError, guard_model_sql, run_guarded
from .questions import DataAnswer, frame_to_rows

ANALYST_PATH = "/api/v2/cortex/analyst/message"
FEEDBACK_PATH = "/api/v2/cortex/analyst/feedback"
RETRY_STATUSES = (429, 503)  # rate limited / briefly unavailable: worth a retry
MAX_ATTEMPTS = 3
MAX_RETRY_WAIT_S = 8.0
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
                 model: SemanticModel | None = None, http=None, timeout: float = 60.0, fallback=None,
                 sleep=None):
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
        self.fallback = fallback  # the local engine (LocalDataAnalyst) answering when Analyst cannot
        self.sleep = sleep or __import__("time").sleep
        self.multi_turn = False  # True: each question follows the conversation so far (the app's chat)
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

    def _post(self, path: str, body: dict) -> dict:
        """POST with bounded retries on 429 / 503; the parsed JSON body, or CortexAnalystError."""
        url = self.url[: -len(ANALYST_PATH)] + path
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                resp = self.http.post(url, json=body, headers=self.headers(), timeout=self.timeout)
            except Exception as e:  # noqa: BLE001 - timeouts, refused connections: one clear error
                raise CortexAnalystError(f"Cortex Analyst did not answer ({type(e).__name__}: {e})") from None
            status = int(getattr(resp, "status_code", 200))
            if status in RETRY_STATUSES and attempt < MAX_ATTEMPTS:
                self.sleep(_retry_wait(resp, attempt))
                continue
            if status >= 400:
                raise CortexAnalystError(f"Cortex Analyst returned HTTP {status}: "
                                         f"{str(getattr(resp, 'text', ''))[:300]}")
            try:
                return resp.json()
            except ValueError:
                raise CortexAnalystError(f"Cortex Analyst sent a body that is not JSON: "
                                         f"{str(getattr(resp, 'text', ''))[:200]}") from None
        raise AssertionError("unreachable")

    def send(self, question: str, multi_turn: bool = False) -> AnalystReply:
        body = self.build_request(question, multi_turn)
        data = self._post(ANALYST_PATH, body)
        reply = parse_reply(data)
        if multi_turn:
            self.history = body["messages"] + [data["message"]]
        return reply

    def feedback(self, request_id: str, positive: bool, message: str | None = None) -> None:
        """Thumbs up / down on one answer (the request_id of its reply), with an optional comment."""
        body = {"request_id": request_id, "positive": bool(positive)}
        if message:
            body["feedback_message"] = message
        self._post(FEEDBACK_PATH, body)

    def ask(self, question: str, warehouse, multi_turn: bool | None = None) -> DataAnswer:
        """Question -> Cortex Analyst SQL -> guard -> warehouse; the same result shape as the local engine."""
        try:
            reply = self.send(question, self.multi_turn if multi_turn is None else multi_turn)
        except CortexAnalystError as e:
            return self._fall_back(question, warehouse, str(e))
        if not reply.sql:
            if reply.suggestions:  # Analyst asks the user to pick one of its readings: show them
                return DataAnswer(None, [], [], reply.text or "Cortex Analyst suggests these questions",
                                  reply.suggestions, self.backend, False, reply.request_id)
            return self._fall_back(question, warehouse, f"no SQL in its answer ({reply.text[:200] or 'empty'})")
        try:
            guarded = guard_model_sql(reply.sql, self.model)
        except UnsafeSQLError as e:
            return self._fall_back(question, warehouse, f"its SQL was refused by the guard ({e})")
        cols, rows = frame_to_rows(run_guarded(warehouse, guarded))
        return DataAnswer(guarded.sql, cols, rows, reply.text or "Cortex Analyst", reply.suggestions, self.backend,
                          True, reply.request_id)

    def _fall_back(self, question: str, warehouse, why: str) -> DataAnswer:
        return answer_locally(self.fallback, question, warehouse, why)


def answer_locally(fallback, question: str, warehouse, why: str) -> DataAnswer:
    """The local engine's answer, saying why Cortex Analyst's was not used; "Cannot answer" without one."""
    if fallback is None:
        return DataAnswer(None, [], [], f"Cannot answer: Cortex Analyst: {why}", [], CortexAnalystClient.backend,
                          False)
    local = fallback.ask(question, warehouse)
    local.interpretation = f"Cortex Analyst could not answer ({why}); answered by the local engine: " \
                           f"{local.interpretation}"
    local.source = f"local_fallback:{local.source}"
    return local


class ConnectedCortexAnalyst:
    """Cortex Analyst outside Snowflake: per question, a connection is opened and its session token authorises the
    REST call (closing the connection ends the token). The conversation history lives here, across questions."""

    backend = CortexAnalystClient.backend

    def __init__(self, connect, semantic_model_file: str, fallback=None, http=None, multi_turn: bool = False):
        self.connect = connect  # () -> context manager yielding a snowflake.connector connection
        self.semantic_model_file = semantic_model_file
        self.fallback = fallback
        self.http = http
        self.multi_turn = multi_turn  # the app's chat: each question follows the conversation so far
        self.history: list[dict] = []

    def _client(self, conn) -> CortexAnalystClient:
        return CortexAnalystClient.from_connection(conn, semantic_model_file=self.semantic_model_file,
                                                   fallback=self.fallback, http=self.http)

    def ask(self, question: str, warehouse, multi_turn: bool | None = None) -> DataAnswer:
        from contextlib import ExitStack

        with ExitStack() as stack:
            try:  # only the connection is this class's to fall back on; the client handles its own failures
                client = self._client(stack.enter_context(self.connect()))
            except Exception as e:  # noqa: BLE001 - no connection, no token: the local engine answers
                first = str(e).splitlines()[0][:200] if str(e) else ""
                return answer_locally(self.fallback, question, warehouse,
                                      f"no connection: {type(e).__name__}: {first}")
            client.history = list(self.history)
            answer = client.ask(question, warehouse, self.multi_turn if multi_turn is None else multi_turn)
            self.history = client.history
            return answer

    def feedback(self, request_id: str, positive: bool, message: str | None = None) -> None:
        with self.connect() as conn:
            self._client(conn).feedback(request_id, positive, message)


def _retry_wait(resp, attempt: int) -> float:
    """Retry-After (seconds) when the server says, else 1, 2, 4 ... s; never more than MAX_RETRY_WAIT_S."""
    headers = getattr(resp, "headers", None) or {}
    try:
        wait = float(headers.get("Retry-After", ""))
    except (TypeError, ValueError):
        wait = 2.0 ** (attempt - 1)
    return max(0.0, min(MAX_RETRY_WAIT_S, wait))


class SnowApiTransport:
    """The HTTP transport inside Streamlit in Snowflake: ``_snowflake.send_snow_api_request`` carries the app's own
    session (no token handling); it answers a dict with ``status`` and ``content`` (the JSON text)."""

    def __init__(self, snowflake_module=None):
        if snowflake_module is None:
            import _snowflake as snowflake_module  # only importable inside Snowflake
        self._sf = snowflake_module

    def post(self, url: str, json: dict, headers: dict | None = None, timeout: float = 60.0):
        from urllib.parse import urlparse

        raw = self._sf.send_snow_api_request("POST", urlparse(url).path, {}, {}, json, None, int(timeout * 1000))
        return _SnowApiResponse(int(raw.get("status", 500)), raw.get("content") or "")


@dataclass
class _SnowApiResponse:
    status_code: int
    text: str
    headers: dict = field(default_factory=dict)

    def json(self):
        import json

        return json.loads(self.text)


def parse_reply(data: dict) -> AnalystReply:
    """Read a send-message response: message.content[] blocks of type text / sql / suggestions."""
    try:
        content = data["message"]["content"]
    except (KeyError, TypeError):
        raise CortexAnalystError(f"unexpected Cortex Analyst response: {str(data)[:300]}") from None
    if not isinstance(content, list) or not all(isinstance(b, dict) for b in content):
        raise CortexAnalystError(f"unexpected Cortex Analyst response: {str(data)[:300]}")
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
