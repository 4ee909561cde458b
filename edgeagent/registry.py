"""Every component type the agent knows, by kind and YAML type name. An explicit list, no magic.

otelcol's deprecated type aliases are accepted too (`otlp` for `otlp_grpc`, `otlphttp` for
`otlp_http`): looking one up gives the factory of the type it stands for; listing a kind gives
the current names only. Unlike otelcol, using an alias draws no warning: a component's id names
its queue, so renaming `otlphttp` to `otlp_http` would leave a running install's backlog behind.

A component's module is imported when its type is first looked up, so an agent whose config
has no Kafka component never imports the Kafka client (a tenth of the start-up time).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator, Mapping

from edgeagent import lean
from edgeagent.component import Factory

_MODULES: dict[str, dict[str, str]] = {
    "receivers": {"otlp": "edgeagent.receivers.otlp", "kafka": "edgeagent.receivers.kafka"},
    "processors": {"memory_limiter": "edgeagent.processors.memory_limiter",
                   "attributes": "edgeagent.processors.attributes",
                   "resource": "edgeagent.processors.resource",
                   "filter": "edgeagent.processors.filter",
                   "batch": "edgeagent.processors.batch",
                   "tail_sampling": "edgeagent.processors.tail_sampling.factory"},
    "exporters": {"otlp_grpc": "edgeagent.exporters.otlp", "otlp_http": "edgeagent.exporters.otlphttp",
                  "kafka": "edgeagent.exporters.kafka", "debug": "edgeagent.exporters.debug"},
    "connectors": {"failover": "edgeagent.connectors.failover"},
    "extensions": {"health_check": "edgeagent.extensions.health_check",
                   "file_storage": "edgeagent.extensions.file_storage",
                   "bearertokenauth": "edgeagent.extensions.bearertokenauth"},
}
# otelcol 0.165 renamed these exporters and keeps the old names as deprecated aliases
_ALIASES: dict[str, dict[str, str]] = {"exporters": {"otlp": "otlp_grpc", "otlphttp": "otlp_http"}}


class _Factories(Mapping[str, Factory]):
    """The factories of one kind by type name (aliases resolved); listing the names imports nothing."""

    def __init__(self, modules: dict[str, str], aliases: dict[str, str]):
        self._modules = modules
        self._aliases = aliases

    def __getitem__(self, type_name: str) -> Factory:
        name = self._modules[self._aliases.get(type_name, type_name)]
        module = sys.modules.get(name)
        if module is None:
            with lean.importing():  # a component's module and what it imports: see lean.py
                module = importlib.import_module(name)
        return module.FACTORY

    def __iter__(self) -> Iterator[str]:
        return iter(self._modules)

    def __len__(self) -> int:
        return len(self._modules)


FACTORIES: dict[str, Mapping[str, Factory]] = {kind: _Factories(modules, _ALIASES.get(kind, {}))
                                                for kind, modules in _MODULES.items()}


def module(kind: str, type_name: str) -> str:
    """The module a type is implemented in (named, not imported)."""
    return _MODULES[kind][type_name]


def deprecated_alias(kind: str, type_name: str) -> str | None:
    """The deprecated alias of a current type name, if it has one."""
    return next((alias for alias, name in _ALIASES.get(kind, {}).items() if name == type_name), None)
