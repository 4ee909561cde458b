"""Configs written for otelcol 0.165 run here unchanged: type names, keys and the command line."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import pytest
import yaml

from edgeagent.config.loader import ConfigError, load_text
from edgeagent.exporters.debug import DebugConfig, DebugExporter, Sampler
from edgeagent.signals import Signal
from tests.config.conftest import REPO_ROOT, _environment, run_command
from tests.processors.tables import span_request

RECEIVER = "receivers:\n  otlp:\n    protocols:\n      http:\n        endpoint: 127.0.0.1:4318\n"


def _config(exporters: str, exporter_ids: str, extra: str = "", processors: str = "", processor_ids: str = "") -> str:
    return (RECEIVER + f"exporters:\n{exporters}" + (f"processors:\n{processors}" if processors else "") +
            f"service:\n{extra}  pipelines:\n    traces:\n      receivers: [otlp]\n"
            f"      processors: [{processor_ids}]\n      exporters: [{exporter_ids}]\n")


def _errors(text: str) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as caught:
        load_text(text, environ={})
    return caught.value.errors


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """The pure verbs in this process (run_command); the others, and the flags, as a process."""
    if args and args[0] in ("validate", "print-config", "components", "featuregate"):
        return run_command(args, env)
    return subprocess.run([sys.executable, "-m", "edgeagent", *args], capture_output=True, text=True, timeout=60,
                          check=False, env=_environment(env), cwd=REPO_ROOT, stdin=subprocess.DEVNULL)


# ---- type names ----------------------------------------------------------------------------

def test_otlp_grpc_and_otlp_http_are_exporter_types():
    config = load_text(_config("  otlp_grpc:\n    endpoint: collector:4317\n  otlp_http/up:\n"
                               "    endpoint: http://collector:4318\n", "otlp_grpc, otlp_http/up"), environ={})
    assert set(config.exporters) == {"otlp_grpc", "otlp_http/up"}
    assert not [w for w in config.warnings if "deprecated" in w]


def test_old_exporter_type_names_stay_accepted_without_a_rename_warning():
    # the id names the queue: a warning would push operators to a rename that strands their backlog
    config = load_text(_config("  otlp:\n    endpoint: collector:4317\n  otlphttp:\n"
                               "    endpoint: http://collector:4318\n", "otlp, otlphttp"), environ={})
    assert type(config.exporters["otlp"].config).__name__ == "OtlpGrpcConfig"
    assert type(config.exporters["otlphttp"].config).__name__ == "OtlpHttpConfig"
    assert not [w for w in config.warnings if "otlp" in w], config.warnings


# ---- resource processor ---------------------------------------------------------------------

def test_resource_processor_reads_attributes_as_otelcol():
    config = load_text(_config("  otlp_http:\n    endpoint: http://c:4318\n", "otlp_http",
                               processors="  resource:\n    attributes:\n      - {key: env, value: prod, "
                                          "action: upsert}\n", processor_ids="resource"), environ={})
    assert config.processors["resource"].config.attributes[0].key == "env"


def test_resource_processor_actions_key_is_refused_naming_the_fix():
    errors = _errors(_config("  otlp_http:\n    endpoint: http://c:4318\n", "otlp_http",
                             processors="  resource:\n    actions:\n      - {key: env, value: prod, action: upsert}\n",
                             processor_ids="resource"))
    assert [path for path, _ in errors] == ["processors::resource::actions"]
    assert "attributes" in errors[0][1]


# ---- debug exporter ---------------------------------------------------------------------------

def test_debug_exporter_defaults_and_checks_as_otelcol():
    config = DebugConfig.model_validate({})
    assert (config.verbosity, config.sampling_initial, config.sampling_thereafter) == ("basic", 2, 1)
    assert config.sending_queue.enabled is False
    errors = _errors(_config("  debug:\n    verbosity: loud\n", "debug"))
    assert [path for path, _ in errors] == ["exporters::debug::verbosity"]
    errors = _errors(_config("  debug:\n    output_paths: [stdout]\n", "debug"))
    assert "use_internal_logger" in errors[0][1]


def test_debug_exporter_writes_each_span_at_normal_verbosity(tmp_path):
    out = tmp_path / "debug.txt"
    exporter = DebugExporter("debug", DebugConfig.model_validate(
        {"verbosity": "normal", "use_internal_logger": False, "output_paths": [str(out)]}))
    request = span_request([{"name": "checkout"}, {"name": "pay"}, {"name": "ship"}])

    async def scenario() -> None:
        await exporter.start()
        await exporter.send(Signal.TRACES, request.SerializeToString())
        await exporter.shutdown()

    asyncio.run(scenario())
    text = out.read_text()
    assert "'spans': 3" in text
    assert all(name in text for name in ("checkout", "pay", "ship")), text


def test_debug_sampling_passes_the_first_then_every_nth_per_second():
    now = [100.0]
    sampler = Sampler(2, 3, clock=lambda: now[0])
    assert [sampler.allow() for _ in range(8)] == [True, True, False, False, True, False, False, True]
    now[0] = 101.0
    assert sampler.allow()


# ---- self-metrics -----------------------------------------------------------------------------

READER = ("  telemetry:\n    metrics:\n      readers:\n        - pull:\n            exporter:\n"
          "              prometheus: {host: 127.0.0.1, port: 18888}\n")


def test_telemetry_readers_name_the_metrics_endpoint():
    config = load_text(_config("  debug:\n", "debug", extra=READER), environ={})
    assert config.service.telemetry.metrics.endpoints() == ["127.0.0.1:18888"]


def test_prometheus_naming_flags_are_accepted_as_otelcol_defaults_and_refused_otherwise():
    flags = "without_scope_info: true, without_units: true, without_type_suffix: true"
    load_text(_config("  debug:\n", "debug", extra=READER.replace("port: 18888", f"port: 18888, {flags}")),
              environ={})
    errors = _errors(_config("  debug:\n", "debug", extra=READER.replace("port: 18888",
                                                                           "port: 18888, without_units: false")))
    assert [path for path, _ in errors] == [
        "service::telemetry::metrics::readers::0::pull::exporter::prometheus::without_units"]


def test_telemetry_level_none_turns_the_metrics_server_off():
    config = load_text(_config("  debug:\n", "debug", extra="  telemetry:\n    metrics:\n      level: none\n"),
                       environ={})
    assert config.service.telemetry.metrics.endpoints() == []


def test_telemetry_address_is_a_deprecated_alias_with_a_warning():
    config = load_text(_config("  debug:\n", "debug", extra="  telemetry:\n    metrics:\n"
                               "      address: 127.0.0.1:18889\n"), environ={})
    assert config.service.telemetry.metrics.endpoints() == ["127.0.0.1:18889"]
    assert any("readers" in w and "address" in w for w in config.warnings), config.warnings


@pytest.mark.parametrize("metrics, word", [
    ("      address: 127.0.0.1:1\n      readers: [{pull: {exporter: {prometheus: {port: 2}}}}]\n", "address"),
    ("      readers: []\n", "level"),
    ("      readers: [{periodic: {exporter: {otlp: {}}}}]\n", "protocol"),  # otelconf: no valid metric exporter
])
def test_telemetry_metrics_mistakes_are_errors(metrics, word):
    errors = _errors(_config("  debug:\n", "debug", extra="  telemetry:\n    metrics:\n" + metrics))
    assert errors and all(path.startswith("service::telemetry::metrics") for path, _ in errors), errors
    assert any(word in path + message for path, message in errors), errors


TELEMETRY = """  telemetry:
    resource:
      service.name: edge-gw
      deployment.environment: prod
      service.instance.id: null
    logs:
      level: info
      development: false
      encoding: json
      disable_caller: true
      disable_stacktrace: true
      output_paths: [stderr]
      error_output_paths: [stderr]
      initial_fields: {site: berlin}
      sampling: {enabled: true, tick: 10s, initial: 10, thereafter: 100}
    traces:
      level: none
      propagators: [tracecontext]
