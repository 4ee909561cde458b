"""How the exporter copes with each way a real upstream misbehaves, one test per behaviour.

The real agent sends to `tests.helpers.upstream.Upstream`, programmed to refuse, throttle,
reject, hang or flap; the tests count and time every attempt it sees.
"""

from __future__ import annotations

import json
import os
import time

import pytest

from tests.helpers.cli import cli_json
from tests.helpers.net import wait_until
from tests.helpers.sdk import send_spans

# the flapping upstream's cycles of four seconds: reset, up, 503, up. Two of them, eight seconds,
# show what four and eight did: the bound below grows by the same steps each cycle, and a storm
# (consumers retrying without backoff) passes it within the first (272 attempts against a bound
# of 75 in two cycles; 301 against 149 in four).
FLAPS = 2

CONFIG = os.path.join(os.path.dirname(__file__), "..", "testdata", "e2e", "upstream-behaviours.yaml")
EXPORTER = "otlphttp"


def start_agent(agents, tmp_path, upstream, batch: int = 0, **exporter):
    """The agent on CONFIG sending to `upstream`; `exporter` settings replace the config's.

    `batch` puts a batch processor with that send_batch_size into the pipeline."""
    args = ["run", "--config", CONFIG, "--state-dir", str(tmp_path / "state")]
    for key, value in exporter.items():
        args += ["--set", f"exporters::{EXPORTER}::{key}={json.dumps(value)}"]  # JSON is YAML
    if batch:
        args += ["--set", f"processors::batch={{send_batch_size: {batch}, timeout: 1s}}",
                 "--set", "service::pipelines::traces::processors=[batch]"]
    return agents(args, env={"UPSTREAM": upstream.url})


def upstream_state(agent) -> str:
    return agent.health()[1].get("exporters", {}).get(EXPORTER, {}).get("upstream", "")


def dead_letters(tmp_path) -> list[dict]:
    """`edgeagent queue dead-letter list`, as an operator would run it."""
    return cli_json(tmp_path / "state", "queue", "dead-letter", "list")


def wait_delivered(upstream, sent: set[bytes], timeout: float = 30) -> None:
    wait_until(lambda: upstream.span_ids() >= sent, timeout=timeout, interval=0.1, message="every span upstream")


def expect_drained(agent) -> None:
    """The queue is empty once the acks of delivered data have committed."""
    wait_until(lambda: agent.metric("edgeagent_queue_items", data_type="traces") == 0, timeout=10,
               message="an empty queue")


# ---- connection-level outages ----------------------------------------------------------------

def test_a_5s_outage_goes_offline_probes_one_at_a_time_and_loses_nothing(agents, upstream, tmp_path):
    # The upstream resets every connection, so each connection attempt is counted.
    upstream.refuse(reset=True)
    # timeout 5s: a probe caught on a connection as the upstream comes back waits at most that long
    agent = start_agent(agents, tmp_path, upstream, timeout="5s", sending_queue={"num_consumers": 10},
                        retry_on_failure={"initial_interval": "500ms", "max_interval": "2500ms",
                                          "max_elapsed_time": "0s"})
    outage = time.monotonic()
    sent = send_spans("http", agent.http_port, 5000, batch=250)  # 20 queue records: work for every consumer

    wait_until(lambda: agent.metric("edgeagent_upstream_online", exporter=EXPORTER) == 0, timeout=10,
               message="the exporter offline")
    assert upstream_state(agent) == "offline"
    time.sleep(max(0.0, outage + 5 - time.monotonic()))
    during_outage = upstream.attempts
    # Before the exporter knows, each of the 10 consumers may try once; offline, one probe at a
    # time after 0.5s * 1.5^n capped at 2.5s, randomized down to half: at most 6 in 5s (0.25,
    # 0.375, 0.56, 0.84, then 1.25 s apart). Ten consumers retrying on their own would make 40 or
    # more. (Intervals and outage halved tell the two apart as well as 1s, 5s and 10s did.)
    assert during_outage <= 10 + 7, f"{during_outage} connection attempts in a 5s outage"

    upstream.listen()
    wait_delivered(upstream, sent, timeout=60)
    assert upstream.span_ids() == sent
    wait_until(lambda: agent.metric("edgeagent_upstream_online", exporter=EXPORTER) == 1, timeout=5,
               message="the exporter online")
    assert upstream_state(agent) == "online"
    expect_drained(agent)
    assert agent.terminate() == 0


