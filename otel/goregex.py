"""Go regular expressions, run by RE2: the processors' match properties and attribute actions,
string_attribute's regex values and OTTL's IsMatch.

otelcol matches with Go's regexp package, an RE2 engine: time linear in the text. Python's re
backtracks, and a pattern as plain as `^(\\w+\\s?)*$` then takes time exponential in the length
of a value that almost matches; matching runs on the event loop, so one such span name stalled
the whole agent. RE2 (google-re2) also reads the syntax as Go does: `$` is the end of the text
unless (?m), `\\z`, POSIX classes (`[[:alpha:]]`), Unicode classes (`\\pL`), ASCII `\\d` `\\w`
`\\s`; and it refuses what Go refuses (lookaround, backreferences).
"""

from __future__ import annotations

import re

try:
    import re2
except ImportError:  # no wheel for this platform (armv7): the package does not pull it in there
    re2 = None
else:
    _OPTIONS = re2.Options()
    _OPTIONS.log_errors = False  # a refused pattern is a config error, reported once with its path
NO_RE2 = ("regular expressions need the google-re2 package, which has no wheel for this platform: install it "
          "(pip install google-re2; it builds from source with Debian's libre2-dev, libabsl-dev and pybind11-dev), "
          "or use strict matching")
_REMEMBERED, _REMEMBERED_LENGTH = 1024, 256  # at most 1024 texts of up to 256 characters per pattern
_POSIX_CLASS = re.compile(r"\[:\^?[a-z]+:\]")
_NOT_RE2 = re.compile(r"\(\?<?[=!]|\(\?P=|\(\?>|\(\?\(|(?<!\\)(?:\\\\)*\\[1-9]")


class GoRegex:
    """One compiled pattern. Texts are matched as UTF-8, as Go strings are."""

    __slots__ = ("pattern", "groupindex", "group_names", "_regex", "_seen")

    def __init__(self, pattern: str):
        if re2 is None:
            raise ValueError(NO_RE2)
        if _NOT_RE2.search(pattern):
            raise ValueError(f"regular expression {pattern!r} uses lookaround, a backreference, an atomic group or "
                             f"a conditional, which otelcol's RE2 engine does not support; rewrite it without them")
        try:
            self._regex = re2.compile(pattern, _OPTIONS)
        except re2.error as exc:
            reason = exc.args[0].decode(errors="replace") if exc.args and isinstance(exc.args[0], bytes) else exc
            shown = pattern if len(pattern) <= 200 else pattern[:200] + "..."
            raise ValueError(f"invalid regular expression {shown!r}: {reason}") from None
        self.pattern = pattern
        self._seen: dict[str, bool] = {}  # search results of short texts: names repeat from record to record
        # in the pattern's order, as Go numbers them (RE2 lists them by name)
        self.groupindex: dict[str, int] = dict(sorted(self._regex.groupindex.items(), key=lambda item: item[1]))
        self.group_names = _group_names(pattern, self.groups, self.groupindex)

    @property
    def groups(self) -> int:
        return int(self._regex.groups)

    def search(self, text: str) -> bool:
        """Whether the pattern matches anywhere in `text` (Go's MatchString)."""
        known = self._seen.get(text)
        if known is not None:
            return known
        found = self._regex.search(text.encode()) is not None
        if len(text) <= _REMEMBERED_LENGTH:
            if len(self._seen) >= _REMEMBERED:
                self._seen.clear()
            self._seen[text] = found
        return found

    def named_groups(self, text: str) -> dict[str, str] | None:
        """The first match's named groups, "" for a group that took no part (Go's FindStringSubmatch).
        A name given to several groups takes the last one's text, as setting each in turn does."""
        match = self._regex.search(text.encode())
        if match is None:
            return None
        groups: dict[str, str] = {}
        for index, name in enumerate(self.group_names, start=1):
            if name:
                groups[name] = (match.group(index) or b"").decode(errors="replace")
        return groups


def _group_names(pattern: str, count: int, groupindex: dict[str, int]) -> tuple[str, ...]:
    """The name of each capturing group in Go's numbering, "" where unnamed. RE2 maps a name to
    its first group only, and Go lets a name be used again, so the pattern itself is read: escapes,
    `\\Q...\\E` and character classes hold no groups, `(?` opens none unless it names one."""
    names: list[str] = []
    at = 0
    while at < len(pattern):
        char = pattern[at]
        if pattern.startswith("\\Q", at):
            end = pattern.find("\\E", at + 2)
            at = len(pattern) if end < 0 else end + 2
        elif char == "\\":
            at += 2
        elif char == "[":
            at = _class_end(pattern, at)
        else:
            if char == "(":
                named = pattern.startswith("(?P<", at) or pattern.startswith("(?<", at) \
                    and not pattern.startswith(("(?<=", "(?<!"), at)
                if named:
                    start = pattern.index("<", at) + 1
                    names.append(pattern[start:pattern.index(">", start)])
                elif not pattern.startswith("(?", at):
                    names.append("")
            at += 1
    if len(names) != count:  # not read as RE2 reads it: RE2's map, one group per name
        by_index = {index: name for name, index in groupindex.items()}
        return tuple(by_index.get(index, "") for index in range(1, count + 1))
    return tuple(names)


def _class_end(pattern: str, at: int) -> int:
    """Where the character class opening at `at` ends: a `]` first (after `^`) is a member, as are
    escapes and `[:name:]`."""
    at += 2 if pattern.startswith("[^", at) else 1
    if pattern.startswith("]", at):
        at += 1
    while at < len(pattern):
        if pattern[at] == "\\":
            at += 2
        elif posix := _POSIX_CLASS.match(pattern, at):
            at = posix.end()
        elif pattern[at] == "]":
            return at + 1
        else:
            at += 1
    return at


def compile_go_regex(pattern: str) -> GoRegex:
    """`pattern` as Go compiles it; a ValueError that says why when Go would refuse it."""
    return GoRegex(pattern)
