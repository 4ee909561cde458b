"""Load an otelcol-style YAML config: parse, expand the environment, validate every part.

Every error is collected with its YAML path (`exporters::otlphttp/x::timeout: ...`) and
reported at once; validation is pure (no disk, network or ports).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ValidationError

from edgeagent import lean
from edgeagent.component import KINDS, ComponentConfig, ComponentId, ConnectorConfig
from edgeagent.config.document import (
    ConfigError,
    Source,
    parse_yaml,
    read_uri,
    resolve,
    set_flag,
)
from edgeagent.config.expand import expand_tree, plain
from edgeagent.config.service import ServiceConfig
from edgeagent.config.types import port_problem
from edgeagent.config.unsupported import unsupported
from edgeagent.configdecode import type_error_sentence
from edgeagent.signals import Signal
from otel.godecode import DOCUMENT

lean.builtin_factories_take_no_data()  # before any model is built: see edgeagent/lean.py
_TOP_LEVEL = set(KINDS) | {"service"}


@dataclass
class Component:
    """One configured component: its id, kind and validated settings."""

    id: ComponentId
    kind: str
    config: ComponentConfig

    @property
    def path(self) -> str:
        return f"{self.kind}::{self.id}"


@dataclass
class Pipeline:
    """One service pipeline: its signal and the components it names, in order."""

    id: str
    signal: Signal
    receivers: list[str]
    processors: list[str]
    exporters: list[str]


@dataclass
class AgentConfig:
    """A validated config: the components by kind, the service settings and the pipelines."""

    receivers: dict[str, Component]
    processors: dict[str, Component]
    exporters: dict[str, Component]
    extensions: dict[str, Component]
    service: ServiceConfig
    pipelines: list[Pipeline]
    warnings: list[str] = field(default_factory=list)
    source: str = ""
    connectors: dict[str, Component] = field(default_factory=dict)


def load_file(path: str, environ: Mapping[str, str] | None = None, overrides: list[str] | None = None) -> AgentConfig:
    return load_uris([path], environ, overrides)


def load_uris(uris: list[str], environ: Mapping[str, str] | None = None,
              overrides: list[str] | None = None, merge_append: bool = False) -> AgentConfig:
    """Several `--config` sources (file:, env:, yaml:, http(s): or a path) merged in order, then `--set`,
    then validated; `merge_append` is otelcol's gate confmap.enableMergeAppendOption."""
    environ = os.environ if environ is None else environ
    sources = [read_uri(uri, environ) for uri in uris]
    document = resolve(sources + _set_flags(overrides), merge_append)
    warnings = [warning for source in sources for warning in source.warnings]
    return validate_document(document, environ, ", ".join(s.label for s in sources), warnings)


def load_text(text: str, environ: Mapping[str, str] | None = None, source: str = "<config>",
              overrides: list[str] | None = None, merge_append: bool = False) -> AgentConfig:
    """Parse, expand and validate a config; raises ConfigError with every problem found."""
    environ = os.environ if environ is None else environ
    document = resolve([Source(source, parse_yaml(text, source)), *_set_flags(overrides)], merge_append)
    return validate_document(document, environ, source)


def raw_document(uris: list[str], environ: Mapping[str, str], overrides: list[str] | None = None,
                 merge_append: bool = False) -> tuple[dict, list[str]]:
    """The merged document before validation, with the environment expanded (print-config shows it), and
    the warnings reading it gave."""
    sources = [read_uri(uri, environ) for uri in uris]
    document = resolve(sources + _set_flags(overrides), merge_append)
    warnings = [warning for source in sources for warning in source.warnings]
    return plain(expand_tree(document, (), environ, [], warnings)), warnings


def _set_flags(overrides: list[str] | None) -> list[Source]:
    sources, errors = [], []
    for override in overrides or []:
        try:
            sources.append(set_flag(override))
        except ConfigError as exc:
            errors.extend(exc.errors)
    if errors:
        raise ConfigError(errors)
    return sources