"""


def test_otelcol_telemetry_resource_logs_and_traces_keys_load_and_the_resource_names_target_info():
    """otelcol 0.165 validates this block (resource, every logs key, traces); edgeagent refused
    nine of its keys, so such a config did not run."""
    from edgeagent.service.telemetry import Telemetry

    config = load_text(_config("  debug:\n", "debug", extra=TELEMETRY), environ={})
    telemetry = Telemetry()
    telemetry.describe(config.service.telemetry.resource_attributes())
    text = telemetry.metrics.render().decode()
    line = next(line for line in text.splitlines() if line.startswith("target_info{"))
    assert 'service_name="edge-gw"' in line and 'deployment_environment="prod"' in line
    assert "service_instance_id" not in line  # null removes it, as in otelcol


def test_telemetry_resource_in_its_attributes_list_form_names_target_info():
    extra = ("  telemetry:\n    resource:\n      attributes:\n"
             "        - {name: service.name, value: edge-gw}\n        - {name: site, value: berlin}\n")
    config = load_text(_config("  debug:\n", "debug", extra=extra), environ={})
    assert config.service.telemetry.resource_attributes() == {"service.name": "edge-gw", "site": "berlin"}


def test_trace_processors_are_refused_as_edgeagent_sends_no_traces_of_its_own():
    extra = "  telemetry:\n    traces:\n      processors: [{batch: {exporter: {otlp: {}}}}]\n"
    errors = _errors(_config("  debug:\n", "debug", extra=extra))
    assert [path for path, _ in errors] == ["service::telemetry::traces::processors"], errors


# ---- command line -----------------------------------------------------------------------------

def _write(path, document: dict) -> str:
    path.write_text(yaml.safe_dump(document))
    return str(path)


BASE = {"receivers": {"otlp": {"protocols": {"http": {"endpoint": "127.0.0.1:4318"}}}},
        "exporters": {"otlp_http": {"endpoint": "http://a:4318", "headers": {"x-a": "1"}}},
        "service": {"pipelines": {"traces": {"receivers": ["otlp"], "exporters": ["otlp_http"]}}}}


def test_several_configs_merge_maps_and_replace_lists(tmp_path):
    first = _write(tmp_path / "a.yaml", BASE)
    second = _write(tmp_path / "b.yaml", {
        "exporters": {"otlp_http": {"headers": {"x-b": "2"}}, "debug": {}},
        "service": {"pipelines": {"traces": {"exporters": ["debug"]}}}})
    result = run_cli("print-config", "--mode", "unredacted", "--format", "json", "--config", first,
                     "--config", f"file:{second}")
    assert result.returncode == 0, result.stderr
    merged = json.loads(result.stdout)  # the effective config: the merged settings and every default
    exporter = merged["exporters"]["otlp_http"]
    assert (exporter["endpoint"], exporter["headers"]) == ("http://a:4318", {"x-a": "1", "x-b": "2"})
    traces = merged["service"]["pipelines"]["traces"]
    assert (traces["receivers"], traces["exporters"]) == (["otlp"], ["debug"])


MERGE_APPEND = "confmap.enableMergeAppendOption"


def test_merge_append_gate_combines_service_extensions_receivers_and_exporters_lists(tmp_path):
    # otelcol's alpha gate confmap.enableMergeAppendOption: those lists are appended (each item
    # once); every other list is still replaced.
    first = json.loads(json.dumps(BASE))
    first["extensions"] = {"health_check": {}}
    first["service"]["extensions"] = ["health_check"]
    first["service"]["pipelines"]["traces"]["processors"] = ["batch"]
    first["processors"] = {"batch": {}, "memory_limiter": {"limit_mib": 100, "check_interval": "1s"}}
    second = {"extensions": {"health_check/2": {"endpoint": "127.0.0.1:13134"}},
              "exporters": {"debug": {}},
              "service": {"extensions": ["health_check/2", "health_check"],
                          "pipelines": {"traces": {"processors": ["memory_limiter"],
                                                   "exporters": ["debug", "otlp_http"]}}}}
    configs = ["--config", _write(tmp_path / "a.yaml", first), "--config", _write(tmp_path / "b.yaml", second)]
    for flags in (["--feature-gates", "confmap.enableMergeAppendOption"],
                  ["--feature-gates=+confmap.enableMergeAppendOption"]):
        result = run_cli("print-config", "--format", "json", *configs, *flags)
        assert result.returncode == 0, result.stderr
        service = json.loads(result.stdout)["service"]
        assert service["extensions"] == ["health_check", "health_check/2"]
        assert service["pipelines"]["traces"] == {"receivers": ["otlp"], "processors": ["memory_limiter"],
                                                  "exporters": ["otlp_http", "debug"]}
        assert run_cli("validate", *configs, *flags).returncode == 0
    for off in (["--feature-gates=-confmap.enableMergeAppendOption"],
                ["--feature-gates", "-confmap.enableMergeAppendOption"]):  # the next word, '-' or not, as pflag
        result = run_cli("print-config", "--format", "json", *configs, "--feature-gates", MERGE_APPEND, *off)
        assert json.loads(result.stdout)["service"]["extensions"] == ["health_check/2", "health_check"], result.stderr


def test_an_unknown_feature_gate_is_refused_naming_it_and_the_known_ones():
    result = run_cli("validate", "--feature-gates", "confmap.enableMergeAppendOption,exporter.nosuch")
    assert result.returncode == 1, result.stderr
    assert "exporter.nosuch" in result.stderr and "confmap.enableMergeAppendOption" in result.stderr
    assert "Traceback" not in result.stderr and "unrecognized arguments" not in result.stderr


def test_env_and_yaml_config_uris_and_set_with_dots(tmp_path):
    first = _write(tmp_path / "a.yaml", BASE)
    env = {"EDGEAGENT_TEST_CONFIG": "exporters: {otlp_http: {timeout: 7s}}"}
    result = run_cli("print-config", "--format", "json", "--config", first, "--config", "env:EDGEAGENT_TEST_CONFIG",
                     "--config", "yaml:exporters::otlp_http::compression: zstd",
                     "--set", "exporters.otlp_http.endpoint=http://b:4318", env=env)
    assert result.returncode == 0, result.stderr
    exporter = json.loads(result.stdout)["exporters"]["otlp_http"]
    assert (exporter["timeout"], exporter["compression"], exporter["endpoint"]) == ("7s", "zstd", "http://b:4318")


def test_print_config_redacts_secrets(tmp_path):
    document = json.loads(json.dumps(BASE))
    document["exporters"]["otlp_http"]["headers"] = {"Authorization": "Bearer s3cret-h"}
    document["exporters"]["otlp_http"]["endpoint"] = "https://user:s3cret-p@a:4318"
    document["exporters"]["otlp_http"]["tls"] = {"key_pem": "s3cret-k"}
    document["extensions"] = {"bearertokenauth": {"token": "s3cret-t"}}
    result = run_cli("print-config", "--validate", "false", "--config", _write(tmp_path / "a.yaml", document))
    assert result.returncode == 0, result.stderr
    assert "s3cret" not in result.stdout and "[REDACTED]" in result.stdout, result.stdout


def test_print_config_shows_a_reference_to_a_number_as_the_number_not_a_traceback(tmp_path):
    document = json.loads(json.dumps(BASE))
    document["exporters"]["otlp_http"]["sending_queue"] = {"num_consumers": "${env:CONSUMERS}"}
    for mode in ("redacted", "unredacted"):
        result = run_cli("print-config", "--mode", mode, "--config", _write(tmp_path / "a.yaml", document),
                         env={"CONSUMERS": "0x10"})
        assert result.returncode == 0, result.stderr
        assert yaml.safe_load(result.stdout)["exporters"]["otlp_http"]["sending_queue"]["num_consumers"] == 16


def test_validate_honours_upstream_and_set_as_run_does():
    result = run_cli("validate", "--upstream", "ftp://nowhere")
    assert result.returncode == 1 and "--upstream 'ftp://nowhere': give an http://" in result.stderr, result.stderr
    result = run_cli("validate", "--set", "processors::batch::timeout=soon")
    assert result.returncode == 1 and "processors::batch::timeout" in result.stderr, result.stderr


def test_components_lists_every_type_per_kind():
    result = run_cli("components")
    assert result.returncode == 0, result.stderr
    listed = yaml.safe_load(result.stdout)
    exporters = {entry["name"]: entry for entry in listed["exporters"]}
    assert {"otlp_grpc", "otlp_http", "debug", "kafka"} <= set(exporters)
    assert exporters["otlp_http"]["deprecated_alias"] == "otlphttp"
    assert {entry["name"] for entry in listed["processors"]} >= {"resource", "batch", "memory_limiter"}
    # exactly the schemes --config and ${scheme:...} references accept
    assert [entry["scheme"] for entry in listed["providers"]] == ["env", "file", "http", "https", "yaml"]


def test_version_flag_and_help_for_every_command():
    result = run_cli("--version")
    assert result.returncode == 0 and "edgeagent version" in result.stdout
    for command in ("run", "validate", "print-config", "components", "version"):
        shown = run_cli(command, "--help")
        assert shown.returncode == 0 and len(shown.stdout.splitlines()) > 2, command


@pytest.mark.e2e  # runs the edgeagent command
def test_short_version_flag_and_help_command_as_otelcols_cobra_has_them():
    short = run_cli("-v")
    assert short.returncode == 0 and short.stdout == run_cli("--version").stdout, short.stderr
    shown = run_cli("help")
    assert shown.returncode == 0 and "validate" in shown.stdout, shown.stderr
    for command in ("validate", "print-config", "queue"):
        assert run_cli("help", command).stdout == run_cli(command, "--help").stdout, command
    unknown = run_cli("help", "nosuch")
    assert unknown.returncode == 1 and "nosuch" in unknown.stderr, unknown.stderr


def test_print_config_flags_read_as_otelcols_go_flags(tmp_path):
    # --validate is a Go bool flag: bare it is true, =false/=0/=F turn it off; --mode and --format ignore case.
    document = json.loads(json.dumps(BASE))
    document["exporters"]["otlp_http"]["timeout"] = "soon"
    config = _write(tmp_path / "a.yaml", document)
    assert run_cli("print-config", "--validate", "--config", config).returncode == 1
    for off in ("false", "0", "F", "FALSE"):
        result = run_cli("print-config", f"--validate={off}", "--mode", "UNREDACTED", "--format", "JSON",
                         "--config", config)
        assert result.returncode == 0, (off, result.stderr)
        assert json.loads(result.stdout)["exporters"]["otlp_http"]["timeout"] == "soon"
    refused = run_cli("print-config", "--validate=maybe", "--config", config)
    assert refused.returncode == 1 and "--validate" in refused.stderr, refused.stderr


# ---- headers as otelcol's list of {name, value} (configopaque.MapList) ----------------------------------
@pytest.mark.parametrize("exporter, endpoint", [("otlp_http", "http://collector:4318"),
                                                ("otlp_grpc", "collector:4317")])
def test_exporter_headers_may_be_a_list_of_name_value_pairs(exporter, endpoint):
    text = _config(f"  {exporter}:\n    endpoint: {endpoint}\n    headers:\n      - name: X-Tenant\n"
                   f"        value: acme\n      - name: X-Region\n        value: eu\n", exporter)
    assert load_text(text, environ={}).exporters[exporter].config.headers == {"X-Tenant": "acme", "X-Region": "eu"}


def test_exporter_headers_listing_a_name_twice_are_refused_as_otelcol_refuses_them():
    text = _config("  otlp_http:\n    endpoint: http://collector:4318\n    headers:\n      - name: X-Tenant\n"
                   "        value: acme\n      - name: X-Tenant\n        value: other\n", "otlp_http")
    assert any("duplicate keys in map-style list: ['X-Tenant']" in message for _, message in _errors(text))


def test_components_gives_each_type_its_module_and_stability_per_signal_as_otelcol():
    """otelcol's `components` lists `name`, `module` and a `stability` map per entry (`logs`,
    `metrics`, `traces`; `extension` for extensions; `traces-to-traces` ... for connectors), with
    `Undefined` for a signal the type lacks. edgeagent printed a `signals` list instead, so a
    script reading `.stability` of otelcol's output found nothing."""
    result = run_cli("components")
    assert result.returncode == 0, result.stderr
    listed = yaml.safe_load(result.stdout)
    for kind in ("receivers", "processors", "exporters", "connectors", "extensions"):
        for entry in listed[kind]:
            assert entry["module"].startswith("edgeagent"), entry
    processors = {entry["name"]: entry["stability"] for entry in listed["processors"]}
    assert set(processors["batch"]) == {"logs", "metrics", "traces"}
    assert processors["tail_sampling"]["logs"] == "Undefined" and processors["tail_sampling"]["traces"] != "Undefined"
    assert {entry["name"]: entry["stability"] for entry in listed["extensions"]}["file_storage"].keys() == {"extension"}
    failover = {entry["name"]: entry["stability"] for entry in listed["connectors"]}["failover"]
    assert len(failover) == 9 and failover["traces-to-traces"] != "Undefined"
    assert failover["traces-to-logs"] == "Undefined"
    assert all(entry["module"] for entry in listed["providers"])


def test_featuregate_lists_the_gates_and_describes_one_as_otelcol():
    """otelcol 0.165 has a `featuregate [ID]` verb: a table of every gate, or one gate's fields;
    an unknown id exits 1. edgeagent refused the verb, so `--feature-gates` had no way to list ids."""
    table = run_cli("featuregate")
    assert table.returncode == 0, table.stderr
    header, *rows = table.stdout.splitlines()
    assert header.split()[:3] == ["ID", "Enabled", "Stage"] and header.split()[3] == "Description"
    assert any(row.split()[:3] == ["confmap.enableMergeAppendOption", "false", "Alpha"] for row in rows), rows
    one = run_cli("featuregate", "confmap.enableMergeAppendOption")
    assert one.returncode == 0, one.stderr
    assert one.stdout.splitlines()[:3] == ["Feature: confmap.enableMergeAppendOption", "Enabled: false",
                                           "Stage: Alpha"], one.stdout
    assert one.stdout.splitlines()[3].startswith("Description: ")
    unknown = run_cli("featuregate", "no.such.gate")
    assert unknown.returncode == 1 and 'feature "no.such.gate" not found' in unknown.stderr, unknown.stderr
