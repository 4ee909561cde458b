"""Tail sampling end to end: whole traces kept by policy, late spans, kill -9 in the decision
window, and stress relief under a flood. Real agent process, real SDK client, real upstream."""

from __future__ import annotations

import time

import psutil
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import NonRecordingSpan, SpanContext, Status, StatusCode, TraceFlags, set_span_in_context

from tests.helpers.net import wait_until

CONFIG = """
receivers:
  otlp:
    protocols:
      http: {}
processors:
  tail_sampling:
    decision_wait: %(wait)s
    num_traces: %(num_traces)d
    policies:
%(policies)s
%(extra)s
exporters:
  otlphttp:
    endpoint: ${env:UPSTREAM}
    retry_on_failure: {initial_interval: 100ms, max_interval: 500ms, max_elapsed_time: 0s}
extensions:
  health_check: {}
service:
  extensions: [health_check]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [tail_sampling]
      exporters: [otlphttp]
"""

BY_POLICY = """\
      - {name: errors, type: status_code, status_code: {status_codes: [ERROR]}}
      - {name: vip, type: string_attribute, string_attribute: {key: customer, values: [vip]}}"""


def _config(tmp_path, wait="2s", num_traces=10_000, policies=BY_POLICY, extra=""):
    path = tmp_path / "tail.yaml"
    path.write_text(CONFIG % {"wait": wait, "num_traces": num_traces, "policies": policies, "extra": extra})
    return str(path)


class Client:
    """The OpenTelemetry SDK sending to the agent over OTLP/HTTP."""

    def __init__(self, port: int):
        self.provider = TracerProvider(resource=Resource.create({"service.name": "shop"}))
        self.provider.add_span_processor(BatchSpanProcessor(
            OTLPSpanExporter(endpoint=f"http://127.0.0.1:{port}/v1/traces"), max_queue_size=100_000,
            max_export_batch_size=512, schedule_delay_millis=50))
        self.tracer = self.provider.get_tracer("tail-sampling-tests")

    def trace(self, kind: str, children: int = 3) -> tuple[int, set[int]]:
        """One trace: kind "error" (a failing child), "vip" (a root attribute) or "plain"."""
        spans = set()
        attributes = {"customer": "vip" if kind == "vip" else "regular"}
        with self.tracer.start_as_current_span("checkout", attributes=attributes) as root:
            spans.add(root.get_span_context().span_id)
            for index in range(children):
                with self.tracer.start_as_current_span(f"step-{index}") as child:
                    spans.add(child.get_span_context().span_id)
                    if kind == "error" and index == children - 1:
                        child.set_status(Status(StatusCode.ERROR, "payment declined"))
        return root.get_span_context().trace_id, spans

    def late_span(self, trace_id: int, parent: int) -> int:
        context = set_span_in_context(NonRecordingSpan(SpanContext(trace_id, parent, True, TraceFlags(1))))
        with self.tracer.start_as_current_span("late", context=context) as span:
            return span.get_span_context().span_id

    def flush(self) -> None:
        assert self.provider.force_flush(60_000)

    def close(self) -> None:
        self.flush()
        self.provider.shutdown()


def _send_mix(client: Client, each: int = 5) -> tuple[dict[int, set[int]], dict[int, set[int]]]:
    kept, dropped = {}, {}
    for kind in ("error", "vip", "plain", "plain"):
        for _ in range(each):
            trace_id, spans = client.trace(kind)
            (kept if kind != "plain" else dropped)[trace_id] = spans
    client.flush()
    return kept, dropped


def _span_ids(upstream) -> dict[int, set[int]]:
    out: dict[int, set[int]] = {}
    for span in upstream.spans():
        out.setdefault(int.from_bytes(span.trace_id, "big"), set()).add(int.from_bytes(span.span_id, "big"))
    return out


