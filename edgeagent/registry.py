"""Every component type the agent knows, by kind and YAML type name. An explicit list, no magic.

A component's module is imported when its type is first looked up, so an agent whose config
has no Kafka component never imports the Kafka client (a tenth of the start-up time).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping

from edgeagent.component import Factory

_MODULES: dict[str, dict[str, str]] = {
    "receivers": {"otlp": "edgeagent.receivers.otlp", "kafka": "edgeagent.receivers.kafka"},
    "processors": {"memory_limiter": "edgeagent.processors.memory_limiter",
                   "attributes": "edgeagent.processors.attributes",
                   "resource": "edgeagent.processors.resource",
                   "filter": "edgeagent.processors.filter",
                   "batch": "edgeagent.processors.batch",
                   "tail_sampling": "edgeagent.processors.tail_sampling.factory"},
    "exporters": {"otlp": "edgeagent.exporters.otlp", "otlphttp": "edgeagent.exporters.otlphttp",
                  "kafka": "edgeagent.exporters.kafka"},
    "connectors": {"failover": "edgeagent.connectors.failover"},
    "extensions": {"health_check": "edgeagent.extensions.health_check",
                   "file_storage": "edgeagent.extensions.file_storage",
                   "bearertokenauth": "edgeagent.extensions.bearertokenauth"},
}


class _Factories(Mapping[str, Factory]):
    """The factories of one kind by type name; listing the names imports nothing."""

    def __init__(self, modules: dict[str, str]):
        self._modules = modules

    def __getitem__(self, type_name: str) -> Factory:
        return importlib.import_module(self._modules[type_name]).FACTORY

    def __iter__(self) -> Iterator[str]:
        return iter(self._modules)

    def __len__(self) -> int:
        return len(self._modules)


FACTORIES: dict[str, Mapping[str, Factory]] = {kind: _Factories(modules) for kind, modules in _MODULES.items()}