def validate_document(document: Any, environ: Mapping[str, str], source: str,
                      warnings: list[str] | None = None) -> AgentConfig:
    """Expand the environment in a merged document and validate every part of it; `warnings` are those
    reading its sources gave, kept before the rest (with the errors too, when it is invalid)."""
    from edgeagent import (
        registry,  # components import `config`; keep `config` importable alone
    )

    warnings = list(warnings or [])
    if not isinstance(document, dict):
        raise ConfigError([("", "the config must be a YAML mapping with receivers, exporters and service")],
                          warnings)
    expansion_errors: list[tuple[tuple[str, ...], str]] = []
    document = expand_tree(document, (), environ, expansion_errors, warnings)
    errors: list[tuple[str, str]] = [("::".join(path), message) for path, message in expansion_errors]
    failed_paths = {"::".join(path) for path, _ in expansion_errors}

    for key in document:
        if key not in _TOP_LEVEL:
            errors.append((str(key), f"unknown top-level key{_nearest(key, _TOP_LEVEL)}; expected one of "
                                     f"{', '.join(sorted(_TOP_LEVEL))}"))

    sections = _validate_components(document, errors, warnings, failed_paths, registry)
    service_raw = document.get("service")
    service: ServiceConfig | None = None
    if service_raw is None:
        errors.append(("service", "required: a service block with at least one pipeline"))
    elif not isinstance(service_raw, dict):
        errors.append(("service", "must be a mapping with pipelines"))
    else:
        try:
            service = ServiceConfig.model_validate(service_raw, context=DOCUMENT)
            warnings.extend(service.config_warnings())
        except ValidationError as exc:
            errors.extend(e for e in pydantic_errors(exc, "service", ServiceConfig)
                          if not _caused_by_expansion(e[0], failed_paths))
    if service is None:  # the checks below go on with the defaults; made only here: a default model
        service = ServiceConfig()  # (telemetry's) builds a validator of its own, 5 ms of a valid config's start

    _check_ports(document, (), errors)
    pipelines = _check_pipelines(service, sections, errors, registry)
    _check_connectors(sections, pipelines, errors, warnings)
    _warn_per_signal(sections, pipelines, warnings)
    for index, ext_id in enumerate(service.extensions):
        if ext_id not in sections["extensions"] and ext_id not in _declared(document, "extensions"):
            errors.append((f"service::extensions::{index}", f"extension {ext_id!r} is not defined under extensions"
                           f"{_nearest(ext_id, _declared(document, 'extensions'))}; define it or remove it from "
                           f"service::extensions"))
    _check_storage_references(document, sections, service, errors)
    _check_waits_behind_stages(sections, pipelines, errors)
    _check_authenticator_references(document, sections, service, errors)
    if errors:
        raise ConfigError(errors, warnings)
    return AgentConfig(sections["receivers"], sections["processors"], sections["exporters"], sections["extensions"],
                       service, pipelines, warnings, source, connectors=sections["connectors"])


def _validate_components(document: dict, errors: list[tuple[str, str]], warnings: list[str], failed_paths: set[str],
                         registry: Any) -> dict[str, dict[str, Component]]:
    """Each component's settings through its factory's model; returns the valid ones by kind."""
    sections: dict[str, dict[str, Component]] = {}
    for kind in KINDS:
        sections[kind] = {}
        block = document.get(kind) or {}
        if not isinstance(block, dict):
            errors.append((kind, "must be a mapping of component ids to their settings"))
            continue
        factories = registry.FACTORIES[kind]
        for raw_id, settings in block.items():
            component_id = ComponentId.parse(raw_id)
            path = f"{kind}::{raw_id}"
            factory = factories.get(component_id.type)
            if factory is None:
                errors.append(
                    (path, f"unknown {kind[:-1]} type {component_id.type!r}{_nearest(component_id.type, factories)}; "
                           f"supported: {', '.join(sorted(factories))}")
                )
                continue
            if settings is None:
                settings = {}
            if not isinstance(settings, dict):
                errors.append((path, "must be a mapping of settings"))
                continue
            try:
                config = factory.config.model_validate(settings, context=DOCUMENT)
            except ValidationError as exc:
                errors.extend(e for e in pydantic_errors(exc, path, factory.config, (kind, component_id.type))
                              if not _caused_by_expansion(e[0], failed_paths))
                continue
            warnings.extend(f"{path}: {warning}" for warning in config.config_warnings())
            sections[kind][str(component_id)] = Component(component_id, kind, config)

    return sections


