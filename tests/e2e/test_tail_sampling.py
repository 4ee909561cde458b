"""Tail sampling end to end: whole traces kept by policy, late spans, kill -9 in the decision
window, and stress relief under a flood. Real agent process, real SDK client, real upstream."""

from __future__ import annotations

import time

import lmdb
import psutil

from edgeagent.queue import record
from tests.helpers.net import wait_until
from tests.helpers.traces import Client, span_ids_by_trace

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


def _send_mix(client: Client, each: int = 5) -> tuple[dict[int, set[int]], dict[int, set[int]]]:
    kept, dropped = {}, {}
    for kind in ("error", "vip", "plain", "plain"):
        for _ in range(each):
            trace_id, spans = client.trace(kind)
            (kept if kind != "plain" else dropped)[trace_id] = spans
    client.flush()
    return kept, dropped


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
    assert span_ids_by_trace(upstream) == kept

    # late spans after the decision: the kept trace's go through at once, the dropped trace's never
    kept_trace, dropped_trace = next(iter(kept)), next(iter(dropped))
    late_kept = client.late_span(kept_trace, next(iter(kept[kept_trace])))
    client.late_span(dropped_trace, next(iter(dropped[dropped_trace])))
    client.flush()
    wait_until(lambda: late_kept in span_ids_by_trace(upstream).get(kept_trace, set()), timeout=10, message="late span")
    time.sleep(1.0)
    assert dropped_trace not in span_ids_by_trace(upstream)
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
    assert span_ids_by_trace(upstream) == kept


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
    assert agent.health()[1]["tail_sampling"]["tail_sampling"]["buffered_traces"] <= 200

    # every trace that is missing was dropped by the trace-id hash rule, no other way
    wait_until(lambda: agent.metric("edgeagent_sampler_stress_relief_active") == 0, timeout=30,
               message="stress relief to end")
    wait_until(lambda: agent.metric("otelcol_processor_tail_sampling_sampling_traces_on_memory") == 0, timeout=30,
               message="the buffer to drain")
    # one span per trace: every kept trace, by the policy or by stress relief, is one span upstream
    kept = (agent.metric("otelcol_processor_tail_sampling_global_count_traces_sampled", sampled="true")
            + agent.metric("edgeagent_sampler_stress_relief_traces", sampled="true"))
    wait_until(lambda: len(upstream.spans()) >= kept, timeout=30, message="every kept trace upstream")
    arrived = span_ids_by_trace(upstream)
    assert len(arrived) == kept
    missing = set(sent) - set(arrived)
    assert missing, "stress relief dropped nothing"
    wrong = [t for t in missing if (t & ((1 << 64) - 1)) < (1 << 63)]
    assert not wrong, (len(wrong), len(missing), len(sent))
    assert peak < 400 << 20

    # recovered: a new trace is buffered and kept by the policy again, whatever its hash
    trace_id, spans = client.trace("plain")
    client.close()
    wait_until(
        lambda: span_ids_by_trace(upstream).get(trace_id) == spans, timeout=20, message="a trace after the flood"
    )


def test_a_buffered_record_that_does_not_parse_is_quarantined_and_deciding_goes_on(agents, upstream, tmp_path):
    """A damaged record in the trace buffer used to stop the deciding task for good."""
    state = tmp_path / "state"
    agent = agents(["run", "--config", _config(tmp_path, wait="60s"), "--state-dir", str(state)],
                   env={"UPSTREAM": upstream.url})
    client = Client(agent.http_port)
    kept, _ = _send_mix(client)
    damaged, _ = client.trace("error")  # in a request of its own: a buffer record holds a request's spans
    client.flush()
    wait_until(lambda: agent.metric("otelcol_processor_tail_sampling_new_trace_id_received") >= 21, timeout=10,
               message="traces buffered")
    agent.kill()  # SIGKILL: the buffered traces stay on disk
    agent.process.wait(10)

    env = lmdb.open(str(state / "queue"), max_dbs=64)
    raw = env.open_db(b"raw:tail_sampling")
    with env.begin(write=True, db=raw) as txn:
        holding = [(bytes(key), bytes(value)) for key, value in txn.cursor()
                   if damaged.to_bytes(16, "big") in bytes(value)]
        assert len(holding) == 1
        key, value = holding[0]
        header = record.decode_header(value)
        txn.put(key, value[:header.body_offset] + b"\x0f" + value[header.body_offset:])  # no longer parses
    env.close()

    agent = agents(["run", "--config", _config(tmp_path, wait="1s"), "--state-dir", str(state)],
                   env={"UPSTREAM": upstream.url}, ports=agent)
    client = Client(agent.http_port)
    later, _ = _send_mix(client, each=2)
    expected = {trace_id: spans for trace_id, spans in {**kept, **later}.items() if trace_id != damaged}
    wait_until(lambda: all(span_ids_by_trace(upstream).get(trace_id) == spans for trace_id, spans in expected.items()),
               timeout=30, message="every other kept trace delivered")
    wait_until(lambda: agent.metric("edgeagent_corrupt_records", queue="raw:tail_sampling") == 1, timeout=10,
               message="quarantine counted")
    assert agent.health()[1]["dead_letters"] == 1
    assert sum("does not decode" in line for line in agent.log().splitlines()) == 1
    assert agent.terminate() == 0
