"""otelcol's legacy match properties (`include` / `exclude`), shared by attributes and filter.

Semantics, as the collector's filterconfig defines them:
* within one block every property that is set must match (AND);
* `services`, `span_names`, `span_kinds`, `log_bodies`, `log_severity_texts` and
  `metric_names` match when any listed item matches (OR);
* `attributes` and `resources` match when every listed key is present and, if a value is
  given, equal to it (`strict`) or matched by it (`regexp`, an unanchored search, values
  compared as strings);
* `log_bodies` match the body as text (a map or list as JSON), `services` the resource's
  service.name as text (`<nil-service-name>` when it has none);
* `libraries` match when every listed library matches the scope name (and version when given);
* `include` selects what is processed; `exclude` is checked after it and removes;
* `match_type` has no default: otelcol builds a filter set for each list of names and each
  attribute with a value, and refuses to without it, while attribute keys alone and a severity
  number need none (require_match_type).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from pydantic import Field, model_validator

from edgeagent.component import ComponentConfig
from edgeagent.configdecode import Reference
from edgeagent.signals import Signal
from otel.goregex import GoRegex, compile_go_regex
from otel.values import scalar_text, value_as_string

SPAN_KINDS = ("SPAN_KIND_UNSPECIFIED", "SPAN_KIND_INTERNAL", "SPAN_KIND_SERVER", "SPAN_KIND_CLIENT",
              "SPAN_KIND_PRODUCER", "SPAN_KIND_CONSUMER")
SEVERITY_NAMES = {"TRACE": 1, "DEBUG": 5, "INFO": 9, "WARN": 13, "ERROR": 17, "FATAL": 21}
for _base, _number in list(SEVERITY_NAMES.items()):
    for _step in (2, 3, 4):
        SEVERITY_NAMES[f"{_base}{_step}"] = _number + _step - 1
SEVERITY_NAMES.update({str(_number): _number for _number in range(1, 25)})  # the filter's table has "1" to "24"


class AttributeMatch(ComponentConfig):
    key: str = Field(min_length=1)
    value: Any = None

    @model_validator(mode="before")
    @classmethod
    def _unset_is_no_value(cls, data: Any) -> Any:
        """`${env:X}` with X unset or empty (null to YAML) is no value to otelcol: the key alone matches."""
        value = data.get("value") if isinstance(data, dict) else None
        return {**data, "value": None} if isinstance(value, Reference) and value.value is None else data


class LibraryMatch(ComponentConfig):
    name: str
    version: str | None = None


class RegexpOptions(ComponentConfig):
    cacheenabled: bool = False
    cachemaxnumentries: int = Field(0, ge=0)


class SeverityNumberMatch(ComponentConfig):
    min: int | str = 0  # unset or "": 0, so that every defined severity matches, as in otelcol
    match_undefined: bool = False

    @model_validator(mode="after")
    def _check(self) -> SeverityNumberMatch:
        self.minimum()
        return self

    def minimum(self) -> int:
        if isinstance(self.min, int):
            return self.min
        name = self.min.strip().upper()
        if not name:
            return 0
        if name not in SEVERITY_NAMES:
            raise ValueError(f"unknown severity {self.min!r}; use a name (TRACE, DEBUG, INFO, WARN, ERROR, "
                             f"FATAL, or one of them followed by 2, 3 or 4, e.g. WARN2) or a number 1 to 24")
        return SEVERITY_NAMES[name]


def require_match_type(match_type: str | None, lists: dict[str, bool]) -> None:
    """Refuse what otelcol cannot build without a match_type: `lists` says which of the block's
    keys hold names or attribute values to match."""
    needing = [key for key, matched in lists.items() if matched]
    if match_type is None and needing:
        raise ValueError(f"match_type is not set, and otelcol has no default for it: {', '.join(needing)} cannot "
                         f"be matched without it; add match_type: strict (equal values) or match_type: regexp")


def valued(attributes: list[AttributeMatch]) -> bool:
    """Whether an attribute list compares values (keys alone are matched without a match_type)."""
    return any(attribute.value is not None for attribute in attributes)


class MatchProperties(ComponentConfig):
    match_type: Literal["strict", "regexp"] | None = None  # None: strict, where nothing needs it
    regexp: RegexpOptions | None = None
    services: list[str] = Field(default_factory=list)
    span_names: list[str] = Field(default_factory=list)
    span_kinds: list[str] = Field(default_factory=list)
    log_bodies: list[str] = Field(default_factory=list)
    log_severity_texts: list[str] = Field(default_factory=list)
    log_severity_number: SeverityNumberMatch | None = None
    metric_names: list[str] = Field(default_factory=list)
    attributes: list[AttributeMatch] = Field(default_factory=list)
    resources: list[AttributeMatch] = Field(default_factory=list)
    libraries: list[LibraryMatch] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check(self) -> MatchProperties:
        if not any((self.services, self.span_names, self.span_kinds, self.log_bodies, self.log_severity_texts,
                    self.log_severity_number, self.metric_names, self.attributes, self.resources, self.libraries)):
            raise ValueError("set at least one of services, span_names, span_kinds, log_bodies, log_severity_texts, "
                             "log_severity_number, metric_names, attributes, resources or libraries")
        require_match_type(self.match_type, {
            "services": bool(self.services), "span_names": bool(self.span_names), "span_kinds": bool(self.span_kinds),
            "log_bodies": bool(self.log_bodies), "log_severity_texts": bool(self.log_severity_texts),
            "metric_names": bool(self.metric_names), "attributes": valued(self.attributes),
            "resources": valued(self.resources), "libraries": bool(self.libraries)})
        if self.match_type == "strict":
            for kind in self.span_kinds:
                if kind not in SPAN_KINDS[1:]:
                    raise ValueError(f"span kind {kind!r} is not a standard span kind; use one of "
                                     f"{', '.join(SPAN_KINDS[1:])}")
        else:
            libraries = [text for library in self.libraries for text in (library.name, library.version)
                         if text is not None]
            for pattern in [*self.services, *self.span_names, *self.span_kinds, *self.log_bodies,
                            *self.log_severity_texts, *self.metric_names, *libraries]:
                _compile(pattern)
            for attribute in [*self.attributes, *self.resources]:
                if attribute.value is not None and not isinstance(attribute.value, str):
                    raise ValueError(f"match_type regexp needs string values; {attribute.key!r} has "
                                     f"{type(attribute.value).__name__}")
                if attribute.value is not None:
                    _compile(attribute.value)
        return self

    def check_for(self, signal: Signal) -> None:
        """Properties that make no sense for a signal are errors, as in otelcol."""
        if signal is Signal.TRACES:
            wrong = [name for name in ("log_bodies", "log_severity_texts", "log_severity_number", "metric_names")
                     if getattr(self, name)]
        elif signal is Signal.LOGS:
            wrong = [name for name in ("services", "span_names", "span_kinds", "metric_names") if getattr(self, name)]
        else:
            wrong = [name for name in ("services", "span_names", "span_kinds", "log_bodies", "log_severity_texts",
                                       "log_severity_number", "attributes", "libraries") if getattr(self, name)]
        if wrong:
            raise ValueError(f"{', '.join(wrong)} cannot match {signal.label}")


def _compile(pattern: str) -> GoRegex:
    return compile_go_regex(pattern)


class _Strings:
    """A list of strings matched exactly or by regexp search; empty means "not set"."""

    def __init__(self, items: list[str], regexp: bool):
        self.set = bool(items)
        self._exact = frozenset(items) if not regexp else frozenset()
        self._patterns = [_compile(item) for item in items] if regexp else []

    def matches(self, text: str) -> bool:
        if self._patterns:
            return any(pattern.search(text) for pattern in self._patterns)
        return text in self._exact


class _Attributes:
    def __init__(self, items: list[AttributeMatch], regexp: bool):
        self.set = bool(items)
        self._items = [(item.key, _compile(item.value) if regexp and item.value is not None else None,
                        item.value) for item in items]
        self._regexp = regexp

    def matches(self, attributes: Any) -> bool:
        if not self._items:
            return True
        values = {kv.key: kv.value for kv in attributes}
        for key, pattern, expected in self._items:
            value = values.get(key)
            if value is None:
                return False
            if expected is None:
                continue
            if pattern is not None:
                text = scalar_text(value)
                if text is None or not pattern.search(text):
                    return False
            elif not _equal(value, expected):
                return False
        return True


def _equal(value: Any, expected: Any) -> bool:
    """A strict match: the same type and value; maps whatever the order of their keys, as otelcol
    compares them by hash."""
    kind = value.WhichOneof("value")
    if isinstance(expected, bool):
        return kind == "bool_value" and value.bool_value == expected
    if isinstance(expected, int):
        return kind == "int_value" and value.int_value == expected
    if isinstance(expected, float):
        return kind == "double_value" and value.double_value == expected
    if isinstance(expected, dict):
        entries = {kv.key: kv.value for kv in value.kvlist_value.values}
        return kind == "kvlist_value" and entries.keys() == {str(key) for key in expected} and \
            all(_equal(entries[str(key)], item) for key, item in expected.items())
    if isinstance(expected, list):
        items = value.array_value.values
        return kind == "array_value" and len(items) == len(expected) and \
            all(_equal(item, wanted) for item, wanted in zip(items, expected, strict=True))
    return kind == "string_value" and value.string_value == expected


class Matcher:
    """Compiled match properties: `on_resource(kind, resource)` decides what depends on the resource,
    `span`, `log` and `metric(scope, record)` the rest for one record."""

    def __init__(self, properties: MatchProperties):
        regexp = properties.match_type == "regexp"
        self.services = _Strings(properties.services, regexp)
        self.span_names = _Strings(properties.span_names, regexp)
        self.span_kinds = _Strings(properties.span_kinds, regexp)
        self.log_bodies = _Strings(properties.log_bodies, regexp)
        self.severity_texts = _Strings(properties.log_severity_texts, regexp)
        self.metric_names = _Strings(properties.metric_names, regexp)
        self.severity = properties.log_severity_number
        self.severity_min = properties.log_severity_number.minimum() if properties.log_severity_number else 0
        self.attributes = _Attributes(properties.attributes, regexp)
        self.resources = _Attributes(properties.resources, regexp)
        self.libraries = [(_Strings([lib.name], regexp), _Strings([lib.version], regexp) if lib.version is not None
                           else None) for lib in properties.libraries]

    def on_resource(self, kind: str, resource: Any) -> bool:
        """Whether what depends on the resource alone matches (services for spans, resources): asked
        once per resource, not for each of its records, which would read a resource of 10,000s of
        attributes again for each of its 100,000s of spans."""
        if kind == "span" and self.services.set and not self.services.matches(_service_name(resource)):
            return False
        return not self.resources.set or self.resources.matches(resource.attributes)

    def _common(self, scope: Any, attributes: Any | None) -> bool:
        for name, version in self.libraries:
            if not name.matches(scope.name):
                return False
            if version is not None and not version.matches(scope.version):
                return False
        return attributes is None or self.attributes.matches(attributes)

    def span(self, scope: Any, span: Any) -> bool:
        """The rest, for one span under a resource that matched (on_resource)."""
        if self.span_names.set and not self.span_names.matches(span.name):
            return False
        if self.span_kinds.set and not self.span_kinds.matches(SPAN_KINDS[span.kind] if span.kind < 6 else ""):
            return False
        return self._common(scope, span.attributes)

    def log(self, scope: Any, record: Any) -> bool:
        if self.log_bodies.set and not self.log_bodies.matches(value_as_string(record.body)):
            return False
        if self.severity_texts.set and not self.severity_texts.matches(record.severity_text):
            return False
        if self.severity is not None:
            if record.severity_number == 0:
                if not self.severity.match_undefined:
                    return False
            elif record.severity_number < self.severity_min:
                return False
        return self._common(scope, record.attributes)

    def metric(self, scope: Any, metric: Any) -> bool:
        if self.metric_names.set and not self.metric_names.matches(metric.name):
            return False
        return self._common(scope, None)


class IncludeExclude:
    """`include` then `exclude`, as otelcol applies them. With neither, everything is selected.
    Several exclude blocks drop what any of them matches."""

    def __init__(self, include: MatchProperties | None, *excludes: MatchProperties | None):
        self.include = Matcher(include) if include else None
        self.excludes = [Matcher(exclude) for exclude in excludes if exclude]

    @property
    def active(self) -> bool:
        return self.include is not None or bool(self.excludes)

    def selector(self, kind: str, resource: Any) -> Callable[[Any, Any], bool]:
        """`selects(scope, record)` for the records (kind: span, log or metric) under `resource`,
        with what depends on the resource alone decided here, once."""
        include = getattr(self.include, kind) if self.include is not None else None
        if self.include is not None and not self.include.on_resource(kind, resource):
            return _none
        excludes = [getattr(exclude, kind) for exclude in self.excludes if exclude.on_resource(kind, resource)]

        def selects(scope: Any, record: Any) -> bool:
            if include is not None and not include(scope, record):
                return False
            return not any(exclude(scope, record) for exclude in excludes)
        return selects


def _none(scope: Any, record: Any) -> bool:
    return False


def _service_name(resource: Any) -> str:
    """As otelcol's span matching reads it: any type as its AsString, and a placeholder when missing."""
    for kv in resource.attributes:
        if kv.key == "service.name":
            return value_as_string(kv.value)
    return "<nil-service-name>"
