"""Configuration: every missing or wrong setting is an error naming the variable, before any work starts."""
from __future__ import annotations

import dagster as dg
import pytest

from pcb_pipeline.backends.snowflake.config import SnowflakeConfigError, from_env

BASE = {"SNOWFLAKE_ACCOUNT": "myorg-myaccount", "SNOWFLAKE_USER": "SVC", "SNOWFLAKE_PASSWORD": "pw",
        "SNOWFLAKE_ROLE": "PCB_PIPELINE_ROLE", "SNOWFLAKE_WAREHOUSE": "PCB_WH", "SNOWFLAKE_DATABASE": "PCB",
        "SNOWFLAKE_SCHEMA": "PIPELINE"}


def test_defaults_and_password_auth():
    s = from_env(BASE)
    assert (s.auth, s.stage, s.job_stage, s.compute_pool) == ("password", "MODEL_STAGE", "ML_JOB_STAGE", "PCB_GPU_POOL")
    assert s.external_access_integrations == ("PCB_TRAINING_EAI",) and s.target_instances == 1
    assert s.cuda_version == "12.4" and s.inference == "local" and s.min_map50 == 0.5
    assert s.qualified("MODEL_STAGE") == "PCB.PIPELINE.MODEL_STAGE"


def test_missing_variables_are_all_named():
    env = {k: v for k, v in BASE.items() if k not in ("SNOWFLAKE_ACCOUNT", "SNOWFLAKE_SCHEMA")}
    with pytest.raises(SnowflakeConfigError, match="SNOWFLAKE_ACCOUNT, SNOWFLAKE_SCHEMA"):
        from_env(env)


@pytest.mark.parametrize("change, variable", [
    ({"SNOWFLAKE_ACCOUNT": "https://x.snowflakecomputing.com"}, "SNOWFLAKE_ACCOUNT"),
    ({"SNOWFLAKE_ACCOUNT": "myorg-acc.snowflakecomputing.com"}, "SNOWFLAKE_ACCOUNT"),
    ({"SNOWFLAKE_ROLE": "PCB ROLE"}, "SNOWFLAKE_ROLE"),
    ({"SNOWFLAKE_SCHEMA": "PIPE;DROP"}, "SNOWFLAKE_SCHEMA"),
    ({"SNOWFLAKE_PASSWORD": ""}, "SNOWFLAKE_PASSWORD, SNOWFLAKE_PRIVATE_KEY_FILE"),
    ({"SNOWFLAKE_PRIVATE_KEY_FILE": "/nonexistent/key.p8"}, "SNOWFLAKE_PASSWORD and SNOWFLAKE_PRIVATE_KEY_FILE"),
    ({"SNOWFLAKE_AUTHENTICATOR": "magic"}, "SNOWFLAKE_AUTHENTICATOR"),
    ({"PCB_SNOWFLAKE_STAGE": "my-stage"}, "PCB_SNOWFLAKE_STAGE"),
    ({"PCB_SNOWFLAKE_EAI": "OK_EAI, bad eai"}, "PCB_SNOWFLAKE_EAI"),
    ({"PCB_SNOWFLAKE_TARGET_INSTANCES": "two"}, "PCB_SNOWFLAKE_TARGET_INSTANCES"),
    ({"PCB_SNOWFLAKE_TARGET_INSTANCES": "0"}, "PCB_SNOWFLAKE_TARGET_INSTANCES"),
    ({"PCB_SNOWFLAKE_INFERENCE": "gpu"}, "PCB_SNOWFLAKE_INFERENCE"),
    ({"PCB_SNOWFLAKE_CUDA_VERSION": "latest"}, "PCB_SNOWFLAKE_CUDA_VERSION"),
    ({"PCB_MIN_MAP50": "1.5"}, "PCB_MIN_MAP50"),
    ({"PCB_SNOWFLAKE_JOB_TIMEOUT_S": "5"}, "PCB_SNOWFLAKE_JOB_TIMEOUT_S"),
])
def test_wrong_values_name_the_variable(change, variable):
    with pytest.raises(SnowflakeConfigError, match=variable):
        from_env({**BASE, **change})


