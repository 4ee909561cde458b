"""The OTLP message shape: where each signal keeps its items. The one module that knows it.

An export request holds resource groups (`resource_spans`, `resource_metrics`, `resource_logs`:
a resource and its schema URL), each group holds scopes (`scope_spans`, ...: an instrumentation
scope and its schema URL), each scope holds items: spans, metrics or log records. A metric holds
its data points under its data kind (gauge, sum, histogram, exponential_histogram, summary).
otelcol counts spans, data points and log records; attributes sit on spans, data points and log
records. Whatever walks, counts, cuts or regroups a request asks a `Shape` (TRACES, METRICS,
LOGS), so the field names stay here.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

Key = TypeVar("Key", bound=Hashable)
Run = tuple[int, int, list[Any]]  # group index, scope index, items of that scope


def data_points(metric: Any) -> Sequence[Any]:
    """The data points of a metric, whatever its data kind; none when it has no data."""
    kind = metric.WhichOneof("data")
    return getattr(metric, kind).data_points if kind is not None else ()


def keep_only(repeated: Any, keep: Sequence[bool]) -> bool:
    """Remove the messages of a repeated field whose `keep` is False; whether any was. Deleting one
    at a time moves every message behind each, quadratic on a request of 100,000s of tiny spans:
    beyond a few, the survivors are copied forward over the removed once and the tail cut."""
    dropped = len(keep) - sum(keep)
    if dropped <= 8:  # a few: moving what is behind each (pointers) costs less than copying messages
        for index in reversed(range(len(keep))):
            if not keep[index]:
                del repeated[index]
        return dropped > 0
    kept = 0
    for index, wanted in enumerate(keep):
        if wanted:
            if kept != index:
                repeated[kept].CopyFrom(repeated[index])
            kept += 1
    del repeated[kept:]
    return True


@dataclass(frozen=True)
class Shape:
    """The field names of one signal's request: request.<groups>[].<scopes>[].<items>[]."""

    groups: str
    scopes: str
    items: str
    points: bool = False  # the items are metrics: they hold the data points

    def groups_of(self, request: Any) -> Any:
        """The request's repeated resource groups (mutable: add, delete)."""
        return getattr(request, self.groups)

    def scopes_of(self, group: Any) -> Any:
        return getattr(group, self.scopes)

    def items_of(self, scope: Any) -> Any:
        return getattr(scope, self.items)

    def walk(self, request: Any) -> Iterator[tuple[Any, Any, Any]]:
        """(resource, instrumentation scope, item) for every span, metric or log record, in order."""
        return self.walk_groups(getattr(request, self.groups))

    def walk_groups(self, groups: Iterable[Any]) -> Iterator[tuple[Any, Any, Any]]:
        """As `walk`, over resource groups held outside a request (a trace's batches, say)."""
        for group in groups:
            for scope in getattr(group, self.scopes):
                for item in getattr(scope, self.items):
                    yield group.resource, scope.scope, item

    def items_in(self, groups: Iterable[Any]) -> list[Any]:
        """Every item of these groups in one list, in order: quicker than `walk_groups` where the
        resource and scope are not needed."""
        scopes, items = self.scopes, self.items
        return [item for group in groups for scope in getattr(group, scopes) for item in getattr(scope, items)]

    def records(self, request: Any) -> Iterator[tuple[Any, Any, Any]]:
        """(resource, instrumentation scope, record) for every record that carries attributes and
        that otelcol counts: spans, metric data points, log records."""
        return self._points(request) if self.points else self.walk(request)

    def _points(self, request: Any) -> Iterator[tuple[Any, Any, Any]]:
        for resource, scope, metric in self.walk(request):
            for point in data_points(metric):
                yield resource, scope, point

    def count(self, request: Any) -> int:
        """Items as otelcol counts them: spans, metric data points, log records."""
        return sum(self.count_items(getattr(scope, self.items)) for group in getattr(request, self.groups)
                   for scope in getattr(group, self.scopes))

    def count_items(self, items: Sequence[Any]) -> int:
        """What a run of one scope's items counts for: its length, or for metrics their data points."""
        if not self.points:
            return len(items)
        return sum(len(data_points(metric)) for metric in items)

    def add_group_like(self, request: Any, group: Any) -> Any:
        """A new, empty group at the end of `request` with `group`'s resource and schema URL."""
        target = getattr(request, self.groups).add()
        target.resource.CopyFrom(group.resource)
        target.schema_url = group.schema_url
        return target

    def add_scope_like(self, group: Any, scope: Any) -> Any:
        """A new, empty scope at the end of `group` with `scope`'s instrumentation scope and schema URL."""
        target = getattr(group, self.scopes).add()
        target.scope.CopyFrom(scope.scope)
        target.schema_url = scope.schema_url
        return target

    def partition(self, request: Any, key: Callable[[Any], Key]) -> dict[Key, Any]:
        """One request per key of the items (a trace id, say), each item under a copy of its
        resource and scope, in the order they came. When every item has the same key, the request
        itself is the one part: nothing is copied."""
        runs = self.runs_by_key(request, key)
        if len(runs) == 1:
            return {next(iter(runs)): request}
        return {part_key: self.assemble(request, part_runs) for part_key, part_runs in runs.items()}

    def runs_by_key(self, request: Any, key: Callable[[Any], Key]) -> dict[Key, list[Run]]:
        """For each key of the items, in order of first appearance: its runs, (group index, scope
        index, the items of that scope with this key), in order."""
        places: dict[Key, list[Run]] = {}
        for g, group in enumerate(getattr(request, self.groups)):
            for s, scope in enumerate(getattr(group, self.scopes)):
                current_key: Any = _NONE
                current: list[Any] = []
                for item in getattr(scope, self.items):
                    item_key = key(item)
                    if item_key != current_key:  # SDKs write a trace's spans together: few switches
                        current_key = item_key
                        runs = places.setdefault(item_key, [])
                        if runs and runs[-1][0] == g and runs[-1][1] == s:
                            current = runs[-1][2]
                        else:
                            current = []
                            runs.append((g, s, current))
                    current.append(item)
        return places

    def assemble(self, request: Any, runs: list[Run]) -> Any:
        """A new request of the runs' items (runs_by_key), each under a copy of its resource and scope."""
        groups = getattr(request, self.groups)
        part = type(request)()
        last_group, target = -1, None
        for g, s, items in runs:
            if g != last_group:
                target, last_group = self.add_group_like(part, groups[g]), g
            self.items_of(self.add_scope_like(target, self.scopes_of(groups[g])[s])).extend(items)
        return part


_NONE = object()  # a key no item has

TRACES = Shape("resource_spans", "scope_spans", "spans")
METRICS = Shape("resource_metrics", "scope_metrics", "metrics", points=True)
LOGS = Shape("resource_logs", "scope_logs", "log_records")
