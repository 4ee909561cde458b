"""Kubernetes manifests validate against the Kubernetes schemas; alert rules pass promtool; configs are valid."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.packaging.hostpath import left_by_an_agent, run_init_container
from tests.packaging.startup import probe_window, slowest_start
from tests.packaging.tools import require

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "packaging" / "kubernetes"
CORE = ["namespace.yaml", "agent.yaml", "hub.yaml", "hub-cluster.yaml", "networkpolicies.yaml"]


@pytest.mark.parametrize("name", CORE)
def test_manifest_validates_against_the_kubernetes_schemas(name):
    validate = require("kubernetes-validate", "pip install kubernetes-validate")
    result = subprocess.run([validate, "--strict", str(MANIFESTS / name)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "passed" in result.stdout + result.stderr


def test_alert_rules_pass_promtool():
    promtool = require("promtool", "apt-get install -y prometheus")
    result = subprocess.run([promtool, "check", "rules", str(MANIFESTS / "prometheus-rules.yaml")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_prometheus_operator_resources_carry_the_same_rules_and_scrape_both_tiers():
    # ServiceMonitor and PrometheusRule are CRDs, outside the Kubernetes schemas: checked here
    monitor, rule = list(yaml.safe_load_all((MANIFESTS / "monitoring.yaml").read_text()))
    assert monitor["kind"] == "ServiceMonitor" and rule["kind"] == "PrometheusRule"
    assert monitor["spec"]["endpoints"][0] == {"port": "metrics", "path": "/metrics", "interval": "15s"}
    assert set(monitor["spec"]["selector"]["matchExpressions"][0]["values"]) == {"edgeagent-agent", "edgeagent-hub"}
    assert rule["spec"] == yaml.safe_load((MANIFESTS / "prometheus-rules.yaml").read_text())


def test_every_workload_runs_non_root_read_only_with_probes_and_resources():
    for name in ("agent.yaml", "hub.yaml", "hub-cluster.yaml"):
        for doc in yaml.safe_load_all((MANIFESTS / name).read_text()):
            if doc["kind"] not in ("DaemonSet", "StatefulSet"):
                continue
            pod = doc["spec"]["template"]["spec"]
            assert pod["securityContext"]["runAsNonRoot"] is True
            container = pod["containers"][0]
            assert container["securityContext"]["readOnlyRootFilesystem"] is True
            assert container["livenessProbe"]["httpGet"]["path"] == "/health/live"
            assert container["readinessProbe"]["httpGet"]["path"] == "/health/ready"
            assert container["resources"]["limits"]["memory"]


@pytest.mark.parametrize("name", ["agent.yaml", "hub.yaml", "hub-cluster.yaml"])
def test_no_workload_mounts_an_api_token_it_never_uses(name):
    """The agents take OTLP from every pod of the cluster and never call the Kubernetes API: the token of
    the namespace's default ServiceAccount, mounted into each pod unless refused, was one more thing
    for a compromised agent to use (the Helm chart refuses it)."""
    for doc in yaml.safe_load_all((MANIFESTS / name).read_text()):
        if doc["kind"] in ("DaemonSet", "StatefulSet"):
            assert doc["spec"]["template"]["spec"].get("automountServiceAccountToken") is False, doc["metadata"]["name"]


@pytest.mark.parametrize("name", ["agent.yaml", "hub.yaml", "hub-cluster.yaml"])
def test_the_queue_volume_also_holds_the_directory_otelcol_configs_keep_their_queue_in(name):
    """otelcol configs (the deployment guides', otelcol's file_storage default) keep the queue under
    /var/lib/otelcol: pasted into the ConfigMap, that directory was on the read-only root, and the
    agent crash-looped."""
    for doc in yaml.safe_load_all((MANIFESTS / name).read_text()):
        if doc["kind"] in ("DaemonSet", "StatefulSet"):
            mounts = doc["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
            assert {"name": "queue", "mountPath": "/var/lib/otelcol"} in mounts, doc["metadata"]["name"]


@pytest.mark.parametrize("name", ["hub.yaml", "hub-cluster.yaml"])
def test_the_hub_keeps_its_queue_on_a_volume_claim_per_replica_not_an_emptydir(name):
    (hub,) = [doc for doc in yaml.safe_load_all((MANIFESTS / name).read_text()) if doc["kind"] == "StatefulSet"]
    assert [claim["metadata"]["name"] for claim in hub["spec"]["volumeClaimTemplates"]] == ["queue"]
    pod = hub["spec"]["template"]["spec"]
    assert "queue" not in {volume["name"] for volume in pod["volumes"]}
    assert {"name": "queue", "mountPath": "/var/lib/edgeagent"} in pod["containers"][0]["volumeMounts"]
    services = [doc for doc in yaml.safe_load_all((MANIFESTS / name).read_text()) if doc["kind"] == "Service"]
    assert hub["spec"]["serviceName"] in {service["metadata"]["name"] for service in services
                                          if service["spec"].get("clusterIP") == "None"}


def _drain_timeout(container: dict) -> float:
    values = [entry["value"] for entry in container.get("env", []) if entry["name"] == "EDGEAGENT_DRAIN_TIMEOUT"]
    return float(values[0]) if values else 0.0


@pytest.mark.parametrize("name", ["agent.yaml", "hub.yaml", "hub-cluster.yaml"])
def test_the_grace_period_covers_a_preStop_pause_a_drain_and_an_export_in_flight(name):
    """A kill at the end of the grace period would cut the drain's final commit: the drain ends
    first, leaving room for the requests in flight (the exporters' 30s timeout) and a margin."""
    for doc in yaml.safe_load_all((MANIFESTS / name).read_text()):
        if doc["kind"] in ("DaemonSet", "StatefulSet"):
            pod = doc["spec"]["template"]["spec"]
            container = pod["containers"][0]
            pause = container.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
            assert pod["terminationGracePeriodSeconds"] >= pause + _drain_timeout(container) + 30 + 10


@pytest.mark.parametrize("name", ["hub.yaml", "hub-cluster.yaml"])
def test_a_stopping_hub_drains_its_queue_before_it_exits(name):
    (hub,) = [doc for doc in yaml.safe_load_all((MANIFESTS / name).read_text()) if doc["kind"] == "StatefulSet"]
    assert _drain_timeout(hub["spec"]["template"]["spec"]["containers"][0]) > 0


@pytest.mark.parametrize("name", ["agent.yaml", "hub.yaml", "hub-cluster.yaml"])
def test_the_configmap_config_is_valid(name, tmp_path):
    configmap = next(doc for doc in yaml.safe_load_all((MANIFESTS / name).read_text()) if doc["kind"] == "ConfigMap")
    config = tmp_path / "config.yaml"
    config.write_text(configmap["data"]["config.yaml"])
    env = {**os.environ, "NODE_NAME": "node-1", "TELEMETRYFLOW_ENDPOINT": "https://example.invalid/api",
           "TELEMETRYFLOW_WORKSPACE_ID": "w", "TELEMETRYFLOW_TENANT_ID": "t"}
    result = subprocess.run([sys.executable, "-m", "edgeagent", "validate", "--config", str(config)],
                            capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 0, result.stderr


def test_keda_scales_the_clustered_hub_on_the_lag_of_the_group_its_kafka_receiver_commits():
    # ScaledObject is a CRD, outside the Kubernetes schemas: checked against the hub it scales
    scaled = yaml.safe_load((MANIFESTS / "keda.yaml").read_text())
    docs = {doc["kind"]: doc for doc in yaml.safe_load_all((MANIFESTS / "hub-cluster.yaml").read_text())}
    config = yaml.safe_load(docs["ConfigMap"]["data"]["config.yaml"])
    receiver = config["receivers"]["kafka"]
    assert scaled["kind"] == "ScaledObject" and scaled["apiVersion"] == "keda.sh/v1alpha1"
    assert scaled["spec"]["scaleTargetRef"]["name"] == docs["StatefulSet"]["metadata"]["name"]
    assert scaled["spec"]["scaleTargetRef"]["kind"] == "StatefulSet"
    assert "HorizontalPodAutoscaler" not in docs  # KEDA owns the scaling
    trigger = scaled["spec"]["triggers"][0]
    assert trigger["type"] == "kafka"
    assert trigger["metadata"]["consumerGroup"] == receiver["group_id"]
    assert [trigger["metadata"]["topic"]] == receiver["traces"]["topics"]
    assert trigger["metadata"]["bootstrapServers"].split(",") == receiver["brokers"]
    assert scaled["spec"]["minReplicaCount"] >= docs["PodDisruptionBudget"]["spec"]["minAvailable"] + 1


def test_the_agents_queue_init_container_succeeds_on_a_node_where_an_agent_ran_before(tmp_path):
    """As the chart's: a new agent pod must get past its init container over the queue the last one left."""
    (agent,) = [doc for doc in yaml.safe_load_all((MANIFESTS / "agent.yaml").read_text()) if doc["kind"] == "DaemonSet"]
    pod = agent["spec"]["template"]["spec"]
    uid, gid = pod["securityContext"]["runAsUser"], pod["securityContext"]["runAsGroup"]
    left_by_an_agent(tmp_path, uid, gid, 0o750)  # the mode the init container sets
    (init,) = pod["initContainers"]
    result = run_init_container(init, "queue", tmp_path)
    assert result.returncode == 0, result.stderr
    assert {(path.stat().st_uid, path.stat().st_gid) for path in [tmp_path, *tmp_path.rglob("*")]} == {(uid, gid)}


@pytest.mark.parametrize("name", ["agent.yaml", "hub.yaml", "hub-cluster.yaml"])
def test_a_start_that_compacts_a_full_queue_is_not_killed_by_the_liveness_probe(name):
    docs = list(yaml.safe_load_all((MANIFESTS / name).read_text()))
    config = yaml.safe_load(next(doc for doc in docs if doc["kind"] == "ConfigMap")["data"]["config.yaml"])
    for doc in docs:
        if doc["kind"] in ("DaemonSet", "StatefulSet"):
            assert probe_window(doc["spec"]["template"]["spec"]["containers"][0]) >= slowest_start(config)


@pytest.mark.parametrize("name", ["networkpolicies.yaml", "hub-cluster.yaml"])
def test_network_policies_select_namespaces_by_the_label_every_namespace_has(name):
    """Kubernetes labels every namespace kubernetes.io/metadata.name=<its name>; nothing labels
    kube-system `name: kube-system`: a policy selecting that let no DNS query out, so the agents could
    not resolve the hub and the hub not its upstream (and Prometheus in `monitoring` could not scrape)."""
    def selectors(node: object) -> list[dict]:
        if isinstance(node, dict):
            found = [node["namespaceSelector"]] if "namespaceSelector" in node else []
            return found + [s for value in node.values() for s in selectors(value)]
        return [s for value in node for s in selectors(value)] if isinstance(node, list) else []

    policies = [doc for doc in yaml.safe_load_all((MANIFESTS / name).read_text()) if doc["kind"] == "NetworkPolicy"]
    found = [selector for policy in policies for selector in selectors(policy["spec"])]
    assert found and all(set(s.get("matchLabels", {})) <= {"kubernetes.io/metadata.name"} for s in found), found