def _check_ports(node: Any, path: tuple[str, ...], errors: list[tuple[str, str]]) -> None:
    """Every endpoint (`endpoint`, `*_endpoint`, `address`, `proxy_url`, `brokers`) names a port from 1 to 65535."""
    if isinstance(node, list):
        for index, item in enumerate(node):
            _check_ports(item, path + (str(index),), errors)
        return
    if not isinstance(node, dict):
        return
    for key, value in node.items():
        where = path + (str(key),)
        endpoints: list[tuple[tuple[str, ...], Any]] = []
        if key in ("endpoint", "address", "proxy_url") or (isinstance(key, str) and key.endswith("_endpoint")):
            endpoints = [(where, value)]
        elif key == "brokers" and isinstance(value, list):
            endpoints = [(where + (str(index),), item) for index, item in enumerate(value)]
        for at, endpoint in endpoints:
            problem = port_problem(endpoint) if isinstance(endpoint, str) else None
            if problem and "::".join(at) not in _paths(errors):
                errors.append(("::".join(at), problem))
        _check_ports(value, where, errors)


def _check_storage_references(document: dict, sections: dict[str, dict[str, Component]], service: ServiceConfig,
                              errors: list[tuple[str, str]]) -> None:
    """An exporter's sending_queue::storage must name a file_storage extension that the service enables."""
    for exporter_id, component in sections["exporters"].items():
        queue = getattr(component.config, "sending_queue", None)
        storage = getattr(queue, "storage", None)
        if not storage:
            continue
        path = f"exporters::{exporter_id}::sending_queue::storage"
        extension = sections["extensions"].get(storage)
        if extension is None:
            if storage not in _declared(document, "extensions"):
                errors.append((path, f"extension {storage!r} is not defined under extensions; define a file_storage "
                               f"extension with that id"))
        elif extension.id.type != "file_storage":
            errors.append(
                (path, f"{storage!r} is a {extension.id.type} extension; storage needs a file_storage extension")
            )
        elif storage not in service.extensions:
            errors.append((path, f"extension {storage!r} is not enabled; add it to service::extensions"))
        elif getattr(queue, "block_on_overflow", False) and \
                getattr(extension.config, "full_policy", "block") == "drop_oldest":
            errors.append((f"exporters::{exporter_id}::sending_queue::block_on_overflow",
                           f"{storage!r} has full_policy: drop_oldest, which makes room by evicting the oldest "
                           "records, so a full queue never makes a client wait; use one or the other"))


def _check_waits_behind_stages(sections: dict[str, dict[str, Component]], pipelines: list[Pipeline],
                               errors: list[tuple[str, str]]) -> None:
    """tail_sampling answers clients once traces are buffered and moves kept ones to the queues later:
    no client is there to wait for room or for a delivery in its pipeline's exporters."""
    for pipeline in pipelines:
        staged = [proc_id for proc_id in pipeline.processors
                  if proc_id in sections["processors"] and sections["processors"][proc_id].id.type == "tail_sampling"]
        if not staged:
            continue
        for exporter_id in pipeline.exporters:
            component = sections["exporters"].get(exporter_id)
            queue = getattr(component.config, "sending_queue", None) if component is not None else None
            for key in ("wait_for_result", "block_on_overflow"):
                path = f"exporters::{exporter_id}::sending_queue::{key}"
                if getattr(queue, key, False) and path not in _paths(errors):
                    errors.append((path, f"pipeline {pipeline.id} samples with {staged[0]}, which answers the client "
                                   f"once traces are buffered and queues kept ones later, so no client waits for "
                                   f"this; remove {key} or the exporter from that pipeline"))


def _check_authenticator_references(document: dict, sections: dict[str, dict[str, Component]],
                                    service: ServiceConfig, errors: list[tuple[str, str]]) -> None:
    """Every `auth::authenticator` must name an authenticator extension that the service enables."""
    from edgeagent.auth import AuthenticatorConfig, auth_settings

    for kind in ("receivers", "exporters", "extensions"):  # the health check is an HTTP server with `auth`
        for component_id, component in sections[kind].items():
            for path, auth in auth_settings(component.config, f"{kind}::{component_id}"):
                name = auth.authenticator
                path += "::authenticator"
                extension = sections["extensions"].get(name)
                if extension is None:
                    if name not in _declared(document, "extensions"):
                        errors.append((path, f"extension {name!r} is not defined under extensions; define an "
                                       f"authenticator such as bearertokenauth with that id"))
                elif not isinstance(extension.config, AuthenticatorConfig):
                    errors.append((path, f"{name!r} is a {extension.id.type} extension, not an authenticator; "
                                   f"name a bearertokenauth extension"))
                elif name not in service.extensions:
                    errors.append((path, f"extension {name!r} is not enabled; add it to service::extensions"))


