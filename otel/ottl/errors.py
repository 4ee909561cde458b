"""What can go wrong with an OTTL condition: it does not parse or compile (found at validation,
with the offset in the condition), or it fails on a span (a missing key's index, a value of the
wrong type for a converter), which the condition's error_mode decides about."""

from __future__ import annotations


class OttlSyntaxError(ValueError):
    """The condition is refused: `offset` is where, counted in characters from 0."""

    def __init__(self, message: str, offset: int):
        super().__init__(message)
        self.message = message
        self.offset = offset

    def describe(self, text: str) -> str:
        """The message with the position (column from 1) and the condition marked at it."""
        return f"{self.message} at column {self.offset + 1}: {text[:self.offset]}\u2038{text[self.offset:]}"


class OttlEvalError(Exception):
    """A condition failed on one span or span event (otelcol's evaluation error)."""
