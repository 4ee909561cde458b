"""The otelcol keys edgeagent took on for issue-level compatibility are otelcol 0.165's own: one
config using them passes `otelcol-contrib validate` and `edgeagent validate` alike. (The reference
build has no authenticator extension, so `auth::request_params` is left to its e2e test.)"""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from tests.config.conftest import REPO_ROOT, _environment

pytestmark = pytest.mark.e2e

EXACT_WITH_CACHE = {"name": "exact", "type": "string_attribute",
                    "string_attribute": {"key": "k", "values": ["a"], "cache_max_size": 10}}
CONFIG = {
    "receivers": {
        # 0 is the default size in both; a path without its slash is made absolute in both
        "otlp": {"protocols": {"http": {"endpoint": "127.0.0.1:4318", "max_request_body_size": 0,
                                        "traces_url_path": "otlp/traces"},
                               "grpc": {"endpoint": "127.0.0.1:4317", "max_recv_msg_size_mib": 0}}},
        "kafka": {"brokers": ["127.0.0.1:9092"], "conn_idle_timeout": "2m", "rack_id": "rack-a",
                  "group_instance_id": "hub-0", "group_rebalance_strategies": ["sticky", "range"],
                  # what edgeagent does: never skip a refused message, skip an undecodable one
                  "message_marking": {"after": True, "on_error": False, "on_permanent_error": True},
                  "use_leader_epoch": False,  # for brokers without leader epochs (Azure Event Hubs)
                  "min_fetch_size": 0,  # otelcol takes any size from 0
                  "metadata": {"full": False, "refresh_interval": "1m", "retry": {"backoff": "100ms"}}},
    },
    "processors": {"memory_limiter": {
        "check_interval": "1s", "limit_mib": 512, "min_gc_interval_when_soft_limited": "10s",
        "min_gc_interval_when_hard_limited": "1s", "max_gc_interval_when_soft_limited": "30s",
        "max_gc_interval_when_hard_limited": "20s", "garbage_collector": {"enabled": False}},
        # cache_max_size without enabled_regex_matching: otelcol ignores it, edgeagent warns
        "tail_sampling": {"policies": [EXACT_WITH_CACHE]},
        # severity_number min as the numbers of otelcol's table, or left out (0)
        "filter/severity": {"logs": {"include": {"severity_number": {"min": "9"}}}},
        "filter/undefined": {"logs": {"exclude": {"severity_number": {"match_undefined": True}}}},
        # Go lets a group name be used twice; extract sets it from the last such group
        "attributes/extract": {"actions": [{"key": "s", "pattern": "^(?P<v>\\d+)$|^(?P<v>[a-z]+)$",
                                            "action": "extract"}]}},
    "exporters": {
        "otlp_http": {
            "endpoint": "http://127.0.0.1:4319", "encoding": "json", "compression": "x-snappy-framed",
            "proxy_url": "http://127.0.0.1:3128", "max_conns_per_host": 4,
            "keepalive": {"idle_conn_timeout": "30s", "max_idle_conns": 10, "max_idle_conns_per_host": 2},
            "cookies": {}, "middlewares": [], "force_attempt_http2": False, "http2_read_idle_timeout": "10s",
            "http2_ping_timeout": "5s", "headers": [{"name": "X-Tenant", "value": "acme"}],
        },
        "otlp_http/gzip": {"endpoint": "http://127.0.0.1:4319", "compression": "gzip",
                           "compression_params": {"level": 9}},
        "otlp_grpc": {"endpoint": "127.0.0.1:4317", "tls": {"insecure": True}, "read_buffer_size": 65536,
                      "write_buffer_size": 65536, "user_agent": "acme", "middlewares": []},
        "otlp_grpc/tls": {"endpoint": "127.0.0.1:4317", "tls": {
            "ca_pem": "-----BEGIN CERTIFICATE-----", "include_system_ca_certs_pool": True,
            "cipher_suites": ["TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", "TLS_RSA_WITH_AES_128_GCM_SHA256"],
            "include_insecure_cipher_suites": True, "tpm": {"enabled": False}}},
        "kafka": {"brokers": ["127.0.0.1:9092"], "use_leader_epoch": False,
                  "record_headers": [{"name": "site", "value": "plant-7"}],
                  "signal_header": True, "partition_logs_by_trace_id": True, "producer": {"linger": "20ms"},
                  "record_partitioner": {"sticky_key": {"hasher": "murmur2"}}},
    },
    "service": {"pipelines": {
        "traces": {"receivers": ["otlp"], "processors": ["memory_limiter", "tail_sampling"],
                   "exporters": ["otlp_http", "otlp_http/gzip", "otlp_grpc", "otlp_grpc/tls"]},
        "logs": {"receivers": ["kafka"], "processors": ["filter/severity", "filter/undefined", "attributes/extract"],
                 "exporters": ["kafka"]},
    }},
}


def test_the_new_keys_pass_both_validators(otelcol_binary, tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(CONFIG))
    theirs = subprocess.run([str(otelcol_binary), "validate", "--config", str(path)], capture_output=True,
                            text=True, timeout=60, check=False)
    assert theirs.returncode == 0, theirs.stderr[-3000:]
    ours = subprocess.run([sys.executable, "-m", "edgeagent", "validate", "--config", str(path)],
                          capture_output=True, text=True, timeout=60, check=False, env=_environment(None),
                          cwd=REPO_ROOT, stdin=subprocess.DEVNULL)
    assert ours.returncode == 0, ours.stdout[-3000:] + ours.stderr[-3000:]


def test_otelcol_starts_with_cache_max_size_on_an_exact_match_policy(otelcol):
    """otelcol builds tail sampling policies when it starts, not in `validate`: a start shows it takes them."""
    otelcol({"receivers": {"otlp": {"protocols": {"http": {"endpoint": "127.0.0.1:0"}}}},
             "processors": {"tail_sampling": {"policies": [EXACT_WITH_CACHE]}}, "exporters": {"debug": {}},
             "service": {"pipelines": {"traces": {"receivers": ["otlp"], "processors": ["tail_sampling"],
                                                  "exporters": ["debug"]}}}})
