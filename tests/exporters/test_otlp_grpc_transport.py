"""Which transport the `otlp` exporter opens for its endpoint, as otelcol's configgrpc decides it."""

from __future__ import annotations

import asyncio

import pytest
from pydantic import ValidationError

from edgeagent.exporters.otlp import OtlpGrpcConfig, OtlpGrpcExporter
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


@pytest.mark.parametrize("endpoint", ["unix:///run/otel.sock", "dns://8.8.8.8/collector:4317", "xds:///collector"])
def test_grpc_targets_edgeagent_cannot_dial_are_refused_naming_the_forms_it_takes(endpoint):
    with pytest.raises(ValidationError, match="passthrough:///"):
        OtlpGrpcConfig.model_validate({"endpoint": endpoint})
