"""Which transport the `otlp` exporter opens for its endpoint, as otelcol's configgrpc decides it."""

from __future__ import annotations

import asyncio
import subprocess

import pytest
import yaml
from pydantic import ValidationError

from edgeagent.exporters.otlp import OtlpGrpcConfig, OtlpGrpcExporter
from tests.helpers.config_errors import assert_reported
from tests.helpers.net import free_port


def test_https_endpoint_with_tls_insecure_starts_with_tls_instead_of_crashing():
    # otelcol: `insecure: true` leaves no TLS settings, and an https:// scheme then means TLS with the system roots
    config = OtlpGrpcConfig.model_validate({"endpoint": f"https://127.0.0.1:{free_port()}",
                                            "tls": {"insecure": True}})

    async def start_and_stop() -> None:
        exporter = OtlpGrpcExporter("otlp", config)
        try:
            await exporter.start()
        finally:
            await exporter.shutdown()

    asyncio.run(start_and_stop())


def test_unset_channel_settings_are_otelcols_round_robin_and_a_10s_keepalive():
    # configgrpc.NewDefaultClientConfig: balancer_name round_robin, keepalive time 10s / timeout 10s
    settings = OtlpGrpcConfig.model_validate({"endpoint": "collector:4317"}).channel_settings()
    assert (settings.balancer, settings.keepalive_time, settings.keepalive_timeout) == ("round_robin", 10.0, 10.0)
    assert not settings.keepalive_without_calls


def test_keepalive_fields_left_out_keep_otelcols_defaults_and_empty_names_keep_grpcs():
    config = OtlpGrpcConfig.model_validate({"endpoint": "collector:4317", "balancer_name": "",
                                            "keepalive": {"permit_without_stream": True}})
    settings = config.channel_settings()
    assert (settings.balancer, settings.keepalive_time, settings.keepalive_timeout) == ("pick_first", 10.0, 10.0)
    assert settings.keepalive_without_calls
    assert OtlpGrpcConfig.model_validate({"endpoint": "collector:4317", "keepalive": {"enabled": False}}
                                         ).channel_settings().keepalive_time == 0.0


@pytest.mark.parametrize("endpoint", ["dns:///collector:4317", "passthrough:///collector:4317"])
def test_grpc_resolver_schemes_otelcol_dials_name_the_same_host_and_port(endpoint):
    """grpc-go dials dns:/// and passthrough:/// targets at the host:port after them; otelcol takes both."""
    config = OtlpGrpcConfig.model_validate({"endpoint": endpoint})
    assert config.address() == ("collector", 4317)


@pytest.mark.parametrize(("endpoint", "socket"), [
    ("unix:///run/otel.sock", "/run/otel.sock"),  # the form otelcol validates
    ("unix:/run/otel.sock", "/run/otel.sock"),
    ("unix:otel.sock", "otel.sock"),  # relative to the working directory
    ("unix-abstract:otel", "\0otel"),  # Linux's abstract namespace: no file
])
def test_unix_targets_connect_to_the_socket_grpc_go_reads_from_them(endpoint, socket):
    settings = OtlpGrpcConfig.model_validate({"endpoint": endpoint, "tls": {"insecure": True}}).channel_settings()
    assert settings.unix_path == socket
    assert settings.authority == "localhost"  # grpc-go's unix resolver names every unix target so


def test_a_unix_target_takes_the_configured_authority_instead_of_localhost():
    config = OtlpGrpcConfig.model_validate({"endpoint": "unix:///run/otel.sock", "authority": "collector.internal"})
    assert config.channel_settings().authority == "collector.internal"


@pytest.mark.parametrize(("endpoint", "words"), [
    ("unix://run/otel.sock", ["'run'", "unix:///"]),  # grpc-go: invalid (non-empty) authority
    ("unix://", ["socket path cannot be empty"]),
    ("unix:", ["socket path cannot be empty"]),
    ("dns://8.8.8.8/collector:4317", ["8.8.8.8", "system resolver", "dns:///collector:4317"]),
    ("xds:///collector:4317", ["xds", "passthrough:///"]),
])
def test_grpc_targets_edgeagent_cannot_dial_are_refused_naming_the_key_and_the_fix(endpoint, words):
    assert_reported(OtlpGrpcConfig, {"endpoint": endpoint}, "exporters::otlp_grpc/x",
                    [("exporters::otlp_grpc/x::endpoint", [endpoint, *words])])


@pytest.mark.parametrize("endpoint", ["collector", "dns:///collector", "passthrough:///collector", "http://collector",
                                      "https://collector", "[::1]"])
def test_an_endpoint_without_a_port_is_refused_as_otelcol_refuses_it(endpoint):
    # otelcol 0.165: `address collector: missing port in address`; grpc's 443 is never taken
    assert_reported(OtlpGrpcConfig, {"endpoint": endpoint}, "exporters::otlp_grpc/x",
                    [("exporters::otlp_grpc/x::endpoint", ["missing port", ":4317"])])


# endpoints otelcol 0.165's validation takes (True) or refuses, and edgeagent with it. Where they part:
# unix:path and unix-abstract:name (grpc-go dials them; otelcol reads them as host:port with a bad
# port), unix://host/path (otelcol starts and never connects: grpc-go refuses the host), and
# dns://server/host:port (edgeagent cannot ask one DNS server); see docs/otelcol-compatibility.md.
SAME_VERDICT = [("collector", False), ("dns:///collector", False), ("https://collector", False), ("[::1]", False),
                ("collector:4317", True), ("dns:///collector:4317", True), ("passthrough:///collector:4317", True),
                ("http://collector:4317", True), ("unix:///run/otel.sock", True), ("unix://", False)]


def test_otelcol_validate_takes_and_refuses_the_same_endpoints(otelcol_binary, tmp_path):
    verdicts = []
    for index, (endpoint, _) in enumerate(SAME_VERDICT):
        config = tmp_path / f"{index}.yaml"
        config.write_text(yaml.safe_dump({
            "receivers": {"otlp": {"protocols": {"grpc": {"endpoint": "127.0.0.1:0"}}}},
            "exporters": {"otlp": {"endpoint": endpoint, "tls": {"insecure": True}}},
            "service": {"pipelines": {"traces": {"receivers": ["otlp"], "exporters": ["otlp"]}}}}))
        result = subprocess.run([str(otelcol_binary), "validate", "--config", str(config)], capture_output=True,
                                text=True, timeout=60, check=False)
        try:
            OtlpGrpcConfig.model_validate({"endpoint": endpoint})
            ours = True
        except ValidationError:
            ours = False
        verdicts.append((endpoint, result.returncode == 0, ours))
    assert verdicts == [(endpoint, taken, taken) for endpoint, taken in SAME_VERDICT]