def _declared(document: dict, kind: str) -> dict:
    """The ids written under a kind, valid or not (an id with bad settings is reported there, not again)."""
    block = document.get(kind)
    return block if isinstance(block, dict) else {}


def _caused_by_expansion(path: str, failed_paths: set[str]) -> bool:
    """An error at or above a value whose ${...} did not expand is a consequence, not a new mistake."""
    return any(failed == path or failed.startswith(path + "::") for failed in failed_paths)


def _paths(errors: list[tuple[str, str]]) -> set[str]:
    return {path for path, _ in errors}


def _check_pipelines(service: ServiceConfig, sections: dict[str, dict[str, Component]], errors: list[tuple[str, str]],
                     registry: Any) -> list[Pipeline]:
    pipelines: list[Pipeline] = []
    known_bad = {path.split("::")[1] for path, _ in errors if path.count("::") >= 1 and path.split("::")[0] in KINDS}
    for pipeline_id, spec in service.pipelines.items():
        path = f"service::pipelines::{pipeline_id}"
        signal_name = pipeline_id.partition("/")[0]
        if signal_name not in ("traces", "metrics", "logs"):
            errors.append(
                (path, f"unknown signal {signal_name!r}; a pipeline id is traces, metrics or logs, optionally /name")
            )
            continue
        for kind in ("receivers", "processors", "exporters"):
            ids = getattr(spec, kind)
            places = (kind,) if kind == "processors" else (kind, "connectors")
            if kind != "processors" and not ids:
                errors.append((f"{path}::{kind}", f"a pipeline needs at least one {kind[:-1]}"))
            seen = set()
            for component_id in ids:
                if component_id in seen:
                    errors.append((f"{path}::{kind}", f"{component_id!r} is listed twice"))
                seen.add(component_id)
                if any(component_id in sections[place] for place in places) or component_id in known_bad:
                    continue
                place = (
                    "connectors" if ComponentId.parse(component_id).type in registry.FACTORIES["connectors"] else kind
                )
                defined = [known for where in places for known in sections[where]]
                errors.append((f"{path}::{kind}", f"{component_id!r} is not defined under {place}"
                               f"{_nearest(component_id, defined)}; define it there or remove it from this pipeline"))
                continue
            for component_id in ids:
                found = next((place for place in places if component_id in sections[place]), None)
                if found is None:
                    continue
                factory = registry.FACTORIES[found][sections[found][component_id].id.type]
                if signal_name not in factory.signals:
                    errors.append((f"{path}::{kind}", f"{component_id!r} does not support {signal_name}"))
                elif unfit := sections[found][component_id].config.unfit_for(signal_name):
                    key, why = unfit
                    fix = "; use a processor of its own for each signal" if found == "processors" else ""
                    errors.append((f"{found}::{component_id}::{key}", f"{why} (pipeline {pipeline_id!r}){fix}"))
        pipelines.append(Pipeline(pipeline_id, Signal.parse(signal_name), list(spec.receivers), list(spec.processors),
                                  list(spec.exporters)))
    if not service.pipelines and not any(path.split("::")[0] == "service" for path in _paths(errors)):
        errors.append(("service::pipelines", "define at least one pipeline (traces, metrics or logs)"))
    return pipelines


def _warn_per_signal(sections: dict[str, dict[str, Component]], pipelines: list[Pipeline],
                     warnings: list[str]) -> None:
    """Keys a component takes that do nothing for a signal it serves: once per component and signal,
    whichever pipelines of that signal use it."""
    done: set[tuple[str, str, Signal]] = set()
    for pipeline in pipelines:
        for kind in ("receivers", "processors", "exporters"):
            for component_id in getattr(pipeline, kind):
                place = kind if component_id in sections[kind] else "connectors"
                component = sections[place].get(component_id)
                if component is None or (place, component_id, pipeline.signal) in done:
                    continue
                done.add((place, component_id, pipeline.signal))
                warnings.extend(f"{place}::{component_id}::{key}: {why}"
                                for key, why in component.config.warnings_for(pipeline.signal.label))


