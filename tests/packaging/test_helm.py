"""The Helm chart: it lints, renders for the default and hub values and every example, its values
schema refuses misspelt keys and wrong types, every rendered object validates offline against the
Kubernetes schemas, the workloads keep their queues on
durable storage with a grace period that covers a drain, and every config it renders runs on
the installed wheel."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from tests.packaging.hostpath import left_by_an_agent, run_init_container
from tests.packaging.shipped import configmap_configs, run_on_installation
from tests.packaging.startup import probe_window, slowest_start
from tests.packaging.tools import require

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "packaging" / "helm" / "edgeagent"
VALUES = {
    "default": [],
    "hub": ["--set", "hub.enabled=true"],
    "tail-sampling": ["-f", str(CHART / "examples" / "tail-sampling-hub.yaml")],
    "ingress-from-networks": ["-f", str(CHART / "examples" / "ingress-from-networks.yaml")],
}
CUSTOM_RESOURCES = {"ScaledObject", "ServiceMonitor"}  # CRDs: outside the Kubernetes schemas, checked below


@pytest.fixture(scope="module")
def rendered(helm) -> dict[str, list[dict]]:
    out = {}
    for name, flags in VALUES.items():
        result = subprocess.run([helm, "template", "edgeagent", str(CHART), "--namespace", "observability", *flags],
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        out[name] = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    return out


def _one(docs: list[dict], kind: str) -> dict:
    (found,) = [doc for doc in docs if doc["kind"] == kind]
    return found


def _kinds(docs: list[dict]) -> list[str]:
    return sorted(f"{doc['kind']}/{doc['metadata']['name']}" for doc in docs)


def _workloads(docs: list[dict]) -> list[tuple[dict, dict]]:
    """Each DaemonSet and StatefulSet with the config of its tier."""
    def tier(doc: dict) -> str:
        return doc["metadata"]["labels"]["app.kubernetes.io/component"]

    configs = {tier(doc): yaml.safe_load(doc["data"]["config.yaml"]) for doc in docs if doc["kind"] == "ConfigMap"}
    return [(doc, configs[tier(doc)]) for doc in docs if doc["kind"] in ("DaemonSet", "StatefulSet")]


def _seconds(duration: str | int) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m)", str(duration))
    assert match, duration
    return float(match.group(1)) * {"ms": 0.001, "s": 1, "m": 60}[match.group(2)]


@pytest.mark.parametrize("values", VALUES)
def test_helm_lint_passes(helm, values):
    result = subprocess.run([helm, "lint", "--strict", str(CHART), *VALUES[values]], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_example_is_linted_and_rendered():
    examples = {str(path) for path in (CHART / "examples").glob("*.yaml")}
    assert examples <= {flags[1] for flags in VALUES.values() if flags[:1] == ["-f"]}


def _template(helm: str, *flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([helm, "template", "edgeagent", str(CHART), *flags], capture_output=True, text=True,
                          timeout=120)


REFUSED = {
    "a misspelt key": (["--set", "agent.resouces.limits.cpu=1"], "at '/agent': additional properties 'resouces'"),
    "a number as text": (["--set", "hub.replicaCount=two"], "at '/hub/replicaCount': got string, want integer"),
    "a config as a list": (["--set-json", "agent.config=[1]"], "at '/agent/config': got array, want object"),
    "a value outside the set": (["--set", "agent.service.internalTrafficPolicy=local"],
                                "at '/agent/service/internalTrafficPolicy'"),
    "brokers as a list": (["--set", "keda.kafka.brokers={a:9092,b:9092}"], "at '/keda/kafka/brokers'"),
    "a misspelt tier": (["--set", "networkPolicy.extraIngress.agents[0].ports[0].port=4317"],
                        "additional properties 'agents'"),
    "a misspelt ipBlock field": (["--set-json", 'networkPolicy.extraIngress.agent=[{"from": [{"ipBlock": '
                                                '{"cidr": "10.0.0.0/8", "excepts": ["10.1.0.0/16"]}}]}]'],
                                 "at '/networkPolicy/extraIngress/agent/0/from/0/ipBlock': additional properties "
                                 "'excepts'"),
}


@pytest.mark.parametrize("case", REFUSED)
def test_the_schema_refuses_values_the_templates_would_ignore_or_render_broken(helm, case):
    """Without values.schema.json a misspelt key was ignored without a word and a value of the wrong
    type rendered a manifest the cluster refused, or an agent with the chart's defaults."""
    flags, message = REFUSED[case]
    result = _template(helm, *flags)
    assert result.returncode != 0, result.stdout
    assert message in result.stderr, result.stderr


