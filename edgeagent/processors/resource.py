"""The `resource` processor: the attribute actions, applied to resource attributes.

otelcol's resource processor lists its actions under `attributes:` (the attributes processor
says `actions:`); `actions:` here is refused with the fix rather than silently ignored.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator, model_validator

from edgeagent.component import ComponentConfig, Factory
from edgeagent.processors.actions import ActionConfig, Actions, ignored_warnings
from edgeagent.signals import Payload, resource_groups


class ResourceConfig(ComponentConfig):
    attributes: list[ActionConfig] = Field(default_factory=list)
    actions: Any = None  # not an otelcol key: only here to name the fix

    @field_validator("actions")
    @classmethod
    def _not_actions(cls, value: Any) -> Any:
        if value is not None:
            raise ValueError("the resource processor reads its actions from attributes:, as otelcol does; "
                             "rename actions: to attributes:")
        return value

    @model_validator(mode="after")
    def _needs_attributes(self) -> ResourceConfig:
        if not self.attributes:
            raise ValueError("attributes is required: list at least one action, e.g. "
                             "attributes: [{key: deployment.environment, value: prod, action: upsert}]")
        return self

    def config_warnings(self) -> list[str]:
        return ignored_warnings("attributes", self.attributes)


class ResourceProcessor:
    def __init__(self, component_id: str, config: ResourceConfig, host: Any = None):
        self.id = component_id
        self.actions = Actions(config.attributes)

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
