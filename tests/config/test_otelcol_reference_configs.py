"""Configs checked against otelcol 0.165 itself, both ways.

1. Every config we ship that claims otelcol compatibility (packaging/, the Kubernetes ConfigMaps,
   the README's complete examples, tests/testdata files marked `# otelcol-compatible`) passes
   `otelcol validate` of the real 0.165 binary, once the edgeagent-only keys listed for it in
   EDGEAGENT_ONLY are taken out. Each listed key must be present, so the list stays true.
2. The example configs otelcol's own components document (their testdata, read from the Go
   module cache at test time, never copied here) pass `edgeagent validate`, or fail only at the
   YAML paths REFUSED lists for them, each with its reason.
"""

from __future__ import annotations

import copy
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.config.conftest import REPO_ROOT, run_validate

# ---- 1. what we ship, through otelcol validate ---------------------------------------------

STORAGE = "file_storage: edgeagent's disk budget in MiB (otelcol spells it max_size, in bytes)"
EDGEAGENT_ONLY: dict[str, dict[str, str]] = {
    "packaging/debian/config.yaml": {
        "extensions::file_storage::max_size_mib": STORAGE,
        "extensions::file_storage::full_policy": "file_storage: what a full queue does (block or drop_oldest)",
    },
    "packaging/container/config.yaml": {"extensions::file_storage::max_size_mib": STORAGE},
    "packaging/kubernetes/agent.yaml": {
        "extensions::file_storage::max_size_mib": STORAGE,
        "extensions::file_storage::full_policy": "file_storage: what a full queue does (block or drop_oldest)",
    },
    "packaging/kubernetes/hub.yaml": {"extensions::file_storage::max_size_mib": STORAGE},
    "packaging/kubernetes/hub-cluster.yaml": {
        "extensions::file_storage::max_size_mib": STORAGE,
        "processors::tail_sampling::max_buffered_spans": "tail_sampling: a bound on buffered spans as well as traces",
        "processors::tail_sampling::shared_state": "tail_sampling: decisions shared by hub replicas through Redis",
    },
}
# READMEs' fragments (a `service:` section alone, one exporter) are no configs; complete ones are
README_COMPLETE = ("receivers", "exporters", "service")  # and service::pipelines
ENV = {"EDGEAGENT_UPSTREAM": "https://collector.example:4318", "EDGE_LOCATION": "test",
       "EDGEAGENT_QUEUE_MAX_MIB": "512", "UPSTREAM_TOKEN": "t", "KAFKA_PASSWORD": "p",
       "REDIS_PASSWORD": "p", "TELEMETRYFLOW_ENDPOINT": "https://collector.example:4318",
       "TELEMETRYFLOW_WORKSPACE_ID": "w", "TELEMETRYFLOW_TENANT_ID": "t", "NODE_NAME": "node-1",
       "HOSTNAME": "node-1", "K8S_NODE_NAME": "node-1", "POD_NAME": "hub-0"}


def _shipped() -> dict[str, str]:
    configs = {name: (REPO_ROOT / name).read_text() for name in
               ("packaging/debian/config.yaml", "packaging/container/config.yaml")}
    for path in sorted((REPO_ROOT / "packaging/kubernetes").glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            if document and document.get("kind") == "ConfigMap":
                text = (document.get("data") or {}).get("config.yaml")
                if text:
                    configs[str(path.relative_to(REPO_ROOT))] = text
    readme = (REPO_ROOT / "README.md").read_text()
    for block in re.findall(r"```yaml\n(.*?)```", readme, re.DOTALL):
        document = yaml.safe_load(block)
        if isinstance(document, dict) and all(key in document for key in README_COMPLETE) \
                and "pipelines" in (document["service"] or {}):
            line = readme[:readme.index(block)].count("\n") + 1
            configs[f"README.md:{line}"] = block
    for path in sorted((REPO_ROOT / "tests/testdata").rglob("*.yaml")):
        text = path.read_text()
        if text.startswith("# otelcol-compatible"):
            configs[str(path.relative_to(REPO_ROOT))] = text
    return configs


SHIPPED = _shipped()


def _take_out(document: dict, path: str) -> None:
    *parents, key = path.split("::")
    node: Any = document
    for part in parents:
        node = node[part]
    assert key in node, f"{path} is listed as edgeagent-only but is not in the config: remove it from the list"
    del node[key]


def _with_local_storage(document: dict, directory: Path) -> None:
    """otelcol checks that a file_storage directory exists; point them at one that does."""
    for name, settings in (document.get("extensions") or {}).items():
        if name.split("/")[0] == "file_storage":
            settings = document["extensions"][name] = settings or {}
            settings["directory"] = str(directory)
            if isinstance(settings.get("compaction"), dict):  # its directory defaults to otelcol's own
                settings["compaction"]["directory"] = str(directory)


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_config_passes_otelcol_validate_once_edgeagent_only_keys_are_out(name, otelcol_binary, tmp_path):
    document = yaml.safe_load(SHIPPED[name])
    for path in EDGEAGENT_ONLY.get(name, {}):
        _take_out(document, path)
    _with_local_storage(document, tmp_path)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(copy.deepcopy(document), sort_keys=False))
    result = subprocess.run([str(otelcol_binary), "validate", "--config", str(config)], capture_output=True,
                            text=True, timeout=60, env={**os.environ, **ENV}, stdin=subprocess.DEVNULL, check=False)
    assert result.returncode == 0, (f"{name} is not a valid otelcol 0.165 config; list the edgeagent-only key "
                                    f"in EDGEAGENT_ONLY with its reason, or fix the config:\n{result.stderr}")