def test_the_schema_leaves_open_what_the_chart_passes_through(helm):
    result = _template(helm, "--set", "agent.config.processors.batch/big.send_batch_size=1",
                       "--set", "hub.enabled=true", "--set", "hub.config.exporters.debug.verbosity=detailed",
                       "--set", "agent.resources.limits.ephemeral-storage=1Gi",
                       "--set", "agent.podAnnotations.example\\.com/team=edge",
                       "--set", "containerSecurityContext.runAsUser=10002",
                       "--set", "podSecurityContext.supplementalGroups={10003}",
                       "--set", "agent.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution"
                                ".nodeSelectorTerms[0].matchExpressions[0].key=edge",
                       "--set", "hub.tolerations[0].operator=Exists",
                       "--set", "agent.env[0].name=OTEL_RESOURCE_ATTRIBUTES", "--set", "agent.env[0].value=site=a",
                       "--set", "global.imageRegistry=registry.example")  # a parent chart's globals
    assert result.returncode == 0, result.stderr


def _ingress(docs: list[dict], component: str) -> list[dict]:
    (policy,) = [doc for doc in docs if doc["kind"] == "NetworkPolicy"
                 and doc["metadata"]["labels"]["app.kubernetes.io/component"] == component]
    return policy["spec"]["ingress"]


def test_senders_that_are_not_pods_are_admitted_by_an_ip_block_of_their_tier(rendered):
    """The policies admitted pods only (namespace and pod selectors): the nodes' own processes
    sending to the host ports, and networks outside the cluster, could not be let in."""
    def blocks(component: str) -> list[dict]:
        rules = _ingress(rendered["ingress-from-networks"], component)
        return [peer["ipBlock"] for rule in rules for peer in rule.get("from", []) if "ipBlock" in peer]

    assert blocks("agent") == [{"cidr": "10.0.0.0/16", "except": ["10.0.64.0/18"]}, {"cidr": "192.168.10.0/24"}]
    assert blocks("hub") == [{"cidr": "203.0.113.0/24"}]
    agent = _ingress(rendered["ingress-from-networks"], "agent")
    assert agent[:len(_ingress(rendered["hub"], "agent"))] == _ingress(rendered["hub"], "agent")  # added, not replaced
    assert "ipBlock" not in str(_ingress(rendered["default"], "agent"))


@pytest.mark.parametrize("values", VALUES)
def test_every_rendered_object_validates_against_the_kubernetes_schemas(rendered, values, tmp_path):
    validate = require("kubernetes-validate", "pip install kubernetes-validate")
    core = [doc for doc in rendered[values] if doc["kind"] not in CUSTOM_RESOURCES]
    path = tmp_path / "rendered.yaml"
    path.write_text(yaml.safe_dump_all(core))
    result = subprocess.run([validate, "--strict", str(path)], capture_output=True, text=True, timeout=300)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert output.count(" passed for resource ") == len(core), output
    print(values, _kinds(rendered[values]))


def test_the_default_release_is_node_agents_only(rendered):
    assert _kinds(rendered["default"]) == ["ConfigMap/edgeagent-agent", "DaemonSet/edgeagent-agent",
                                           "NetworkPolicy/edgeagent-agent", "Service/edgeagent-agent",
                                           "ServiceAccount/edgeagent"]


def test_the_agents_keep_their_queue_on_the_node_and_serve_otlp_on_its_ports(rendered):
    daemonset = _one(rendered["default"], "DaemonSet")
    pod = daemonset["spec"]["template"]["spec"]
    assert {"name": "queue", "hostPath": {"path": "/var/lib/edgeagent", "type": "DirectoryOrCreate"}} in pod["volumes"]
    ports = {port["name"]: port for port in pod["containers"][0]["ports"]}
    assert ports["otlp-grpc"]["hostPort"] == 4317 and ports["otlp-http"]["hostPort"] == 4318
    assert {"operator": "Exists"} in pod["tolerations"]  # every node, tainted ones too
    assert _one(rendered["default"], "Service")["spec"]["internalTrafficPolicy"] == "Local"