def _check_connectors(sections: dict[str, dict[str, Component]], pipelines: list[Pipeline],
                      errors: list[tuple[str, str]], warnings: list[str]) -> None:
    """A connector is the exporter of some pipelines and the receiver of others: check both ends.

    Every connector in use needs both ends, one signal throughout, routes that name pipelines
    receiving from it (and only those), and no cycle through connectors."""
    connectors = sections["connectors"]
    by_id = {pipeline.id: pipeline for pipeline in pipelines}
    for connector_id, component in connectors.items():
        feeding = [p for p in pipelines if connector_id in p.exporters]
        fed = [p for p in pipelines if connector_id in p.receivers]
        if feeding and not fed:
            errors.append((f"service::pipelines::{feeding[0].id}::exporters", f"connector {connector_id!r} is an "
                           f"exporter here, but no pipeline lists it under receivers; add it to the receivers of "
                           f"the pipelines it sends to"))
        if fed and not feeding:
            errors.append((f"service::pipelines::{fed[0].id}::receivers", f"connector {connector_id!r} is a receiver "
                           f"here, but no pipeline lists it under exporters; add it to the exporters of the "
                           f"pipeline that feeds it"))
        ends = feeding + fed
        for pipeline in ends:
            first = ends[0]
            if pipeline.signal != first.signal:
                kind = "exporters" if pipeline in feeding else "receivers"
                errors.append((f"service::pipelines::{pipeline.id}::{kind}", f"connector {connector_id!r} carries "
                               f"{first.signal.label} (pipeline {first.id!r} uses it), so a {pipeline.signal.label} "
                               f"pipeline cannot use it"))
        config = component.config
        routes = config.routes() if isinstance(config, ConnectorConfig) else []
        for subpath, pipeline_id in routes:
            path = f"connectors::{connector_id}::{subpath}"
            if pipeline_id not in by_id:
                errors.append((path, f"pipeline {pipeline_id!r} is not defined under service::pipelines"))
            elif connector_id not in by_id[pipeline_id].receivers:
                errors.append((path, f"pipeline {pipeline_id!r} does not list {connector_id!r} under receivers; "
                               f"add it there"))
        routed = {pipeline_id for _, pipeline_id in routes}
        key = routes[0][0].split("::")[0] if routes else "routes"
        for pipeline in fed:
            if pipeline.id not in routed:
                errors.append((f"service::pipelines::{pipeline.id}::receivers", f"connector {connector_id!r} never "
                               f"sends to {pipeline.id}: add it to connectors::{connector_id}::{key}, or remove the "
                               f"connector from these receivers"))
    _check_connector_cycles(connectors, pipelines, errors)
    _warn_about_sub_pipelines(sections, pipelines, warnings)


def _check_connector_cycles(connectors: dict[str, Component], pipelines: list[Pipeline],
                            errors: list[tuple[str, str]]) -> None:
    """Data must not flow from a pipeline back into itself through connectors."""
    edges = {p.id: [(c, q.id) for c in p.exporters if c in connectors for q in pipelines if c in q.receivers]
             for p in pipelines}
    done: set[str] = set()

    def visit(pipeline_id: str, trail: list[str]) -> None:
        trail.append(pipeline_id)
        for connector_id, target in edges[pipeline_id]:
            if target in trail:
                cycle = " -> ".join(trail[trail.index(target):] + [target])
                errors.append((f"service::pipelines::{pipeline_id}::exporters", f"connector {connector_id!r} closes "
                               f"a cycle ({cycle}); data would flow back into a pipeline it came from"))
            elif target not in done:
                visit(target, trail)
        trail.pop()
        done.add(pipeline_id)

    for pipeline in pipelines:
        if pipeline.id not in done:
            visit(pipeline.id, [])


