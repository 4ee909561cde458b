"""bearertokenauth: which requests it lets in, what it sends, and a token file replaced while running."""

from __future__ import annotations

import asyncio
import os

import pytest
from pydantic import ValidationError

from edgeagent.errors import RetryableError
from edgeagent.extensions.bearertokenauth import BearerTokenAuth, BearerTokenAuthConfig


def _started(**keys) -> BearerTokenAuth:
    extension = BearerTokenAuth("bearertokenauth", BearerTokenAuthConfig(**keys))
    asyncio.run(extension.start())
    return extension


def test_only_the_configured_scheme_and_token_get_in():
    auth = _started(token="s3cret-token")
    assert auth.authenticate({"Authorization": "Bearer s3cret-token"})
    assert auth.authenticate({"authorization": "Bearer s3cret-token"})  # gRPC metadata is lower case
    assert not auth.authenticate({"Authorization": "Bearer s3cret-tokenX"})
    assert not auth.authenticate({"Authorization": "s3cret-token"})
    assert not auth.authenticate({"Authorization": "Basic s3cret-token"})
    assert not auth.authenticate({"X-Other": "Bearer s3cret-token"})
    assert not auth.authenticate({})


def test_client_sends_scheme_and_first_token_in_the_configured_header():
    assert _started(token="t1").client_headers() == {"Authorization": "Bearer t1"}
    assert _started(tokens=["new", "old"], scheme="", header="X-Api-Key").client_headers() == {"X-Api-Key": "new"}


def test_tokens_accepts_every_listed_token_during_a_rotation():
    auth = _started(tokens=["new", "old"])
    assert auth.authenticate({"Authorization": "Bearer old"})
    assert auth.authenticate({"Authorization": "Bearer new"})


def test_token_file_is_read_again_when_it_changes(tmp_path):
    path = tmp_path / "token"
    path.write_text("first-token\n")
    auth = _started(filename=str(path))
    assert auth.client_headers() == {"Authorization": "Bearer first-token"}
    replacement = tmp_path / "token.new"
    replacement.write_text("second-token\n\n")
    os.replace(replacement, path)
    assert auth.client_headers() == {"Authorization": "Bearer second-token"}
    assert not auth.authenticate({"Authorization": "Bearer first-token"})
    assert auth.authenticate({"Authorization": "Bearer second-token"})


def test_emptied_token_file_keeps_the_last_token(tmp_path):
    path = tmp_path / "token"
    path.write_text("kept-token\n")
    auth = _started(filename=str(path))
    path.write_text("")
    assert auth.authenticate({"Authorization": "Bearer kept-token"})


class Host:
    def __init__(self) -> None:
        self.failures: dict[str, str] = {}

    def component_failed(self, path: str, message: str) -> None:
        self.failures[path] = message


@pytest.mark.parametrize("content", [None, ""], ids=["missing", "empty"])
def test_without_retry_an_unreadable_token_file_starts_and_lets_no_request_in(tmp_path, caplog, content):
    """otelcol 0.165 starts (its token watcher fails in the background and reports a permanent
    error), answers every request 401, sends the header empty, and never reads the file later (its
    watcher was never set up); edgeagent refused to start instead."""
    path = tmp_path / "absent.token"
    if content is not None:
        path.write_text(content)
    host = Host()
    extension = BearerTokenAuth("bearertokenauth/in", BearerTokenAuthConfig(filename=str(path)), host)
    asyncio.run(extension.start())
    assert not extension.authenticate({"Authorization": "Bearer late-token"})
    assert not extension.authenticate({"Authorization": ""})
    assert not extension.authenticate({})
    assert extension.client_headers() == {"Authorization": ""}
    assert "absent.token" in host.failures["extensions::bearertokenauth/in"]
    [logged] = [record for record in caplog.records if record.levelname == "ERROR"]
    assert "absent.token" in logged.error and "401" in logged.getMessage()
    path.write_text("late-token\n")  # as in otelcol, read at the next start only
    assert not extension.authenticate({"Authorization": "Bearer late-token"})
    asyncio.run(extension.shutdown())


def test_no_token_at_all_is_a_config_error():
    with pytest.raises(ValidationError, match="set token, tokens or filename"):
        BearerTokenAuthConfig()


def test_token_is_not_in_the_config_repr():
    text = repr(BearerTokenAuthConfig(token="hidden-token")) + repr(BearerTokenAuthConfig(tokens=["hidden-too"]))
    assert "hidden-token" not in text and "hidden-too" not in text


def test_ignored_token_is_a_warning():
    config = BearerTokenAuthConfig(token="a", filename="/nonexistent/token")
    assert any("ignored" in warning for warning in config.config_warnings())


def test_token_file_lines_hold_a_token_then_an_optional_comment(tmp_path):
    """otelcol 0.165 takes the first whitespace-delimited word of each line; the rest is a comment."""
    path = tmp_path / "token"
    path.write_text("current-token  # rotated 2026-12-01\n\n\tprevious-token // kept a day\n")
    auth = _started(filename=str(path))
    assert auth.client_headers() == {"Authorization": "Bearer current-token"}
    assert auth.authenticate({"Authorization": "Bearer previous-token"})
    assert not auth.authenticate({"Authorization": "Bearer current-token  # rotated 2026-12-01"})


def test_tokens_win_over_filename_as_in_otelcol(tmp_path):
    path = tmp_path / "token"
    path.write_text("from-file\n")
    auth = _started(tokens=["listed"], filename=str(path))
    assert auth.client_headers() == {"Authorization": "Bearer listed"}
    assert not auth.authenticate({"Authorization": "Bearer from-file"})


@pytest.mark.parametrize(("keys", "error"), [
    ({"token": "a", "tokens": ["b"]}, "either tokens or token"),
    ({"token": "a", "retry_on_failure": {"enabled": True, "interval": "1s"}}, "requires filename"),
    ({"filename": "t", "retry_on_failure": {"enabled": True}}, "interval must be greater than 0"),
    ({"filename": "t", "wait_for_token_file": True}, "requires retry_on_failure"),
])
def test_otelcol_refuses_these_and_so_does_the_config(keys, error):
    with pytest.raises(ValidationError, match=error):
        BearerTokenAuthConfig(**keys)


def test_with_retry_on_failure_a_token_file_that_appears_after_start_is_used(tmp_path):
    """otelcol 0.165's retry_on_failure: the agent starts, and the file is read once it is there
    (a secret mounted a moment later); until then no request gets in and exports wait."""
    path = tmp_path / "token"

    async def scenario() -> tuple[bool, bool]:
        auth = BearerTokenAuth("bearertokenauth", BearerTokenAuthConfig(
            filename=str(path), retry_on_failure={"enabled": True, "interval": "10ms"}))
        await auth.start()
        try:
            before = auth.authenticate({"Authorization": "Bearer late-token"})
            with pytest.raises(RetryableError):
                auth.client_headers()
            path.write_text("late-token\n")
            for _ in range(100):
                await asyncio.sleep(0.01)
                if auth.authenticate({"Authorization": "Bearer late-token"}):
                    return before, True
            return before, False
        finally:
            await auth.shutdown()

    assert asyncio.run(scenario()) == (False, True)


def test_wait_for_token_file_fails_the_start_once_max_retries_are_used(tmp_path):
    config = BearerTokenAuthConfig(filename=str(tmp_path / "absent.token"), wait_for_token_file=True,
                                   retry_on_failure={"enabled": True, "max_retries": 2, "interval": "10ms"})
    with pytest.raises(OSError, match="absent.token"):
        asyncio.run(BearerTokenAuth("bearertokenauth", config).start())
