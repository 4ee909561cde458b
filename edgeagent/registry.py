"""Every component type the agent knows, by kind and YAML type name. An explicit list, no magic."""

from __future__ import annotations

from edgeagent.component import Factory
from edgeagent.connectors import failover
from edgeagent.exporters import kafka as kafka_exporter, otlp as otlp_exporter, otlphttp
from edgeagent.extensions import bearertokenauth, file_storage, health_check
from edgeagent.processors import attributes, batch, filter, memory_limiter, resource, tail_sampling
from edgeagent.receivers import kafka as kafka_receiver, otlp


def _by_type(*factories: Factory) -> dict[str, Factory]:
    return {factory.type: factory for factory in factories}


FACTORIES: dict[str, dict[str, Factory]] = {
    "receivers": _by_type(otlp.FACTORY, kafka_receiver.FACTORY),
    "processors": _by_type(memory_limiter.FACTORY, attributes.FACTORY, resource.FACTORY, filter.FACTORY, batch.FACTORY,
                           tail_sampling.FACTORY),
    "exporters": _by_type(otlp_exporter.FACTORY, otlphttp.FACTORY, kafka_exporter.FACTORY),
    "connectors": _by_type(failover.FACTORY),
    "extensions": _by_type(health_check.FACTORY, file_storage.FACTORY, bearertokenauth.FACTORY),
}
