"""The `resource` processor: the attribute actions, applied to resource attributes."""

from __future__ import annotations

from typing import Any

from edgeagent.component import Factory
from edgeagent.processors.actions import Actions, ActionsConfig
from edgeagent.signals import Payload, resource_groups


class ResourceConfig(ActionsConfig):
    pass


class ResourceProcessor:
    def __init__(self, component_id: str, config: ResourceConfig, host: Any = None):
        self.id = component_id
        self.actions = Actions(config.actions)

    async def start(self) -> None:
        return None

    async def shutdown(self) -> None:
        return None

    def process(self, payload: Payload) -> Payload:
        changed = False
        for group in resource_groups(payload.signal, payload.view()):
            changed |= self.actions.apply(group.resource.attributes, payload.metadata, payload.client_address)
        if changed:
            payload.mark_changed()
        return payload


FACTORY = Factory("resource", ResourceConfig, ResourceProcessor)