def test_an_upstream_flapping_every_second_for_eight_seconds_gets_every_span_without_a_storm(agents, upstream,
                                                                                             tmp_path):
    agent = start_agent(agents, tmp_path, upstream, sending_queue={"num_consumers": 10}, retry_on_failure={
        "initial_interval": "250ms", "max_interval": "1s", "max_elapsed_time": "0s"})
    # down 1s / up 1s; the down phases take turns: connections reset (each one counted), then 503
    script = upstream.play((1.0, {"connections": "reset"}), (1.0, {"connections": "accept"}),
                           (1.0, {"status": 503}), (1.0, {"status": 200}), repeat=FLAPS)
    sent: set[bytes] = set()
    sends, started = 0, time.monotonic()
    while not script.done() and sends < 2 * 4 * FLAPS + 10:  # a steady stream: 20 spans every half second
        sent |= send_spans("grpc", agent.grpc_port, 20, service=f"send-{sends}")
        sends += 1
        time.sleep(max(0.0, started + sends * 0.5 - time.monotonic()))
    script.result(10)
    wait_delivered(upstream, sent)
    assert upstream.span_ids() == sent

    # Every send is one queue record and needs one request that succeeds. In each of the FLAPS
    # seconds of reset connections, the consumers holding a record (about 4: 2 arrive a second,
    # 2 may be left from before) try once before the exporter goes offline, then it probes one
    # at a time after 250ms * 1.5^n randomized down to half: at most 5 probes in that second.
    # In each of the FLAPS seconds of 503, each of those 4 records is retried with that backoff,
    # at most 5 times. A consumer retrying without backoff would pass this within seconds.
    bound = sends + FLAPS * (4 + 5) + FLAPS * 4 * 5
    calls = upstream.calls
    assert len(calls) <= bound, f"{len(calls)} attempts for {sends} sends (bound {bound})"
    assert agent.terminate() == 0


# ---- answers ---------------------------------------------------------------------------------

def test_503_with_retry_after_holds_back_every_consumer_until_it_has_passed(agents, upstream, tmp_path):
    upstream.status, upstream.retry_after = 503, "2"
    agent = start_agent(agents, tmp_path, upstream)
    sent = send_spans("http", agent.http_port, 100, service="first")
    wait_until(lambda: upstream.attempts >= 1, timeout=10, message="a first attempt")
    upstream.status, upstream.retry_after = 200, None
    sent |= send_spans("http", agent.http_port, 100, service="second")  # for a consumer that was not told
    wait_delivered(upstream, sent)

    first, *later = sorted(upstream.calls, key=lambda call: call.at)
    assert first.status == 503 and len(later) >= 2
    early = [round(call.at - first.answered, 3) for call in later if call.at < first.answered + 2.0]
    assert not early, f"requests {early}s after a 503 with Retry-After: 2"
    assert agent.terminate() == 0


@pytest.mark.parametrize("retry_after", [None, "1"], ids=["without-retry-after", "with-retry-after-1"])
def test_429_is_retried_until_delivered_and_nothing_is_dead_lettered(agents, upstream, tmp_path, retry_after):
    upstream.status, upstream.retry_after = 429, retry_after
    agent = start_agent(agents, tmp_path, upstream)
    sent = send_spans("http", agent.http_port, 200)
    wait_until(lambda: upstream.attempts >= 3, timeout=10, message="three attempts")
    upstream.status = 200
    wait_delivered(upstream, sent)

    assert upstream.span_ids() == sent
    throttled = [call for call in upstream.calls if call.status == 429]
    if retry_after:
        # a request another consumer sent before this answer reached the agent (50 ms) is no retry
        early = [round(b.at - a.answered, 3) for a in throttled for b in upstream.calls
                 if a.answered + 0.05 < b.at < a.answered + 1.0]
        assert not early, f"requests {early}s after a 429 with Retry-After: 1"
    expect_drained(agent)
    assert agent.metric("edgeagent_deadletter_items") == 0
    assert dead_letters(tmp_path) == []
    assert agent.terminate() == 0


