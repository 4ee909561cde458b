"""The `debug` exporter: writes what passes through to the agent's log, as otelcol's debug exporter does.

`verbosity` basic logs one line per request (resource and item counts); normal adds one line
per item (span name and ids, metric name and type, log body); detailed adds the whole request.
Lines are sampled as otelcol samples them: in each second the first `sampling_initial` are
written, then every `sampling_thereafter`th. With `use_internal_logger: false` the text goes to
`output_paths` (stdout, stderr or files) without log-line decoration.

There is no queue by default (`sending_queue.enabled: false`): a request is written while the
client waits, since a durable queue of debug output would only delay it.

An output that takes no more writes (stdout a pipe whose reader is gone, a log driver or journald
restarted; a file on a full disk) loses the text, never the request: otelcol's zap reports the
failed write on its error output and the export succeeds. Refusing instead would refuse every
request of the pipeline (a 400 or 500, which clients do not retry) for want of a print-out. A
file's failure is logged, at most every WRITE_FAILED_LOG_EVERY seconds; stdout and stderr are
written by the log's own thread (runtime/logwriter.py), which never waits for a full pipe and
says how many lines it dropped.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Literal, TextIO

from google.protobuf import text_format
from pydantic import Field, model_validator

from edgeagent.component import ComponentConfig, Factory
from edgeagent.configretry import RetryConfig
from edgeagent.exporters.chain import SendResult
from edgeagent.exporters.sender import QueueConfig
from edgeagent.runtime import logwriter
from edgeagent.signals import Signal, count_items, resource_groups

log = logging.getLogger(__name__)
_GROUP_NAMES = {Signal.TRACES: "resource spans", Signal.METRICS: "resource metrics", Signal.LOGS: "resource logs"}
_SCOPES = {Signal.TRACES: "scope_spans", Signal.METRICS: "scope_metrics", Signal.LOGS: "scope_logs"}
_ITEMS = {Signal.TRACES: "spans", Signal.METRICS: "metrics", Signal.LOGS: "log_records"}
_ITEM_NAMES = {Signal.TRACES: "spans", Signal.METRICS: "data points", Signal.LOGS: "log records"}
WRITE_FAILED_LOG_EVERY = 60.0  # seconds


class DebugQueueConfig(QueueConfig):
    enabled: bool = False


class DebugConfig(ComponentConfig):
    verbosity: Literal["basic", "normal", "detailed"] = "basic"
    sampling_initial: int = Field(2, ge=0)
    sampling_thereafter: int = Field(1, ge=0)
    use_internal_logger: bool = True
    output_paths: list[str] | None = None
    sending_queue: DebugQueueConfig = Field(default_factory=DebugQueueConfig)

    @model_validator(mode="after")
    def _check(self) -> DebugConfig:
        if self.use_internal_logger and self.output_paths is not None:
            raise ValueError("output_paths is only read with use_internal_logger: false; remove it or set "
                             "use_internal_logger: false")
        if self.output_paths == []:
            raise ValueError("output_paths is empty: name stdout, stderr or a file")
        return self

    @property
    def retry_on_failure(self) -> RetryConfig:
        """What a queued debug exporter retries with (its writes never fail a send)."""
        return RetryConfig()


class Sampler:
    """zap's sampler: per one-second window, the first `initial` pass, then every `thereafter`th."""

    def __init__(self, initial: int, thereafter: int, clock: Any = time.monotonic):
        self.initial = initial
        self.thereafter = thereafter
        self._clock = clock
        self._window = -1
        self._seen = 0

    def allow(self) -> bool:
        window = int(self._clock())
        if window != self._window:
            self._window, self._seen = window, 0
        self._seen += 1
        if self._seen <= self.initial:
            return True
        return self.thereafter > 0 and (self._seen - self.initial) % self.thereafter == 0