@pytest.mark.parametrize("values", ["hub", "tail-sampling"])
def test_the_hub_keeps_its_queue_on_a_volume_claim_per_replica(rendered, values):
    statefulset = _one(rendered[values], "StatefulSet")
    (claim,) = statefulset["spec"]["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "queue" and claim["spec"]["resources"]["requests"]["storage"]
    pod = statefulset["spec"]["template"]["spec"]
    assert "queue" not in {volume["name"] for volume in pod["volumes"]}  # no emptyDir shadows the claim
    mounts = [mount["mountPath"] for mount in pod["containers"][0]["volumeMounts"] if mount["name"] == "queue"]
    config = yaml.safe_load(_one([d for d in rendered[values] if d["metadata"]["name"].endswith("-hub")],
                                 "ConfigMap")["data"]["config.yaml"])
    assert any(config["extensions"]["file_storage"]["directory"].startswith(path + "/") for path in mounts)


def _drain_timeout(container: dict) -> float:
    values = [entry["value"] for entry in container.get("env", []) if entry["name"] == "EDGEAGENT_DRAIN_TIMEOUT"]
    return float(values[0]) if values else 0.0


@pytest.mark.parametrize("values", VALUES)
def test_the_grace_period_covers_a_drain(rendered, values):
    """preStop pause + the queue drain (EDGEAGENT_DRAIN_TIMEOUT) + the slowest exporter's timeout
    (requests in flight finish) + the batch flush, so the kill never cuts the final commit."""
    for workload, config in _workloads(rendered[values]):
        pod = workload["spec"]["template"]["spec"]
        container = pod["containers"][0]
        pause = container.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
        export = max(_seconds(exporter.get("timeout", "30s")) for exporter in config["exporters"].values())
        flush = max(
            [_seconds(p.get("timeout", "200ms")) for n, p in config["processors"].items() if n.startswith("batch")]
            or [0]
        )
        drain = _drain_timeout(container)
        assert pod["terminationGracePeriodSeconds"] >= pause + drain + export + flush + 10, workload["metadata"]["name"]
        if workload["kind"] == "StatefulSet":
            assert drain > 0, "a hub scaled down for good must send its queue before it exits"


@pytest.mark.parametrize("values", VALUES)
def test_probes_ports_and_config_agree(rendered, values):
    for workload, config in _workloads(rendered[values]):
        container = workload["spec"]["template"]["spec"]["containers"][0]
        ports = {port["name"]: port["containerPort"] for port in container["ports"]}
        assert container["livenessProbe"]["httpGet"] == {"path": "/health/live", "port": "health"}
        assert container["readinessProbe"]["httpGet"] == {"path": "/health/ready", "port": "health"}
        assert config["extensions"]["health_check"]["endpoint"].endswith(f":{ports['health']}")
        reader = config["service"]["telemetry"]["metrics"]["readers"][0]["pull"]["exporter"]["prometheus"]
        assert reader["port"] == ports["metrics"]
        for protocol, settings in config["receivers"].get("otlp", {"protocols": {}})["protocols"].items():
            assert settings["endpoint"].endswith(f":{ports[f'otlp-{protocol}']}")
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert {"name": "TMPDIR", "value": "/tmp"} in container["env"]


def test_the_agents_send_to_the_hub_when_there_is_one(rendered):
    def upstream(values: str) -> str:
        env = _one(rendered[values], "DaemonSet")["spec"]["template"]["spec"]["containers"][0]["env"]
        return next(item["value"] for item in env if item["name"] == "EDGEAGENT_UPSTREAM")

    assert upstream("hub") == "http://edgeagent-hub.observability.svc:4318"
    assert "edgeagent-hub" not in upstream("default")
    hub_service = [
        doc for doc in rendered["hub"] if doc["kind"] == "Service" and doc["metadata"]["name"] == "edgeagent-hub"
    ]
    assert {"name": "otlp-http", "port": 4318, "targetPort": "otlp-http", "protocol": "TCP"} in hub_service[0]["spec"][
        "ports"
    ]


def test_the_hub_scales_on_cpu_and_one_replica_at_a_time_is_disrupted(rendered):
    hpa = _one(rendered["hub"], "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "edgeagent-hub"}
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    assert "replicas" not in _one(rendered["hub"], "StatefulSet")["spec"]  # the autoscaler owns it
    assert _one(rendered["hub"], "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1


def test_keda_scales_the_tail_sampling_hub_on_the_lag_of_the_group_its_kafka_receiver_commits(rendered):
    docs = rendered["tail-sampling"]
    assert "HorizontalPodAutoscaler" not in {doc["kind"] for doc in docs}  # KEDA owns the scaling
    scaled = _one(docs, "ScaledObject")
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    assert scaled["spec"]["scaleTargetRef"]["kind"] == "StatefulSet"
    assert scaled["spec"]["scaleTargetRef"]["name"] == _one(docs, "StatefulSet")["metadata"]["name"]
    hub = yaml.safe_load(next(doc for doc in docs if doc["metadata"]["name"] == "edgeagent-hub"
                              and doc["kind"] == "ConfigMap")["data"]["config.yaml"])
    receiver = hub["receivers"]["kafka"]
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "kafka"
    assert trigger["metadata"]["consumerGroup"] == receiver["group_id"]
    assert [trigger["metadata"]["topic"]] == receiver["traces"]["topics"]
    assert trigger["metadata"]["bootstrapServers"].split(",") == receiver["brokers"]
    monitor = _one(docs, "ServiceMonitor")
    assert monitor["spec"]["endpoints"] == [{"port": "metrics", "path": "/metrics", "interval": "15s"}]


RENDERED_CONFIGS = [("default", "agent"), ("hub", "hub"), ("tail-sampling", "agent"), ("tail-sampling", "hub")]


@pytest.mark.parametrize(("values", "component"), RENDERED_CONFIGS, ids=[f"{v}:{c}" for v, c in RENDERED_CONFIGS])
def test_every_rendered_config_runs_on_the_installed_wheel_and_accepts_otlp(rendered, values, component, installed,
                                                                          request, upstream, tmp_path):
    configs = configmap_configs(f"helm {values}", yaml.safe_dump_all(rendered[values]))
    (config,) = [config for config in configs if config.name.endswith(f"edgeagent-{component}")]
    run_on_installation(config, installed / "bin" / "edgeagent", request, upstream, tmp_path)


def test_the_queue_init_container_succeeds_on_a_node_where_an_agent_ran_before(rendered, tmp_path):
    """Every new agent pod (a config change, an upgrade, a reboot) runs the init container again over
    the queue the last one left: a chown -R that cannot read the private queue directory fails it,
    and the pod never starts."""
    pod = _one(rendered["default"], "DaemonSet")["spec"]["template"]["spec"]
    uid, gid = pod["securityContext"]["runAsUser"], pod["securityContext"]["runAsGroup"]
    left_by_an_agent(tmp_path, uid, gid, 0o755)  # hostPath DirectoryOrCreate's mode
    (init,) = pod["initContainers"]
    result = run_init_container(init, "queue", tmp_path)
    assert result.returncode == 0, result.stderr
    assert {(path.stat().st_uid, path.stat().st_gid) for path in [tmp_path, *tmp_path.rglob("*")]} == {(uid, gid)}


@pytest.mark.parametrize("values", VALUES)
def test_a_start_that_compacts_a_full_queue_is_not_killed_by_the_liveness_probe(rendered, values):
    """When nothing answered the probes while compaction.on_start copied the queue, the liveness
    probe (35 s) killed an agent with a few GiB queued on a slow disk, every time it started again.
    The copy now runs on the queue's writer thread: `/health/live` answers 200 through it and
    `/health/ready` 503 until it ends; the startup probe's window still covers the slowest copy."""
    for workload, config in _workloads(rendered[values]):
        container = workload["spec"]["template"]["spec"]["containers"][0]
        assert probe_window(container) >= slowest_start(config), workload["metadata"]["name"]


def _destination_ports(config: dict, upstream: str) -> set[int]:
    """The TCP ports each exporter of a config connects to (Kafka brokers, OTLP endpoints)."""
    ports = set()
    for name, exporter in config["exporters"].items():
        if name.split("/")[0] == "kafka":
            ports |= {int(broker.rsplit(":", 1)[1]) for broker in exporter["brokers"]}
        elif "endpoint" in exporter:
            url = urlsplit(exporter["endpoint"].replace("${env:EDGEAGENT_UPSTREAM}", upstream))
            ports.add(url.port or (443 if url.scheme == "https" else 80))
    return ports


@pytest.mark.parametrize("values", VALUES)
def test_the_network_policies_let_each_tier_reach_what_its_exporters_send_to(rendered, values):
    """With the hub, the agents' egress was the hub's OTLP ports alone: agents whose config writes
    traces to Kafka (the tail-sampling example) were cut off from it, and their traces piled up on
    the nodes' disks until drop_oldest discarded them."""
    policies = {doc["metadata"]["labels"]["app.kubernetes.io/component"]: doc for doc in rendered[values]
                if doc["kind"] == "NetworkPolicy"}
    for workload, config in _workloads(rendered[values]):
        container = workload["spec"]["template"]["spec"]["containers"][0]
        upstream = next(item["value"] for item in container["env"] if item["name"] == "EDGEAGENT_UPSTREAM")
        egress = policies[workload["metadata"]["labels"]["app.kubernetes.io/component"]]["spec"]["egress"]
        allowed = {port["port"] for rule in egress for port in rule.get("ports", [])}
        assert _destination_ports(config, upstream) <= allowed, workload["metadata"]["name"]


def test_a_config_keeping_its_queue_where_otelcol_configs_do_keeps_it_on_the_queue_volume(helm):
    """otelcol configs (the deployment guides', otelcol's file_storage default) keep the queue under
    /var/lib/otelcol. Pasted into `agent.config` or `hub.config`, that directory was on the container's
    root: refused when read-only (a crash loop), else lost with the backlog on every pod restart."""
    moved = "/var/lib/otelcol/queue"
    result = subprocess.run([helm, "template", "edgeagent", str(CHART), "--namespace", "observability",
                             "--set", "hub.enabled=true",
                             "--set", f"agent.config.extensions.file_storage.directory={moved}",
                             "--set", f"hub.config.extensions.file_storage.directory={moved}"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    workloads = _workloads([doc for doc in yaml.safe_load_all(result.stdout) if doc])
    assert len(workloads) == 2
    for workload, config in workloads:
        directory = config["extensions"]["file_storage"]["directory"]
        assert directory == moved
        mounts = [mount["mountPath"] for mount in workload["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
                  if mount["name"] == "queue"]
        assert any(directory.startswith(path.rstrip("/") + "/") for path in mounts), (workload["kind"], mounts)


HUB_COLLECTOR_SEED = ROOT / "tests" / "testdata" / "seeds" / "tfo-hub-collector.yaml"


@pytest.mark.parametrize("health", ["absent", None, {"endpoint": "localhost:13133"}, {"endpoint": "0.0.0.0:13134"}],
                         ids=["no health_check", "default endpoint (localhost)", "loopback", "another port"])
def test_a_config_the_probes_cannot_reach_is_refused_at_render_naming_the_fix(helm, tmp_path, health):
    """The probes ask the pod's health port (13133) on the pod's address. A config without
    health_check (the guides' hub collector), or with otelcol's default endpoint (localhost:13133),
    rendered fine, and the liveness probe then killed every pod, over and over."""
    config = yaml.safe_load(HUB_COLLECTOR_SEED.read_text())
    if health != "absent":
        config["extensions"]["health_check"] = health  # None: `health_check:`, otelcol's defaults
        config["service"]["extensions"] = [*config["service"]["extensions"], "health_check"]
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump({"hub": {"enabled": True, "config": config}}))
    result = subprocess.run([helm, "template", "edgeagent", str(CHART), "-f", str(values)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0, "rendered a hub its probes cannot reach"
    assert "hub.config" in result.stderr and "health_check" in result.stderr and "0.0.0.0:13133" in result.stderr, \
        result.stderr


@pytest.mark.parametrize("endpoint", ["0.0.0.0:13133", ":13133", "${env:MY_POD_IP}:13133", "[::]:13133"])
def test_a_config_whose_health_check_the_probes_reach_renders(helm, tmp_path, endpoint):
    config = yaml.safe_load(HUB_COLLECTOR_SEED.read_text())
    config["extensions"]["health_check"] = {"endpoint": endpoint}
    config["service"]["extensions"] = [*config["service"]["extensions"], "health_check"]
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump({"hub": {"enabled": True, "config": config}}))
    result = subprocess.run([helm, "template", "edgeagent", str(CHART), "-f", str(values)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("tier", ["agent", "hub"])
def test_a_queue_directory_off_the_queue_volume_is_refused_at_render_naming_the_fix(helm, tier):
    """A file_storage directory outside the queue volume (/data/queue) rendered fine: on the
    read-only root the agent crash-looped on "Read-only file system"; on a writable one the backlog
    lived in the container's layer and went with every pod restart."""
    result = subprocess.run([helm, "template", "edgeagent", str(CHART), "--set", "hub.enabled=true",
                             "--set", f"{tier}.config.extensions.file_storage.directory=/data/queue"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0, "rendered a queue off the volume"
    message = result.stderr
    assert f"{tier}.config" in message and "file_storage" in message and "/data/queue" in message, message
    assert "/var/lib/edgeagent" in message, message
