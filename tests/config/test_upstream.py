"""--upstream given as a signal URL is read as its base URL, with a warning."""

from __future__ import annotations

import pytest

from edgeagent.config.upstream import upstream_base


@pytest.mark.parametrize("given, base", [
    ("http://collector:4318/v1/traces", "http://collector:4318"),
    ("https://collector:4318/otlp/v1/logs/", "https://collector:4318/otlp"),
    ("http://collector:4318/v1/metrics", "http://collector:4318"),
])
def test_a_signal_url_is_read_as_its_base_with_a_warning(given, base):
    url, warning = upstream_base(given)
    assert url == base
    assert warning and base in warning


def test_a_base_url_is_kept_as_it_is():
    assert upstream_base("http://collector:4318") == ("http://collector:4318", None)
    assert upstream_base("") == ("", None)


def test_an_upstream_without_scheme_names_the_fix():
    with pytest.raises(ValueError, match="http://collector:4318"):
        upstream_base("collector:4318")