class DebugExporter:
    def __init__(self, component_id: str, config: DebugConfig, host: Any = None):
        self.id = component_id
        self.config = config
        self.configured = True
        self._sampler = Sampler(config.sampling_initial, config.sampling_thereafter)
        self._outputs: list[TextIO | logwriter.Writer] = []
        self._opened: list[TextIO] = []
        self._write_failed_logged = -WRITE_FAILED_LOG_EVERY
        self._write_failures = 0  # since the last log line

    def describe(self) -> str:
        return (
            "the agent's log" if self.config.use_internal_logger else ", ".join(self.config.output_paths or ["stdout"])
        )

    async def start(self) -> None:
        if self.config.use_internal_logger:
            return
        for path in self.config.output_paths or ["stdout"]:
            if path in ("stdout", "stderr"):  # written by the log's thread: a full pipe never holds the loop
                self._outputs.append(logwriter.shared(1 if path == "stdout" else 2, path))
            else:
                handle = open(path, "a", encoding="utf-8")  # noqa: ASYNC230, SIM115 - once, closed in shutdown()
                self._opened.append(handle)
                self._outputs.append(handle)

    async def shutdown(self) -> None:
        opened, self._opened, self._outputs = self._opened, [], []
        for handle in opened:
            handle.close()

    async def send(self, signal: Signal, body: bytes) -> SendResult:
        if not self._sampler.allow():
            return SendResult()
        request = signal.request_class.FromString(body)
        summary = {_GROUP_NAMES[signal]: len(list(resource_groups(signal, request))),
                   _ITEM_NAMES[signal]: count_items(signal, request)}
        text = describe(signal, request, self.config.verbosity)
        if self.config.use_internal_logger:
            log.info("%s%s", signal.label.capitalize(), f"\n{text}" if text else "",
                     extra={"exporter": self.id, **summary})
        else:
            line = f"{signal.label.capitalize()} {summary}" + (f"\n{text}" if text else "") + "\n"
            for output in self._outputs:
                self._write(output, line)
        return SendResult()

    def _write(self, output: TextIO | logwriter.Writer, line: str) -> None:
        if isinstance(output, logwriter.Writer):  # never fails, never waits: what it cannot write it counts
            output.write(line.encode("utf-8", "backslashreplace"))
            return
        try:
            output.write(line)
            output.flush()
        except OSError as exc:  # EPIPE, ENOSPC, EIO: the text is lost, the request is not
            self._write_failures += 1
            now = time.monotonic()
            if now - self._write_failed_logged >= WRITE_FAILED_LOG_EVERY:
                self._write_failed_logged = now
                log.warning("the debug exporter cannot write its output; requests pass on without it",
                            extra={"exporter": self.id, "output": getattr(output, "name", "?"), "error": str(exc),
                                   "failures": self._write_failures})
                self._write_failures = 0


def describe(signal: Signal, request: Any, verbosity: str) -> str:
    """The text below the summary line: nothing (basic), one line per item (normal), every field (detailed)."""
    if verbosity == "basic":
        return ""
    if verbosity == "detailed":
        return text_format.MessageToString(request, as_utf8=True)
    lines = []
    for index, group in enumerate(resource_groups(signal, request)):
        attributes = " ".join(f"{kv.key}={_value(kv.value)}" for kv in group.resource.attributes)
        lines.append(f"Resource #{index} {attributes}".rstrip())
        for scope_group in _scope_groups(signal, group):
            lines.append(f"  Scope {scope_group.scope.name}@{scope_group.scope.version}".rstrip("@"))
            lines.extend(f"    {_item_line(signal, item)}" for item in _items(signal, scope_group))
    return "\n".join(lines)


def _scope_groups(signal: Signal, group: Any) -> Any:
    return getattr(group, _SCOPES[signal])


def _items(signal: Signal, scope_group: Any) -> Any:
    return getattr(scope_group, _ITEMS[signal])


def _item_line(signal: Signal, item: Any) -> str:
    if signal == Signal.TRACES:
        return f"{item.name} trace_id={item.trace_id.hex()} span_id={item.span_id.hex()}"
    if signal == Signal.METRICS:
        kind = item.WhichOneof("data") or "empty"
        points = len(getattr(item, kind).data_points) if kind != "empty" else 0
        return f"{item.name} {kind} data_points={points}"
    return f"{item.severity_text or item.severity_number} {_value(item.body)}"


def _value(value: Any) -> str:
    kind = value.WhichOneof("value")
    return "" if kind is None else str(getattr(value, kind)).replace("\n", " ")[:256]


FACTORY = Factory("debug", DebugConfig, DebugExporter)
