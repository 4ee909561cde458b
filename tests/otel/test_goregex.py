"""Go regular expressions on RE2; without the RE2 package (no wheel for the platform) a config says how to get it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from otel.goregex import compile_go_regex


def test_a_pattern_that_backtracks_for_ever_in_re_matches_in_linear_time() -> None:
    """Python's re takes time exponential in the length here (0.8 s at 25 characters), holding the
    GIL: in a process of its own, so that a regression fails the test instead of hanging the suite."""
    script = ("from otel.goregex import compile_go_regex\n"
              "print(compile_go_regex(r'^(\\w+\\s?)*$').search('a' * 5000 + '!'))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=20, check=True)
    assert done.stdout.strip() == "False"


def test_without_the_re2_package_a_regular_expression_is_a_config_error_that_says_how_to_get_it() -> None:
    script = ("import sys; sys.modules['re2'] = None\n"
              "from otel.goregex import compile_go_regex\n"
              "try:\n    compile_go_regex('^a')\nexcept ValueError as exc:\n    print(exc)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30, check=True)
    assert "pip install google-re2" in done.stdout and "libre2-dev" in done.stdout


@pytest.mark.parametrize("pattern", [r"(?=a)", r"(a)\1"])
def test_what_go_refuses_is_refused_with_the_reason(pattern: str) -> None:
    with pytest.raises(ValueError, match="RE2"):
        compile_go_regex(pattern)


@pytest.mark.parametrize("pattern,names", [  # as Go's SubexpNames gives them, less its leading ""
    (r"^(?P<v>\d+)$|^(?P<w>x)?(?P<v>[a-z]+)$", ("v", "w", "v")),
    (r"\Q(?P<a>\E(?P<b>x)", ("b",)),
    (r"[](](?P<d>x)", ("d",)),
    (r"[^](](?P<h>x)(y)", ("h", "")),
    (r"[[:alpha:](](?P<e>x)", ("e",)),
    (r"(?i:(?P<f>x))(?<g>y)", ("f", "g")),
])
def test_group_names_are_numbered_as_go_numbers_them_a_name_used_twice_included(pattern: str, names: tuple) -> None:
    assert compile_go_regex(pattern).group_names == names