def test_key_pair_and_authenticator(tmp_path):
    key = tmp_path / "rsa_key.p8"
    key.write_text("-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIE...\n-----END ENCRYPTED PRIVATE KEY-----\n")
    env = {k: v for k, v in BASE.items() if k != "SNOWFLAKE_PASSWORD"}
    s = from_env({**env, "SNOWFLAKE_PRIVATE_KEY_FILE": str(key), "SNOWFLAKE_AUTHENTICATOR": "SNOWFLAKE_JWT"})
    assert s.auth == "private_key" and "SNOWFLAKE_PRIVATE_KEY_FILE" in s.env_vars_used
    not_pem = tmp_path / "k.txt"
    not_pem.write_text("hello")
    with pytest.raises(SnowflakeConfigError, match="not a PEM private key"):
        from_env({**env, "SNOWFLAKE_PRIVATE_KEY_FILE": str(not_pem)})
    with pytest.raises(SnowflakeConfigError, match="snowflake_jwt needs SNOWFLAKE_PRIVATE_KEY_FILE"):
        from_env({**env, "SNOWFLAKE_AUTHENTICATOR": "snowflake_jwt"})
    assert from_env({**env, "SNOWFLAKE_AUTHENTICATOR": "externalbrowser"}).auth == "authenticator"


def test_resources_refuse_to_load_without_credentials(monkeypatch, sf_env):
    from pcb_pipeline.defs.snowflake_resources import snowflake_resources

    monkeypatch.delenv("SNOWFLAKE_PASSWORD")
    with pytest.raises(SnowflakeConfigError, match="SNOWFLAKE_PASSWORD"):
        snowflake_resources()


def test_resources_keep_credentials_as_env_vars(sf_env):
    from pcb_pipeline.defs.resources import local_resources
    from pcb_pipeline.defs.snowflake_resources import snowflake_resources

    res = snowflake_resources()
    assert set(res) == set(local_resources()) >= {"stage", "warehouse", "trainer", "registry"}
    sf = res["stage"].snowflake
    for field in ("account", "user", "password", "role", "warehouse", "database"):
        assert isinstance(sf.__dict__[field], dg.EnvVar), field
    assert isinstance(sf.__dict__["schema_"], dg.EnvVar)
    assert sf.__dict__["password"] == dg.EnvVar("SNOWFLAKE_PASSWORD")
    assert res["trainer"].compute_pool == "PCB_GPU_POOL" and res["registry"].model_name == "PCB_DEFECT_DETECTOR"


CONTAINER = {"SNOWFLAKE_ACCOUNT": "myorg-myaccount", "SNOWFLAKE_HOST": "myorg-myaccount.snowflakecomputing.com",
             "SNOWFLAKE_DATABASE": "PCB", "SNOWFLAKE_SCHEMA": "PIPELINE"}


def test_inside_a_snowflake_container_the_containers_own_session_is_used(tmp_path, monkeypatch):
    """Streamlit's container runtime (and any SPCS service): no user, no secret; the OAuth token file, read afresh
    at every connection because Snowflake rotates it."""
    import snowflake.connector

    from pcb_pipeline.backends.snowflake.connect import connection_factory

    token = tmp_path / "token"
    token.write_text("tok-1\n")
    s = from_env({**CONTAINER, "PCB_SNOWFLAKE_TOKEN_FILE": str(token)})
    assert s.auth == "container_token" and s.user == "" and s.host == CONTAINER["SNOWFLAKE_HOST"]
    assert s.env_vars_used == ["SNOWFLAKE_ACCOUNT", "SNOWFLAKE_HOST", "SNOWFLAKE_DATABASE", "SNOWFLAKE_SCHEMA"]
    opened = []

    class FakeConnection:
        def close(self):
            opened[-1]["closed"] = True

    def fake_connect(**kwargs):
        opened.append(dict(kwargs))
        return FakeConnection()

    monkeypatch.setattr(snowflake.connector, "connect", fake_connect)
    connect = connection_factory(s)
    with connect():
        pass
    token.write_text("tok-2")  # rotated by Snowflake
    with connect():
        pass
    assert [o["token"] for o in opened] == ["tok-1", "tok-2"] and all(o["closed"] for o in opened)
    assert opened[0]["authenticator"] == "oauth" and opened[0]["host"] == CONTAINER["SNOWFLAKE_HOST"]
    assert "user" not in opened[0] and "password" not in opened[0] and "role" not in opened[0]


def test_container_settings_are_checked_and_explicit_credentials_win(tmp_path):
    token = tmp_path / "token"
    token.write_text("tok")
    with pytest.raises(SnowflakeConfigError, match=r"SNOWFLAKE_HOST .*inside a Snowflake container"):
        from_env({k: v for k, v in CONTAINER.items() if k != "SNOWFLAKE_HOST"} | {"PCB_SNOWFLAKE_TOKEN_FILE": str(token)})
    assert from_env({**BASE, "PCB_SNOWFLAKE_TOKEN_FILE": str(token)}).auth == "password"
    with pytest.raises(SnowflakeConfigError, match="SNOWFLAKE_USER"):  # no token file: the usual settings apply
        from_env({**CONTAINER, "PCB_SNOWFLAKE_TOKEN_FILE": str(tmp_path / "absent")})