def test_whole_traces_are_kept_by_policy_and_late_spans_follow_the_decision(agents, upstream, tmp_path):
    agent = agents(["run", "--config", _config(tmp_path), "--state-dir", str(tmp_path / "state")],
                   env={"UPSTREAM": upstream.url})
    client = Client(agent.http_port)
    kept, dropped = _send_mix(client)
    # spans that come in a later request but within decision_wait join their trace's decision
    for group in (kept, dropped):
        trace_id = next(iter(group))
        group[trace_id].add(client.late_span(trace_id, next(iter(group[trace_id]))))
    client.flush()
    expected = sum(len(spans) for spans in kept.values())
    wait_until(lambda: len(upstream.spans()) >= expected, timeout=30, message="kept traces upstream")
    time.sleep(1.0)  # nothing else may follow
    assert _span_ids(upstream) == kept

    # late spans after the decision: the kept trace's go through at once, the dropped trace's never
    kept_trace, dropped_trace = next(iter(kept)), next(iter(dropped))
    late_kept = client.late_span(kept_trace, next(iter(kept[kept_trace])))
    client.late_span(dropped_trace, next(iter(dropped[dropped_trace])))
    client.flush()
    wait_until(lambda: late_kept in _span_ids(upstream).get(kept_trace, set()), timeout=10, message="late span")
    time.sleep(1.0)
    assert dropped_trace not in _span_ids(upstream)
    assert agent.metric("otelcol_processor_tail_sampling_sampling_late_spans", sampled="true") >= 1
    assert agent.metric("otelcol_processor_tail_sampling_sampling_late_spans", sampled="false") >= 1
    assert agent.metric("otelcol_processor_tail_sampling_global_count_traces_sampled", sampled="true") == len(kept)
    assert agent.metric("otelcol_processor_tail_sampling_global_count_traces_sampled", sampled="false") == len(dropped)
    client.close()


def test_kill_9_in_the_decision_window_loses_no_span_of_a_kept_trace(agents, upstream, tmp_path):
    upstream.status = 503  # the upstream is down for the whole first run
    state = str(tmp_path / "state")
    args = ["run", "--config", _config(tmp_path, wait="4s"), "--state-dir", state]
    first = agents(args, env={"UPSTREAM": upstream.url})
    client = Client(first.http_port)
    kept, dropped = _send_mix(client, each=10)
    client.close()
    first.kill()  # SIGKILL, before any decision was due

    upstream.status = 200
    agents(args, env={"UPSTREAM": upstream.url}, ports=first)
    expected = sum(len(spans) for spans in kept.values())
    wait_until(lambda: len(upstream.spans()) >= expected, timeout=60, message="kept traces after the restart")
    time.sleep(1.0)
    assert _span_ids(upstream) == kept


def test_a_flood_beyond_num_traces_turns_on_stress_relief_and_recovers(agents, upstream, tmp_path):
    relief = """\
    stress_relief: {activation_level: 90, deactivation_level: 50, sampling_percentage: 50,
                    minimum_activation_duration: 1s}"""
    agent = agents(["run", "--config", _config(tmp_path, wait="3s", num_traces=200,
                                               policies="      - {name: all, type: always_sample}", extra=relief),
                    "--state-dir", str(tmp_path / "state")], env={"UPSTREAM": upstream.url})
    client = Client(agent.http_port)
    sent = {}
    peak = 0
    process = psutil.Process(agent.process.pid)
    for _ in range(3000):
        trace_id, spans = client.trace("plain", children=0)
        sent[trace_id] = spans
    client.flush()
    peak = max(peak, process.memory_info().rss)
    assert agent.metric("edgeagent_sampler_stress_relief_traces", sampled="true") > 0
    assert agent.metric("edgeagent_sampler_stress_relief_traces", sampled="false") > 0
    assert agent.metric("otelcol_processor_tail_sampling_sampling_traces_on_memory") <= 200

    # every trace that is missing was dropped by the trace-id hash rule, no other way
    wait_until(lambda: agent.metric("edgeagent_sampler_stress_relief_active") == 0, timeout=30,
               message="stress relief to end")
    wait_until(lambda: agent.metric("otelcol_processor_tail_sampling_sampling_traces_on_memory") == 0, timeout=30,
               message="the buffer to drain")
    wait_until(lambda: agent.metric("otelcol_exporter_queue_size", exporter="otlphttp") == 0, timeout=30,
               message="the export queue to drain")
    time.sleep(0.5)  # the last acknowledged request is recorded by the upstream
    arrived = _span_ids(upstream)
    missing = set(sent) - set(arrived)
    assert missing, "stress relief dropped nothing"
    wrong = [t for t in missing if (t & ((1 << 64) - 1)) < (1 << 63)]
    assert not wrong, (len(wrong), len(missing), len(sent))
    assert peak < 400 << 20

    # recovered: a new trace is buffered and kept by the policy again, whatever its hash
    trace_id, spans = client.trace("plain")
    client.close()
    wait_until(lambda: _span_ids(upstream).get(trace_id) == spans, timeout=20, message="a trace after the flood")
