"""otelcol's retry_on_failure backoff, and Retry-After in both of its forms."""

from __future__ import annotations

import email.utils
import random

import pytest
from pydantic import ValidationError

from edgeagent.configretry import RetryConfig, backoff_delay, parse_retry_after


def test_backoff_grows_by_the_multiplier_up_to_max_interval_within_the_randomization():
    config = RetryConfig(initial_interval="1s", multiplier=2, max_interval="10s", randomization_factor=0.5)
    rng = random.Random(7)
    for attempt, base in [(1, 1), (2, 2), (3, 4), (4, 8), (5, 10), (9, 10)]:
        for _ in range(50):
            assert base * 0.5 <= backoff_delay(config, attempt, rng) <= base * 1.5


def test_no_randomization_gives_exact_delays():
    config = RetryConfig(initial_interval="5s", multiplier=1.5, max_interval="30s", randomization_factor=0)
    assert [backoff_delay(config, n) for n in (1, 2, 3, 9)] == [5, 7.5, 11.25, 30]


def test_retry_after_seconds_and_http_dates():
    assert parse_retry_after("2") == 2.0
    now = 1_700_000_000.0
    assert parse_retry_after(email.utils.formatdate(now + 30, usegmt=True), now=now) == pytest.approx(30, abs=1)
    assert parse_retry_after(email.utils.formatdate(now - 30, usegmt=True), now=now) == 0.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


@pytest.mark.parametrize("settings", [
    {"initial_interval": "0s"},
    {"initial_interval": "10s", "max_interval": "5s"},
    {"multiplier": 0.5},
    {"randomization_factor": 2},
    {"max_interval": "a while"},
])
def test_invalid_retry_settings(settings):
    with pytest.raises(ValidationError):
        RetryConfig.model_validate(settings)