def test_400_is_sent_once_and_the_data_goes_to_the_dead_letter_store(agents, upstream, tmp_path):
    upstream.status = 400
    agent = start_agent(agents, tmp_path, upstream)
    send_spans("http", agent.http_port, 100)
    wait_until(lambda: agent.metric("edgeagent_deadletter_items", exporter=EXPORTER) == 100, timeout=10,
               message="100 spans dead-lettered")
    time.sleep(1.0)  # ten retry intervals: any retry would have happened
    letters = dead_letters(tmp_path)
    assert sum(letter["items"] for letter in letters) == 100
    assert all(letter["status"] == 400 for letter in letters)
    assert upstream.attempts == len(letters)  # one request for each, never retried
    expect_drained(agent)
    assert agent.terminate() == 0


def test_413_splits_the_request_in_halves_until_the_upstream_accepts_the_parts(agents, upstream, tmp_path):
    upstream.max_items = 100
    agent = start_agent(agents, tmp_path, upstream, batch=1000)
    sent = send_spans("http", agent.http_port, 1000, batch=500)
    wait_delivered(upstream, sent)
    expect_drained(agent)

    assert len(upstream.spans()) == 1000  # each span exactly once
    calls = upstream.attempts_of("traces")
    assert calls[0].items == 1000 and calls[0].status == 413
    assert all(call.items <= 100 for call in calls if call.status == 200)
    sizes = [call.items for call in calls]
    for call in calls:
        if call.status == 413:  # its halves were sent
            assert call.items // 2 in sizes and call.items - call.items // 2 in sizes, (call.items, sizes)
    assert agent.metric("edgeagent_deadletter_items") == 0
    assert agent.terminate() == 0


def test_413_for_every_request_dead_letters_the_single_items_after_splitting(agents, upstream, tmp_path):
    upstream.max_items = 0  # 413 for everything
    agent = start_agent(agents, tmp_path, upstream, batch=1000)  # one request of 20 spans
    send_spans("http", agent.http_port, 20)
    wait_until(lambda: agent.metric("edgeagent_deadletter_items", exporter=EXPORTER) == 20, timeout=20,
               message="20 spans dead-lettered")
    letters = dead_letters(tmp_path)
    assert sum(letter["items"] for letter in letters) == 20
    assert all(letter["status"] == 413 for letter in letters)
    # halving 20 items down to 20 single ones sends 2 * 20 - 1 requests, each once
    assert upstream.attempts == 39
    assert sorted({call.items for call in upstream.calls}) == [1, 2, 3, 5, 10, 20]
    assert agent.terminate() == 0


def test_partial_success_is_counted_logged_once_and_not_retried(agents, upstream, tmp_path):
    upstream.rejected = 3
    agent = start_agent(agents, tmp_path, upstream)
    sent: set[bytes] = set()
    for round_ in range(3):  # three requests or more, each partially rejected
        sent |= send_spans("http", agent.http_port, 50, service=f"round-{round_}")
        wait_delivered(upstream, sent)
    expect_drained(agent)

    assert len(upstream.spans()) == len(sent)  # nothing was sent again
    assert all(call.status == 200 for call in upstream.calls)
    assert agent.metric("edgeagent_exporter_rejected_spans", exporter=EXPORTER) == 3 * upstream.attempts
    with open(agent.log_path, encoding="utf-8") as handle:
        entries = [json.loads(line) for line in handle if line.startswith("{")]
    warnings = [e for e in entries if e["level"] == "warning" and "partial" in e["msg"].lower()]
    assert len(warnings) == 1, warnings
    assert agent.terminate() == 0


def test_requests_hanging_past_the_timeout_are_retried_and_delivered(agents, upstream, tmp_path):
    agent = start_agent(agents, tmp_path, upstream, timeout="500ms")
    script = upstream.play((2.0, {"hang": 1.5}), (0.0, {"hang": 0.0}))  # three times the timeout
    sent = send_spans("http", agent.http_port, 100)
    script.result(10)
    wait_delivered(upstream, sent)
    expect_drained(agent)

    hung = [call for call in upstream.calls if call.answered - call.at >= 1.4]
    assert len(hung) >= 2, "the exporter did not retry after its timeout"
    answered_in_time = [call for call in upstream.calls if call.status == 200 and call.answered - call.at < 1]
    assert answered_in_time, "nothing was delivered after the upstream recovered"
    assert agent.metric("otelcol_exporter_sent_spans", exporter=EXPORTER) == 100
    assert agent.terminate() == 0


