"""A subset of the OpenTelemetry Transformation Language (OTTL): the conditions of tail_sampling's
`ottl_condition` policy (spans and span events) and of the filter processor (also log records,
metrics, data points, resources and scopes).

`lexer` and `parser` read a condition into the tree of `ast`; `compiler` turns the tree into
closures once, using `paths` (the fields of each context; the log, metric and datapoint ones in
`signals`), `functions` (the converters) and `compare` (OTTL's comparison rules); `infer` finds
the context of a condition that names none; `needles` finds the attribute keys a condition
cannot match without. `ConditionSequence` is otelcol's: the
conditions of one list, any of which matching is a match, with its error_mode.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from otel.ottl.compiler import Test, compile_condition, compile_tree
from otel.ottl.errors import OttlEvalError, OttlSyntaxError
from otel.ottl.needles import Keys, needed_keys
from otel.ottl.parser import parse
from otel.ottl.paths import Context, ContextName

ErrorMode = Literal["ignore", "propagate", "silent"]

__all__ = ["ConditionSequence", "Context", "ContextName", "ErrorMode", "OttlEvalError", "OttlSyntaxError",
           "compile_condition"]


class ConditionSequence:
    """Conditions ORed, as otelcol's ConditionSequence: the first that matches decides.

    A condition that fails on a context: with `propagate` the failure is raised (OttlEvalError)
    and ends the evaluation; otherwise (`ignore`, `silent`, or unset, which otelcol treats as
    `silent`) that condition counts as not matching and the next is tried. otelcol logs each
    failure under `ignore`; edgeagent does not log per span, for either.
    """

    def __init__(self, conditions: Sequence[str], context: ContextName, error_mode: ErrorMode | None):
        trees = [parse(text) for text in conditions]
        self.tests: tuple[Test, ...] = tuple(compile_tree(tree, context) for tree in trees)
        self.propagate = error_mode == "propagate"
        # attribute keys of which a span (or event) needs one for any condition to match; None: no such keys
        self.keys: Keys | None = frozenset()
        for tree in trees:
            needed = needed_keys(tree)
            self.keys = None if needed is None or self.keys is None else self.keys | needed

    def matches(self, ctx: Context) -> bool:
        for test in self.tests:
            try:
                if test(ctx):
                    return True
            except OttlEvalError:
                if self.propagate:
                    raise
        return False