# ---- 2. otelcol's documented examples, through edgeagent validate --------------------------

MODULES = Path(os.environ.get("GOMODCACHE") or Path.home() / "go/pkg/mod")
CORE = "go.opentelemetry.io/collector"
CONTRIB = "github.com/open-telemetry/opentelemetry-collector-contrib"
# (module directory, testdata file, component kind, type): the file is one component's settings
# ("body") or a map of component ids to settings ("ids")
EXAMPLES = [
    (f"{CORE}/receiver/otlpreceiver@v0.165.0", "config.yaml", "receivers", "otlp", "body"),
    (f"{CORE}/exporter/otlphttpexporter@v0.165.0", "config.yaml", "exporters", "otlphttp", "body"),
    (f"{CORE}/processor/batchprocessor@v0.165.0", "config.yaml", "processors", "batch", "body"),
    (f"{CONTRIB}/processor/attributesprocessor@v0.165.0", "config.yaml", "processors", "attributes", "ids"),
    (f"{CONTRIB}/processor/resourceprocessor@v0.165.0", "config.yaml", "processors", "resource", "ids"),
    (f"{CONTRIB}/processor/filterprocessor@v0.165.0", "config_traces.yaml", "processors", "filter", "ids"),
    (f"{CONTRIB}/processor/tailsamplingprocessor@v0.165.0", "tail_sampling_config.yaml", "processors",
     "tail_sampling", "ids"),
    (f"{CONTRIB}/extension/storage/filestorage@v0.165.0", "config.yaml", "extensions", "file_storage", "ids"),
    (f"{CONTRIB}/extension/healthcheckextension@v0.165.0", "config.yaml", "extensions", "health_check", "ids"),
]
NO_EXAMPLE = {  # components whose module documents no example config in 0.165
    "memory_limiter": "memorylimiterprocessor v0.165.0 ships no testdata config",
}
# YAML paths (prefixes) where edgeagent refuses otelcol's example, and why
HEALTH_V2 = ("health_check: the v2 settings (http, grpc) need otelcol's alpha feature gate "
             "extension.healthcheck.useComponentStatus; otelcol 0.165 refuses them too without it")
REFUSED: dict[str, dict[str, str]] = {
    "otlp:config.yaml": {
        "receivers::otlp::protocols::http::auth::authenticator":
            "names the authenticator 'test' that otelcol's unit test registers; no such extension exists",
    },
    "attributes:config.yaml": {
        "processors::attributes/regex_insert::actions::0": "an example otelcol refuses too when it builds the "
                                                           "pipeline: extract's pattern has an unnamed group",
        # this test puts every example in a traces pipeline, where otelcol refuses a log-only include too
        "processors::attributes/log_body_regexp::include": "log_bodies cannot select spans",
        "processors::attributes/log_severity_regexp::include": "log_severity_texts cannot select spans",
    },
    "resource:config.yaml": {
        "processors::resource/empty": "an example otelcol refuses too: attributes is required",
    },
    "health_check:config.yaml": {
        "extensions::health_check/missingendpoint::endpoint": "an example otelcol refuses too: endpoint is required",
        "extensions::health_check/invalidpath::path": "an example otelcol refuses too: path must start with /",
        "extensions::health_check/v2-": HEALTH_V2,
    },
}


def _example_config(kind: str, type_name: str, form: str, settings: Any, storage: Path) -> dict:
    """A whole config around one documented component: an OTLP receiver, a debug exporter, one pipeline."""
    components = {type_name: settings} if form == "body" else dict(settings)
    document: dict[str, Any] = {"receivers": {"otlp": {"protocols": {"http": {}}}}, "exporters": {"debug": {}}}
    document[kind] = components
    pipeline = {"receivers": list(document["receivers"]), "exporters": list(document["exporters"])}
    if kind == "processors":
        pipeline["processors"] = list(components)
    service: dict[str, Any] = {"pipelines": {"traces": pipeline}}
    if kind == "extensions":
        _with_local_storage(document, storage)
        service["extensions"] = list(components)
    document["service"] = service
    return document


@pytest.mark.parametrize(("module", "file", "kind", "type_name", "form"), EXAMPLES,
                         ids=[f"{example[3]}:{example[1]}" for example in EXAMPLES])
def test_otelcols_documented_example_passes_edgeagent_validate(module, file, kind, type_name, form, tmp_path):
    source = MODULES / module / "testdata" / file
    if not source.is_file():
        pytest.skip(f"{source} is not in the Go module cache (the otelcol build puts it there)")
    settings = yaml.safe_load(source.read_text())
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(_example_config(kind, type_name, form, settings, tmp_path), sort_keys=False))
    result = run_validate(config)
    refused = REFUSED.get(f"{type_name}:{file}", {})
    unexpected = [(path, message) for path, message in result.errors
                  if not any(path.startswith(prefix) for prefix in refused)]
    assert not unexpected, f"edgeagent refuses otelcol's own example {source.name}:\n{result.describe()}"
    stale = [prefix for prefix in refused if not any(path.startswith(prefix) for path, _ in result.errors)]
    assert not stale, f"listed as refused but accepted now: {stale}; remove them from REFUSED"
    if not refused:
        assert result.returncode == 0, result.describe()


def test_components_without_an_example_say_why():
    assert all(reason for reason in NO_EXAMPLE.values())