# ---- sending_queue and rate_limit --------------------------------------------------------------

@pytest.mark.parametrize("drain_order", ["newest_first", "oldest_first"])
def test_after_an_outage_the_drain_order_decides_what_arrives_first(agents, upstream, tmp_path, drain_order):
    upstream.refuse()
    agent = start_agent(agents, tmp_path, upstream,
                        sending_queue={"num_consumers": 1, "drain_order": drain_order})
    sent = send_spans("http", agent.http_port, 500, service="backfill", batch=100)
    sent |= send_spans("http", agent.http_port, 500, service="current", batch=100)
    upstream.listen()
    wait_delivered(upstream, sent)

    order = [next(kv.value.string_value for kv in r.message.resource_spans[0].resource.attributes
                  if kv.key == "service.name") for r in upstream.received("traces")]
    last_current = len(order) - 1 - order[::-1].index("current")
    if drain_order == "newest_first":
        # only the backfill request already being retried when the upstream returned goes first
        assert "backfill" not in order[1:last_current], order
    else:
        assert "backfill" not in order[order.index("current"):], order
    assert agent.terminate() == 0


def test_rate_limit_holds_the_drain_of_a_backlog_to_bytes_per_second(agents, upstream, tmp_path):
    upstream.refuse()
    agent = start_agent(agents, tmp_path, upstream, compression="none", rate_limit={"bytes_per_second": 1_000_000})
    # 90 requests of about 100 kB: a long service.name pads the resource, which each request
    # carries once, so that a backlog of 9 MB on the wire takes seconds, not minutes, to build;
    # at 1 MB/s it outlasts the burst and the 5 s measured after it by about two seconds
    sent = send_spans("grpc", agent.grpc_port, 1800, service="backlog-" + "x" * 100_000, batch=20)
    upstream.listen()
    wait_until(lambda: any(call.status == 200 for call in upstream.calls), timeout=10, message="a first delivery")
    start = next(call.at for call in upstream.calls if call.status == 200) + 2.0  # after the first second's burst
    end = start + 5.0  # about 50 requests of 100 kB: the rate within 2%
    time.sleep(max(0.0, end + 0.5 - time.monotonic()))
    window = [call for call in upstream.calls if call.status == 200 and start <= call.at < end]
    rate = sum(call.wire_bytes for call in window) / (end - start)
    assert 0.9e6 <= rate <= 1.1e6, f"{rate / 1e6:.2f} MB/s on the wire"
    wait_delivered(upstream, sent, timeout=30)
    assert sum(call.wire_bytes for call in upstream.calls if call.status == 200) >= 9e6
    assert agent.terminate() == 0


def test_dead_letters_that_fill_the_disk_budget_give_way_to_new_data_oldest_first(agents, upstream, tmp_path):
    """An upstream that refuses some data for good, over months, fills the dead-letter store up to
    the disk budget: the agent then refused every new request (503) for good, the upstream being
    well again. Dead letters are what the upstream refused; they never hold back data it takes."""
    from tests.helpers.hostile import spans_request
    from tests.helpers.otlp_post import post

    upstream.status = 400
    agent = agents(["run", "--state-dir", str(tmp_path / "state"), "--upstream", upstream.url],
                   env={"EDGEAGENT_QUEUE_MAX_MIB": "2"})
    answers = [post(agent.http_port, spans_request(200))[0] for _ in range(400)]  # ~4 MiB of dead letters
    assert set(answers) == {200}, "refused while only dead letters filled the budget"
    wait_until(lambda: agent.metric("edgeagent_dropped_items_total", reason="dead_letter") > 0, timeout=10,
               message="the oldest dead letters dropped")
    kept = agent.health()[1]["dead_letters"]
    assert 0 < kept < 400
    letters = dead_letters(tmp_path)
    assert min(letter["seq"] for letter in letters) > 1  # the oldest gave way
    assert "reason" in agent.log() and "dead_letter" in agent.log()

    upstream.status = 200
    sent = send_spans("http", agent.http_port, 1000, batch=200)
    wait_until(lambda: upstream.span_ids() >= sent, timeout=20, message="new data delivered")
    assert agent.terminate() == 0
