"""The context of a condition that names none, inferred from its paths as pkg/ottl's
priorityContextInferrer does.

Every path that starts with a word and a dot (`span.name`, `resource.attributes["k"]`) hints
that word as a context; the lowest of the hinted contexts wins (log, datapoint, metric,
spanevent, span, scope, instrumentation_scope, resource: lower first). When the condition calls
converters or names enum symbols the winner does not know, the first lower context of the
signal that knows them all is taken instead. A winner the signal does not offer
(`instrumentation_scope` is a path prefix, not a context of the filter processor) is an error,
and so is a path without a context: otelcol parses inferred conditions with context names
required.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from otel.ottl import ast
from otel.ottl.errors import OttlSyntaxError
from otel.ottl.functions import CONVERTERS
from otel.ottl.paths import CONTEXT_ENUMS, CONTEXTS, ContextName

PRIORITY = ("log", "exemplar", "datapoint", "metric", "spanevent", "span", "profile", "scope",
            "instrumentation_scope", "resource")


def infer_context(tree: ast.Boolean, offered: Sequence[ContextName], text: str) -> ContextName:
    """The context `tree` runs in, among the `offered` contexts of its signal (highest first)."""
    paths = list(_nodes(tree, ast.Path))
    hinted = [path.names[0] for path in paths if len(path.names) > 1]
    if not hinted:
        raise OttlSyntaxError(f"unable to infer a context: a path's first segment must be a context name "
                              f"({', '.join(offered)}), or give the context explicitly (context: ...)", 0)
    chosen = min(hinted, key=lambda name: PRIORITY.index(name) if name in PRIORITY else len(PRIORITY))
    functions = {call.function for call in _nodes(tree, ast.Call)}
    enums = {enum.name for enum in _nodes(tree, ast.Enum)}
    if functions or enums:
        lower = [name for name in offered if _below(name, chosen)]
        for candidate in [chosen, *sorted(lower, key=PRIORITY.index)]:
            if candidate in offered and _knows(candidate, functions, enums):
                chosen = candidate
                break
    if chosen not in offered:
        raise OttlSyntaxError(f"context {chosen} inferred from {text!r} is not a supported context: "
                              f"{', '.join(offered)}", 0)
    context: ContextName = chosen  # one of `offered`
    for path in paths:
        if len(path.names) < 2 or path.names[0] not in CONTEXTS[context]:
            raise OttlSyntaxError(f"missing context name for path {path.text()}, possibly valid options are: "
                                  f"{', '.join(f'{name}.{path.text()}' for name in CONTEXTS[context])}", path.offset)
    return context


def _below(name: str, chosen: str) -> bool:
    """Whether `name` is a lower context than `chosen` (one whose paths include `chosen`'s)."""
    return name != chosen and chosen in CONTEXTS.get(name, ())


def _knows(context: str, functions: set[str], enums: set[str]) -> bool:
    return (all(context in CONVERTERS[name][2] for name in functions if name in CONVERTERS)
            and enums <= set(CONTEXT_ENUMS[context]))


def _nodes(node: object, kind: type) -> Iterator:
    """Every node of `kind` in the tree under `node`, in order."""
    if isinstance(node, kind):
        yield node
    if isinstance(node, (ast.And, ast.Or)):
        children: tuple = node.operands
    elif isinstance(node, (ast.Not, ast.Negate)):
        children = (node.operand,)
    elif isinstance(node, (ast.Compare, ast.Math)):
        children = (node.left, node.right)
    elif isinstance(node, ast.Call):
        children = (*node.args, *(value for _, value in node.named))
    elif isinstance(node, ast.ListValue):
        children = node.items
    else:
        children = ()
    for child in children:
        yield from _nodes(child, kind)
