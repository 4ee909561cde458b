"""Go (RE2) regular expressions as Python ones that match the same strings: for string_attribute's
regex values and OTTL's IsMatch."""

from __future__ import annotations

import re

_RE2_UNSUPPORTED = re.compile(r"\(\?<?[=!]|\(\?P=|\(\?>|\(\?\(|(?<!\\)(?:\\\\)*\\[1-9]")
_PYTHON_DIFFERS = re.compile(r"\[:\^?[a-z]+:\]|(?<!\\)(?:\\\\)*\\[pP]")
_MULTILINE = re.compile(r"\(\?[a-zA-Z]*m")


def compile_go_regex(pattern: str) -> re.Pattern[str]:
    """A Go (RE2) regular expression as a Python one that matches the same strings.

    RE2's `$` (without the m flag) and `\\z` match only at the end of the text, which Python
    writes `\\Z` (Python's `$` also matches before a final newline). What Python would read
    differently or RE2 does not accept is refused with what to write instead.
    """
    if _RE2_UNSUPPORTED.search(pattern):
        raise ValueError(f"regular expression {pattern!r} uses lookaround, a backreference, an atomic group or a "
                         f"conditional, which otelcol's RE2 engine does not support; rewrite it without them")
    if _PYTHON_DIFFERS.search(pattern):
        raise ValueError(f"regular expression {pattern!r} uses a POSIX or Unicode class ([[:alpha:]], \\pL); "
                         f"write the characters as an explicit class such as [a-zA-Z]")
    try:
        return re.compile(_end_of_text(pattern, dollar=not _MULTILINE.search(pattern)))
    except re.error as exc:
        raise ValueError(f"invalid regular expression {pattern!r}: {exc}") from None


def _end_of_text(pattern: str, dollar: bool) -> str:
    """`\\z`, and `$` when `dollar`, outside character classes, as `\\Z`."""
    out, index, class_start = [], 0, -1  # class_start: where the open character class begins
    while index < len(pattern):
        char = pattern[index]
        if char == "\\":
            pair = pattern[index:index + 2]
            out.append("\\Z" if pair == "\\z" and class_start < 0 else pair)
            index += 2
            continue
        if class_start >= 0:
            first = class_start + (2 if pattern[class_start + 1:class_start + 2] == "^" else 1)
            if char == "]" and index > first:  # a ] first in the class is literal
                class_start = -1
        elif char == "[":
            class_start = index
        elif char == "$" and dollar:
            char = "\\Z"
        out.append(char)
        index += 1
    return "".join(out)
