"""The effective config that `print-config` shows, as otelcol 0.165's does: every component's
settings with their defaults filled in, and the service; durations as Go prints them.

The output loads again to the same config: values are printed after expansion, so a `$` in
them is printed as `$$`; a setting left out (None) is left out, not printed as null (a null
`batch:` would enable batching); and a setting whose meaning depends on being written at all
(`UNSET_STAYS_UNSET` of its model) is printed only when it was written.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

if TYPE_CHECKING:
    from edgeagent.config.loader import AgentConfig

KINDS = ("connectors", "exporters", "extensions", "processors", "receivers")


def effective_document(config: AgentConfig) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kind in KINDS:
        out[kind] = {component_id: settings(component.config)
                     for component_id, component in getattr(config, kind).items()}
    out["service"] = settings(config.service)
    return _escaped(out)


def settings(model: BaseModel) -> Any:
    """A model's settings as a config document writes them."""
    dumped = model.model_dump(mode="json", by_alias=True, exclude_none=True)
    _leave_out_unwritten(model, dumped)
    return dumped


def _leave_out_unwritten(node: Any, dumped: Any) -> None:
    if isinstance(node, BaseModel) and isinstance(dumped, dict):
        unwritten: frozenset[str] = getattr(type(node), "UNSET_STAYS_UNSET", frozenset()) - node.model_fields_set
        for name, field in type(node).model_fields.items():
            key = field.alias or name
            if name in unwritten:
                dumped.pop(key, None)
            elif key in dumped:
                _leave_out_unwritten(getattr(node, name), dumped[key])
    elif isinstance(node, (list, tuple)) and isinstance(dumped, list):
        for item, item_dumped in zip(node, dumped, strict=False):
            _leave_out_unwritten(item, item_dumped)
    elif isinstance(node, dict) and isinstance(dumped, dict):
        for key, value in node.items():
            if str(key) in dumped:
                _leave_out_unwritten(value, dumped[str(key)])


def _escaped(node: Any) -> Any:
    if isinstance(node, dict):
        return {key: _escaped(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_escaped(item) for item in node]
    return node.replace("$", "$$") if isinstance(node, str) else node