def _warn_about_sub_pipelines(sections: dict[str, dict[str, Component]], pipelines: list[Pipeline],
                              warnings: list[str]) -> None:
    """Settings that do nothing in a pipeline fed only by connectors (it has no queue of its own)."""
    connectors = sections["connectors"]
    sub = [p for p in pipelines if p.receivers and all(r in connectors for r in p.receivers)]
    queued = {exporter_id for p in pipelines if p not in sub for exporter_id in p.exporters}
    warned: set[str] = set()
    for pipeline in sub:
        for exporter_id in pipeline.exporters:
            component = sections["exporters"].get(exporter_id) or connectors.get(exporter_id)
            if component is None or exporter_id in queued or exporter_id in warned:
                continue
            warned.add(exporter_id)
            for key in ("sending_queue", "retry_on_failure"):
                if component.config.written_unlike_default(key):
                    warnings.append(f"{component.path}::{key}: has no effect: {exporter_id} is used only in "
                                    f"pipelines fed by a connector, which send synchronously for the connector; "
                                    f"the connector's own queue and retry hold the data")
        for processor_id in pipeline.processors:
            processor = sections["processors"].get(processor_id)
            if processor is None:
                continue
            path = f"service::pipelines::{pipeline.id}::processors"
            if processor.id.type == "batch":
                warnings.append(f"{path}: {processor_id!r} has no effect in a pipeline fed by a connector: requests "
                                f"arrive batched from the connector's queue, with the batch settings of the pipeline "
                                f"that exports to the connector")
            actions = getattr(processor.config, "actions", None) or getattr(processor.config, "attributes", None) or []
            if any(getattr(action, "from_context", None) for action in actions):
                warnings.append(f"{path}: {processor_id!r} uses from_context, but a pipeline fed by a connector has "
                                f"no request metadata (the queue does not keep it); move the action to the pipeline "
                                f"that exports to the connector")


def pydantic_errors(exc: ValidationError, prefix: str, model: type[BaseModel],
                    component: tuple[str, str] | None = None) -> list[tuple[str, str]]:
    """Turn pydantic's errors into (yaml path, sentence) pairs; `component` (kind, type) names the
    otelcol keys edgeagent does not implement as such."""
    out = []
    for error in exc.errors(include_url=False):  # the input only to name its kind, never shown
        loc = [str(part) for part in error["loc"]]
        path = "::".join([prefix, *loc])
        kind = error["type"]
        message = error["msg"]
        if kind == "extra_forbidden" and component and (reason := unsupported(*component, loc)):
            message = reason
        elif kind == "extra_forbidden":
            known = _fields_at(model, loc[:-1])
            message = (f"unknown key {loc[-1]!r}{_nearest(loc[-1], known)}"
                       + (f"; supported keys here: {', '.join(known)}" if known else ""))
        elif kind == "missing":
            message = "required key is missing"
        elif sentence := type_error_sentence(error):
            message = sentence
        elif message.startswith("Value error, "):
            message = message[len("Value error, "):]
        elif message.startswith("Assertion failed, "):
            message = message[len("Assertion failed, "):]
        out.append((path, message))
    return out


def _nearest(word: object, choices: Iterable[object]) -> str:
    """" (did you mean 'timeout'?)" for the valid name closest to a misspelt one, or ""."""
    import difflib  # only a config with a mistake needs it

    close = difflib.get_close_matches(str(word), [str(choice) for choice in choices], n=1, cutoff=0.75)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _fields_at(model: Any, loc: list[str]) -> list[str]:
    """The field names of the model reached by following `loc` through nested models, lists and dicts."""
    import typing

    current: Any = model
    for part in loc:
        current = _unwrap(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            field_info = current.model_fields.get(part)
            if field_info is None:
                alias = {f.alias: f for f in current.model_fields.values() if f.alias}
                field_info = alias.get(part)
            if field_info is None:
                return []
            current = field_info.annotation
        else:
            args = typing.get_args(current)
            current = args[-1] if args else None
    current = _unwrap(current)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return [f.alias or name for name, f in current.model_fields.items()]
    return []


def _unwrap(annotation: Any) -> Any:
    import typing

    while True:
        origin = typing.get_origin(annotation)
        if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
            args = [a for a in typing.get_args(annotation) if a is not type(None)]
            models = [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]
            annotation = models[0] if models else (args[0] if args else None)
            continue
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
            continue
        return annotation
