"""shared_state configs from tests/testdata/sampler/shared_state: every mistake at its YAML path,
and a password never shown, neither by errors nor by `edgeagent validate`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from sampler.cluster.config import SharedStateBackends, SharedStateConfig, shown_url
from tests.helpers.config_errors import assert_reported
from tests.helpers.configs import http_exporter, traces_config

CONFIG_DIR = Path(__file__).resolve().parents[2] / "testdata" / "sampler" / "shared_state"
PREFIX = "processors::tail_sampling::shared_state"

# file -> every (path, words the message must contain) reported, in order
BAD_CONFIGS = {
    "bad-camel-case-keys.yaml": [(f"{PREFIX}::redis::{key}", [repr(key), "pool_size", "connection_timeout"])
                                 for key in ("poolSize", "connectionTimeoutSecs")],
    "bad-url.yaml": [(f"{PREFIX}::redis::url", ["'http://:***@redis-master:6379'", "redis://", "rediss://"])],
    "bad-url-database.yaml": [(f"{PREFIX}::redis::url", ["***", "database by number"])],
    "bad-password-twice.yaml": [(f"{PREFIX}::redis", ["password", "url", "keep one"])],
    "bad-limits.yaml": [(f"{PREFIX}::redis::{key}", [word]) for key, word in (
        ("pool_size", "0"), ("connection_timeout", "0"), ("operation_timeout", "0"), ("ttl", "1"),
        ("flush_interval", "0"), ("send_batch_size", "0"))],
    "bad-no-url.yaml": [(f"{PREFIX}::redis::url", ["required"])],
}


def load(name: str) -> dict:
    return yaml.safe_load((CONFIG_DIR / name).read_text())


def test_every_config_file_is_checked():
    files = {path.name for path in CONFIG_DIR.glob("*.yaml")}
    assert files == set(BAD_CONFIGS) | {"good-seed.yaml", "good-every-key.yaml"}


@pytest.mark.parametrize("name", sorted(BAD_CONFIGS))
def test_bad_config_is_reported_at_its_yaml_path_without_the_password(name):
    errors = assert_reported(SharedStateBackends, load(name), PREFIX, BAD_CONFIGS[name])
    assert not [message for _, message in errors if "hunter" in message]


def test_the_seed_block_in_snake_case_gives_the_defaults():
    config = SharedStateBackends.model_validate(load("good-seed.yaml")).redis
    assert config == SharedStateConfig(url="redis://redis-master:6379", password="")
    assert (config.pool_size, config.connection_timeout, config.operation_timeout) == (10, 5.0, 0.25)
    assert (config.key_prefix, config.ttl, config.flush_interval, config.send_batch_size) == (
        "edgeagent:decision:", 3600.0, 0.005, 1000)


def test_every_key_is_read_as_written():
    config = SharedStateBackends.model_validate(load("good-every-key.yaml")).redis
    assert config.url == "rediss://tail-sampler@redis.example.internal:6380/2"
    assert (config.password, config.pool_size, config.connection_timeout, config.operation_timeout) == (
        "from-a-secret", 32, 2.0, 0.05)
    assert (config.key_prefix, config.ttl, config.flush_interval, config.send_batch_size) == (
        "hub-eu:decision:", 10800.0, 0.01, 500)
    assert "from-a-secret" not in repr(config)


@pytest.mark.parametrize("url, shown", [
    ("redis://:pw@host:6379/0", "redis://:***@host:6379/0"),
    ("rediss://user:pw@[::1]:6380", "rediss://user:***@[::1]:6380"),
    ("redis://user@host", "redis://user@host"),
    ("redis://host:6379", "redis://host:6379"),
])
def test_a_password_in_the_url_is_masked_where_the_url_is_shown(url, shown):
    assert shown_url(url) == shown


@pytest.mark.e2e  # runs `edgeagent validate`
@pytest.mark.parametrize("ttl, code", [("1h", 0), ("0s", 1)])
def test_validate_never_prints_the_password(tmp_path, ttl, code):
    shared_state = {"redis": {"url": "redis://:hunter2-in-url@redis-master:6379", "ttl": ttl}}
    path = traces_config(tmp_path / "agent.yaml", {"otlphttp": http_exporter("http://127.0.0.1:4318")}, {
        "tail_sampling": {"decision_wait": "5s", "policies": [{"name": "all", "type": "always_sample"}],
                          "shared_state": shared_state}})
    result = subprocess.run([sys.executable, "-m", "edgeagent", "validate", "--config", path],
                            capture_output=True, timeout=60)
    output = (result.stdout + result.stderr).decode()
    assert result.returncode == code, output
    assert "hunter2" not in output
    if code:
        assert "processors::tail_sampling::shared_state::redis::ttl" in output
