"""Every registered component: create, shutdown without start, start, shutdown twice."""

from __future__ import annotations

import asyncio

import pytest

from edgeagent import registry
from edgeagent.signals import Signal
from tests.helpers.net import free_port

MINIMAL = {
    ("receivers", "otlp"): lambda: {"protocols": {"grpc": {"endpoint": f"127.0.0.1:{free_port()}"},
                                                  "http": {"endpoint": f"127.0.0.1:{free_port()}"}}},
    ("processors", "memory_limiter"): lambda: {"check_interval": "1s", "limit_mib": 512},
    ("processors", "attributes"): lambda: {"actions": [{"key": "k", "value": "v", "action": "upsert"}]},
    ("processors", "resource"): lambda: {"attributes": [{"key": "k", "value": "v", "action": "upsert"}]},
    ("processors", "filter"): lambda: {"spans": {"exclude": {"match_type": "strict", "span_names": ["x"]}}},
    ("processors", "batch"): dict,
    ("processors", "tail_sampling"): lambda: {"policies": [{"name": "all", "type": "always_sample"}]},
    ("exporters", "otlp_http"): lambda: {"endpoint": f"http://127.0.0.1:{free_port()}"},
    ("exporters", "otlp_grpc"): lambda: {"endpoint": f"127.0.0.1:{free_port()}", "tls": {"insecure": True}},
    ("exporters", "debug"): dict,
    ("exporters", "kafka"): lambda: {"brokers": [f"127.0.0.1:{free_port()}"]},
    ("receivers", "kafka"): lambda: {"brokers": [f"127.0.0.1:{free_port()}"]},
    ("connectors", "failover"): lambda: {"priority_levels": [["traces/primary"], ["traces/backup"]]},
    ("extensions", "health_check"): lambda: {"endpoint": f"127.0.0.1:{free_port()}"},
    ("extensions", "file_storage"): dict,
    ("extensions", "bearertokenauth"): lambda: {"token": "lifecycle-token"},
}


class Host:
    """What components ask of the agent, with no pipeline behind it."""

    def consumer(self, receiver_id: str, signal: Signal):
        return None

    def counter_inc(self, name: str, amount: float, *labels: str) -> None:
        pass

    def ready(self) -> bool:
        return True

    def health(self) -> dict:
        return {"healthy": True}


REGISTERED = [(kind, type_name) for kind, factories in registry.FACTORIES.items() for type_name in factories]


def test_every_registered_component_has_a_minimal_config_here():
    assert set(REGISTERED) == set(MINIMAL)


@pytest.mark.parametrize("kind,type_name", REGISTERED, ids=[f"{k}/{t}" for k, t in REGISTERED])
def test_component_lifecycle(kind, type_name):
    factory = registry.FACTORIES[kind][type_name]
    assert factory.type == type_name, "the registry names a module that registers another type"
    config = factory.config.model_validate(MINIMAL[(kind, type_name)]())

    async def scenario() -> None:
        never_started = factory.create(type_name, config, Host())
        await never_started.shutdown()
        component = factory.create(type_name, config, Host())
        await component.start()
        await component.shutdown()
        await component.shutdown()

    asyncio.run(scenario())
