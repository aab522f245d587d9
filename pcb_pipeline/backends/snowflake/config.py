"""Snowflake settings from the environment, validated before any work starts.

Credentials are read by Dagster through `dg.EnvVar(NAME)` (pcb_pipeline.defs.snowflake_resources), so their values
never appear in run config or the UI; this module only checks that they are present and well formed, and names the
variable when one is missing or wrong.

| variable | required | meaning |
|---|---|---|
| SNOWFLAKE_ACCOUNT | yes | account identifier, e.g. `myorg-myaccount` (no `https://`, no `.snowflakecomputing.com`) |
| SNOWFLAKE_USER | yes | login name of the pipeline's service user |
| SNOWFLAKE_PASSWORD | one of three | password, or a programmatic access token |
| SNOWFLAKE_PRIVATE_KEY_FILE | one of three | PEM private key file for key-pair auth (`SNOWFLAKE_PRIVATE_KEY_FILE_PWD` if encrypted) |
| SNOWFLAKE_AUTHENTICATOR | one of three | `externalbrowser`, `snowflake_jwt`, `programmatic_access_token`, `username_password_mfa`, `oauth`, or an Okta URL |
| SNOWFLAKE_ROLE, SNOWFLAKE_WAREHOUSE, SNOWFLAKE_DATABASE, SNOWFLAKE_SCHEMA | yes | the context every statement runs in |
| (inside a Snowflake container) | | no credentials set and /snowflake/session/token present (PCB_SNOWFLAKE_TOKEN_FILE): the container's own OAuth session; SNOWFLAKE_USER, ROLE and WAREHOUSE then optional, SNOWFLAKE_HOST required |
| PCB_SNOWFLAKE_STAGE | no (MODEL_STAGE) | internal stage the pipeline reads and writes (directory table, SNOWFLAKE_SSE) |
| PCB_SNOWFLAKE_JOB_STAGE | no (ML_JOB_STAGE) | stage ML Job payloads are uploaded to and job outputs land on |
| PCB_SNOWFLAKE_COMPUTE_POOL | no (PCB_GPU_POOL) | compute pool for training jobs and batch inference (GPU_NV_M) |
| PCB_SNOWFLAKE_EAI | no (PCB_TRAINING_EAI) | external access integration(s) for pip/GitHub/Hugging Face, comma separated; empty: none |
| PCB_SNOWFLAKE_TARGET_INSTANCES | no (1) | nodes of the training job |
| PCB_SNOWFLAKE_MODEL_NAME | no (PCB_DEFECT_DETECTOR) | model name in the Snowflake Model Registry |
| PCB_SNOWFLAKE_CUDA_VERSION | no (12.4) | `options={"cuda_version": ...}` of the logged model (needed for a GPU service) |
| PCB_SNOWFLAKE_INFERENCE | no (local) | how defect_logs-scale inference runs: `local`, `batch` (mv.run_batch) or `service` |
| PCB_SNOWFLAKE_JOB_TIMEOUT_S | no (14400) | the training job is cancelled and the asset fails after this many seconds |
| PCB_MIN_MAP50 | no (0.5) | promotion threshold of the registry gate |
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

from pcb_pipeline.backends.base import BackendConfigError
from pcb_pipeline.settings import SettingError, env_number, min_map50

IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*$")
ACCOUNT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
AUTHENTICATORS = {"snowflake", "externalbrowser", "snowflake_jwt", "oauth", "programmatic_access_token",
                  "username_password_mfa", "oauth_client_credentials", "oauth_authorization_code"}
INFERENCE_MODES = ("local", "batch", "service")

REQUIRED = ("SNOWFLAKE_ACCOUNT", "SNOWFLAKE_USER", "SNOWFLAKE_ROLE", "SNOWFLAKE_WAREHOUSE", "SNOWFLAKE_DATABASE",
            "SNOWFLAKE_SCHEMA")
AUTH_VARS = ("SNOWFLAKE_PASSWORD", "SNOWFLAKE_PRIVATE_KEY_FILE", "SNOWFLAKE_AUTHENTICATOR")
# Inside Snowflake (a Snowpark Container Services service: Streamlit's container runtime, an ML Job) the platform
# sets SNOWFLAKE_ACCOUNT / SNOWFLAKE_HOST / SNOWFLAKE_DATABASE / SNOWFLAKE_SCHEMA and keeps a fresh OAuth token in
# this file: with no other credentials, that session is used (no user, no secret).
CONTAINER_TOKEN_FILE = "/snowflake/session/token"
CONTAINER_REQUIRED = ("SNOWFLAKE_ACCOUNT", "SNOWFLAKE_HOST", "SNOWFLAKE_DATABASE", "SNOWFLAKE_SCHEMA")


class SnowflakeConfigError(BackendConfigError):
    """Missing or wrong Snowflake configuration; the message names the environment variable."""


def check_identifier(value: str, variable: str) -> str:
    """An unquoted Snowflake identifier, optionally qualified (DB.SCHEMA.NAME); raises naming the variable."""
    parts = str(value).split(".")
    if not value or len(parts) > 3 or not all(IDENTIFIER.match(p) for p in parts):
        raise SnowflakeConfigError(f"{variable}={value!r} is not a valid Snowflake identifier (letters, digits, _ "
                                   f"and $, starting with a letter or _; optionally DB.SCHEMA.NAME)")
    return value


@dataclass(frozen=True)
class SnowflakeSettings:
    account: str
    user: str
    role: str
    warehouse: str
    database: str
    schema: str
    auth: str  # "password" | "private_key" | "authenticator"
    authenticator: str | None = None
    stage: str = "MODEL_STAGE"
    job_stage: str = "ML_JOB_STAGE"
    compute_pool: str = "PCB_GPU_POOL"
    external_access_integrations: tuple[str, ...] = ("PCB_TRAINING_EAI",)
    target_instances: int = 1
    model_name: str = "PCB_DEFECT_DETECTOR"
    cuda_version: str = "12.4"
    inference: str = "local"
    job_timeout_s: int = 14400
    min_map50: float = 0.5
    host: str | None = None  # SNOWFLAKE_HOST (set inside Snowflake containers)
    token_file: str | None = None  # auth "container_token": the OAuth token file, read at each connection
    extra: dict = field(default_factory=dict)

    def qualified(self, name: str) -> str:
        """DB.SCHEMA.NAME for an unqualified object name (stage names in full stage paths need it)."""
        return name if "." in name else f"{self.database}.{self.schema}.{name}"

    @property
    def env_vars_used(self) -> list[str]:
        """The credential variables Dagster will read through EnvVar."""
        if self.auth == "container_token":
            return list(CONTAINER_REQUIRED)
        base = list(REQUIRED)
        if self.auth == "password":
            base.append("SNOWFLAKE_PASSWORD")
        elif self.auth == "private_key":
            base.append("SNOWFLAKE_PRIVATE_KEY_FILE")
        if self.authenticator:
            base.append("SNOWFLAKE_AUTHENTICATOR")
        return base


Get = Callable[[str], str]


def from_env(env: Mapping[str, str] | None = None) -> SnowflakeSettings:
    """Read and validate every setting; raises SnowflakeConfigError naming the first offending variable(s)."""
    env = os.environ if env is None else env
    get: Get = lambda name: (env.get(name) or "").strip()  # noqa: E731
    token_file = get("PCB_SNOWFLAKE_TOKEN_FILE") or CONTAINER_TOKEN_FILE
    in_container = not any(get(n) for n in AUTH_VARS) and Path(token_file).is_file()
    _check_context(get, in_container, token_file)
    auth, authenticator = _credentials(get, in_container)
    return SnowflakeSettings(
        account=get("SNOWFLAKE_ACCOUNT"), user=get("SNOWFLAKE_USER"), role=get("SNOWFLAKE_ROLE"),
        warehouse=get("SNOWFLAKE_WAREHOUSE"), database=get("SNOWFLAKE_DATABASE"), schema=get("SNOWFLAKE_SCHEMA"),
        auth=auth, authenticator=authenticator, host=get("SNOWFLAKE_HOST") or None,
        token_file=token_file if in_container else None, **_objects(env, get), **_numbers(env))


def _check_context(get: Get, in_container: bool, token_file: str) -> None:
    """The account and the context every statement runs in: present, and well formed."""
    missing = [name for name in (CONTAINER_REQUIRED if in_container else REQUIRED) if not get(name)]
    if missing:
        raise SnowflakeConfigError("PCB_BACKEND=snowflake needs these environment variables, which are not set: "
                                   + ", ".join(missing) + (f" (inside a Snowflake container: {token_file} found)"
                                                           if in_container else ""))
    account = get("SNOWFLAKE_ACCOUNT")
    if "://" in account or account.lower().endswith("snowflakecomputing.com") or not ACCOUNT.match(account):
        raise SnowflakeConfigError(f"SNOWFLAKE_ACCOUNT={account!r} must be the account identifier only, e.g. "
                                   f"'myorg-myaccount' (no https://, no .snowflakecomputing.com)")
    for name in ("SNOWFLAKE_ROLE", "SNOWFLAKE_WAREHOUSE", "SNOWFLAKE_DATABASE", "SNOWFLAKE_SCHEMA"):
        value = get(name)
        if in_container and not value:  # the service's own role / the app's query warehouse
            continue
        if not IDENTIFIER.match(value):
            raise SnowflakeConfigError(f"{name}={value!r} is not a valid unquoted Snowflake identifier")


def _credentials(get: Get, in_container: bool) -> tuple[str, str | None]:
    """(auth, authenticator): which credentials are used, checked to fit together."""
    password, key_file, authenticator = (get(n) for n in AUTH_VARS)
    if password and key_file:
        raise SnowflakeConfigError("set only one of SNOWFLAKE_PASSWORD and SNOWFLAKE_PRIVATE_KEY_FILE, not both")
    if authenticator:
        _check_authenticator(authenticator, password, key_file)
    if key_file:
        _check_key_file(key_file)
    if not (password or key_file or authenticator or in_container):
        raise SnowflakeConfigError("no Snowflake credentials: set SNOWFLAKE_PASSWORD, SNOWFLAKE_PRIVATE_KEY_FILE "
                                   "(key pair) or SNOWFLAKE_AUTHENTICATOR")
    auth = ("password" if password else "private_key" if key_file else "authenticator" if authenticator
            else "container_token")
    return auth, authenticator or None


def _check_authenticator(authenticator: str, password: str, key_file: str) -> None:
    lower = authenticator.lower()
    if lower not in AUTHENTICATORS and not lower.startswith("https://"):
        raise SnowflakeConfigError(f"SNOWFLAKE_AUTHENTICATOR={authenticator!r} is not one of "
                                   f"{sorted(AUTHENTICATORS)} or an https:// Okta URL")
    if lower == "snowflake_jwt" and not key_file:
        raise SnowflakeConfigError("SNOWFLAKE_AUTHENTICATOR=snowflake_jwt needs SNOWFLAKE_PRIVATE_KEY_FILE")
    if lower in ("programmatic_access_token", "username_password_mfa") and not password:
        raise SnowflakeConfigError(f"SNOWFLAKE_AUTHENTICATOR={lower} needs SNOWFLAKE_PASSWORD (the token or "
                                   f"password)")


def _check_key_file(key_file: str) -> None:
    path = Path(key_file).expanduser()
    if not path.is_file():
        raise SnowflakeConfigError(f"SNOWFLAKE_PRIVATE_KEY_FILE={key_file!r}: no such file")
    if b"PRIVATE KEY" not in path.read_bytes()[:64]:
        raise SnowflakeConfigError(f"SNOWFLAKE_PRIVATE_KEY_FILE={key_file!r} is not a PEM private key "
                                   f"(expected '-----BEGIN ... PRIVATE KEY-----')")


def _objects(env: Mapping[str, str], get: Get) -> dict:
    """The pipeline's objects in the account (stages, pool, integrations, model) and how inference runs."""
    inference = get("PCB_SNOWFLAKE_INFERENCE").lower() or "local"
    if inference not in INFERENCE_MODES:
        raise SnowflakeConfigError(f"PCB_SNOWFLAKE_INFERENCE={inference!r} must be one of {INFERENCE_MODES}")
    raw_eai = env.get("PCB_SNOWFLAKE_EAI")
    eais = tuple(e.strip() for e in (raw_eai if raw_eai is not None else "PCB_TRAINING_EAI").split(",") if e.strip())
    for e in eais:
        check_identifier(e, "PCB_SNOWFLAKE_EAI")
    cuda = get("PCB_SNOWFLAKE_CUDA_VERSION") or "12.4"
    if not re.match(r"^\d+\.\d+$", cuda):
        raise SnowflakeConfigError(f"PCB_SNOWFLAKE_CUDA_VERSION={cuda!r} must look like '12.4'")
    named = {field: check_identifier(get(variable) or default, variable)
             for field, variable, default in (("stage", "PCB_SNOWFLAKE_STAGE", "MODEL_STAGE"),
                                              ("job_stage", "PCB_SNOWFLAKE_JOB_STAGE", "ML_JOB_STAGE"),
                                              ("compute_pool", "PCB_SNOWFLAKE_COMPUTE_POOL", "PCB_GPU_POOL"),
                                              ("model_name", "PCB_SNOWFLAKE_MODEL_NAME", "PCB_DEFECT_DETECTOR"))}
    return {**named, "external_access_integrations": eais, "cuda_version": cuda, "inference": inference}


def _numbers(env: Mapping[str, str]) -> dict:
    """The numeric settings, through the project's one parser; its SettingError becomes a SnowflakeConfigError."""
    try:
        return {"target_instances": env_number(env, "PCB_SNOWFLAKE_TARGET_INSTANCES", 1, cast=int, minimum=1,
                                               unit="an integer"),
                "job_timeout_s": env_number(env, "PCB_SNOWFLAKE_JOB_TIMEOUT_S", 14400, cast=int, minimum=60,
                                            unit="an integer number of seconds"),
                "min_map50": min_map50(env)}
    except SettingError as e:
        raise SnowflakeConfigError(str(e)) from None
