"""The Kubernetes manifests: every overlay renders, every object is valid against the Kubernetes
API schemas, every container is probed, sized and unprivileged, and every service is wired the
way its code expects (settings, ports, the broker, keys, volumes, consumers, RBAC).

Expectations come from the code wherever possible: the settings classes say which
``INFRAFLOW_*`` variables exist, ``infraflow.common.streams`` names the durable consumers the
autoscalers read, the catalog's executors need their agents.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from unittest import mock
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
from pydantic import BaseModel
from pydantic_settings import BaseSettings

from infraflow.bmc_agent.settings import BmcAgentSettings
from infraflow.common import streams
from infraflow.common.settings import ServiceSettings
from infraflow.common.vault import Vault
from infraflow.devtools.nats_server import nats_server_binary
from infraflow.gateway.auth import JwtVerifier
from infraflow.gateway.settings import GatewaySettings
from infraflow.k8s_agent.settings import K8sAgentSettings
from infraflow.orchestrator.settings import OrchestratorSettings
from infraflow.projector.settings import ProjectorSettings

from .conftest import Obj, Rendered, containers, pod_spec, selector_matches

# The oldest Kubernetes the manifests support (documented in docs/operations.md) and the newest
# schemas kubernetes-validate ships.
KUBERNETES_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())

SETTINGS: Mapping[str, type[ServiceSettings]] = {
    "gateway": GatewaySettings,
    "orchestrator": OrchestratorSettings,
    "bmc-agent": BmcAgentSettings,
    "k8s-agent": K8sAgentSettings,
    "projector": ProjectorSettings,
}
HTTP_SERVICES = {"gateway"}  # the rest serve /healthz, /readyz, /metrics on the ops port
STREAM_REPLICAS = {"dev": 1, "production": 3}
SITES = {"dev": {"default"}, "production": {"dc1", "dc2"}}
POD_NAME = "pod-0"


# ---- schemas -------------------------------------------------------------------------------


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_object_is_valid_against_the_kubernetes_schemas(
    rendered: Rendered, version: str
) -> None:
    assert len(rendered.objects) > 30
    errors = []
    for obj in rendered.objects:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            errors.append(f"{obj['kind']}/{obj['metadata']['name']}: {exc.message}")
    assert not errors, "\n".join(errors)


def test_the_validator_rejects_what_kubernetes_would() -> None:
    """The schema check is real: an unknown field or a wrong type is an error."""
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "x"},
        "spec": {
            "selector": {"matchLabels": {"a": "b"}},
            "template": {
                "metadata": {"labels": {"a": "b"}},
                "spec": {"containers": [{"name": "c", "image": "i", "ports": "8080"}]},
            },
        },
    }
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[0], strict=True)
    deployment["spec"]["template"]["spec"]["containers"][0]["ports"] = []  # type: ignore[index]
    deployment["spec"]["replica"] = 2  # type: ignore[index]
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[0], strict=True)


# ---- every container -----------------------------------------------------------------------


def test_every_container_is_probed_sized_and_unprivileged(rendered: Rendered) -> None:
    problems: list[str] = []
    for workload in rendered.workloads():
        name = workload["metadata"]["name"]
        pod = pod_spec(workload)
        pod_sc = pod.get("securityContext") or {}
        for c in containers(workload):
            where = f"{name}/{c['name']}"
            sc = {**pod_sc, **(c.get("securityContext") or {})}
            ports = {p.get("name"): p["containerPort"] for p in c.get("ports") or []}
            for probe in ("livenessProbe", "readinessProbe"):
                spec = c.get(probe)
                if not spec:
                    problems.append(f"{where}: no {probe}")
                    continue
                port = (spec.get("httpGet") or spec.get("tcpSocket") or {}).get("port")
                if port is not None and port not in ports and port not in ports.values():
                    problems.append(f"{where}: {probe} port {port} is not a container port")
            resources = c.get("resources") or {}
            for part in ("requests", "limits"):
                for res in ("cpu", "memory"):
                    if res not in (resources.get(part) or {}):
                        problems.append(f"{where}: no {part}.{res}")
            for res in ("cpu", "memory"):
                req = (resources.get("requests") or {}).get(res)
                lim = (resources.get("limits") or {}).get(res)
                if req and lim and _quantity(req) > _quantity(lim):
                    problems.append(f"{where}: {res} request {req} above its limit {lim}")
            if sc.get("runAsNonRoot") is not True:
                problems.append(f"{where}: runAsNonRoot is not true")
            if not sc.get("runAsUser"):
                problems.append(f"{where}: no non-zero runAsUser")
            if sc.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{where}: privilege escalation allowed")
            if sc.get("readOnlyRootFilesystem") is not True:
                problems.append(f"{where}: writable root filesystem")
            if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
                problems.append(f"{where}: capabilities not dropped")
            if sc.get("privileged"):
                problems.append(f"{where}: privileged")
        if (pod_sc.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
            problems.append(f"{name}: no RuntimeDefault seccomp profile")
    assert not problems, "\n".join(problems)


def test_every_workload_has_a_disruption_budget_and_the_services_an_autoscaler(
    rendered: Rendered,
) -> None:
    pdbs = rendered.of("PodDisruptionBudget")
    hpas = {h["spec"]["scaleTargetRef"]["name"]: h for h in rendered.of("HorizontalPodAutoscaler")}
    for workload in rendered.workloads():
        name = workload["metadata"]["name"]
        labels = workload["spec"]["template"]["metadata"]["labels"]
        covering = [
            p for p in pdbs if selector_matches(p["spec"]["selector"]["matchLabels"], labels)
        ]
        assert len(covering) == 1, f"{name}: {len(covering)} disruption budgets"
        # a budget never covers the pods of another workload
        for other in rendered.workloads():
            if other is not workload:
                other_labels = other["spec"]["template"]["metadata"]["labels"]
                sel = covering[0]["spec"]["selector"]["matchLabels"]
                assert not selector_matches(sel, other_labels), f"{name}'s PDB selects {other}"
        if workload["kind"] == "Deployment":
            hpa = hpas.get(name)
            assert hpa is not None, f"{name} has no HorizontalPodAutoscaler"
            assert hpa["spec"]["scaleTargetRef"]["kind"] == "Deployment"
            assert hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    assert set(hpas) == {d["metadata"]["name"] for d in rendered.of("Deployment")}


def test_autoscalers_read_the_metrics_the_services_export(rendered: Rendered) -> None:
    """Gateway on CPU; orchestrator and agents on their durable consumers' backlog (the names
    the code gives them); the projector on its lag."""
    hpas = {h["metadata"]["name"]: h for h in rendered.of("HorizontalPodAutoscaler")}
    gateway = [m["type"] for m in hpas["gateway"]["spec"]["metrics"]]
    assert gateway == ["Resource"]
    assert _external(hpas["orchestrator"]) == {
        "infraflow_consumer_pending_messages": {c.durable for c in streams.CORE_CONSUMERS}
    }
    assert _external(hpas["projector"]) == {"infraflow_projector_lag_messages": set()}
    assert _external(hpas["k8s-agent"]) == {
        "infraflow_consumer_pending_messages": {streams.agent_consumer("k8s", "default").durable}
    }
    for site in SITES[rendered.overlay]:
        assert _external(hpas[f"bmc-agent-{site}"]) == {
            "infraflow_consumer_pending_messages": {streams.agent_consumer("bmc", site).durable}
        }


# ---- wiring ------------------------------------------------------------------------------


def test_the_expected_services_are_deployed(rendered: Rendered) -> None:
    deployments = {d["metadata"]["name"] for d in rendered.of("Deployment")}
    sites = SITES[rendered.overlay]
    assert deployments == {"gateway", "orchestrator", "projector", "k8s-agent"} | {
        f"bmc-agent-{s}" for s in sites
    }
    nats = rendered.get("StatefulSet", "nats")
    assert nats["spec"]["replicas"] == 3
    for d in rendered.of("Deployment"):
        service = _service_of(d)
        image = d["spec"]["template"]["spec"]["containers"][0]["image"]
        # the image is built from the Containerfile target named after the service
        assert image.split("/")[-1].split(":")[0] == service, image


@pytest.mark.parametrize("service", sorted(SETTINGS))
def test_each_service_gets_the_settings_its_code_reads(
    rendered: Rendered, service: str, tmp_path: Path
) -> None:
    for deployment in _deployments_of(rendered, service):
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        env = _environment(rendered, deployment, container)
        known = settings_env_names(SETTINGS[service])
        unknown = {k for k in env if k.startswith("INFRAFLOW_")} - known
        assert not unknown, f"{service}: variables its settings do not read: {sorted(unknown)}"
        settings = _load(SETTINGS[service], env)
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}

        # the broker: every URL is a Service in front of the NATS pods, on their client port
        assert settings.nats.replicas == STREAM_REPLICAS[rendered.overlay]
        for url in settings.nats.servers:
            _check_nats_url(rendered, url)

        # health and metrics where the probes and the scrape annotations look
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        if service in HTTP_SERVICES:
            assert isinstance(settings, GatewaySettings)
            assert settings.http.host == "0.0.0.0"
            assert ports["http"] == settings.http.port
            served = "http"
        else:
            assert settings.ops_host == "0.0.0.0"
            assert settings.ops_port == ports["ops"]
            served = "ops"
        assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": served}
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": served}
        assert annotations["prometheus.io/scrape"] == "true"
        assert int(annotations["prometheus.io/port"]) == ports[served]
        assert annotations["prometheus.io/path"] == "/metrics"

        match settings:
            case GatewaySettings():
                _check_gateway(rendered, deployment, settings, tmp_path)
            case BmcAgentSettings():
                site = deployment["metadata"]["labels"]["infraflow.io/site"]
                assert settings.site_list == [site]
                Vault(settings.credential_keys)  # the keys open sealed credentials
                _check_callback_url(rendered, getattr(settings, "callback_url", None))
            case K8sAgentSettings():
                assert settings.kubeconfig is None  # the in-cluster service account
                _check_k8s_agent_identity(rendered, deployment)
            case ProjectorSettings():
                _check_projector_volume(deployment, settings)
            case _:
                pass


def test_streams_are_r3_in_production_and_r1_in_dev(rendered: Rendered) -> None:
    config = rendered.config_data(
        "ConfigMap", _generated(rendered, "ConfigMap", "infraflow-config")
    )
    assert config["INFRAFLOW_NATS__REPLICAS"] == str(STREAM_REPLICAS[rendered.overlay])
    with mock.patch.dict(os.environ, config, clear=True):
        topology = OrchestratorSettings().nats.topology()
    assert {c.num_replicas for c in streams.stream_configs(topology)} == {
        STREAM_REPLICAS[rendered.overlay]
    }
    assert {k.replicas for k in streams.kv_configs(topology)} == {STREAM_REPLICAS[rendered.overlay]}


def test_nats_is_a_three_node_jetstream_cluster_with_routes_and_volumes(
    rendered: Rendered, tmp_path: Path
) -> None:
    sts = rendered.get("StatefulSet", "nats")
    headless = rendered.get("Service", sts["spec"]["serviceName"])
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["publishNotReadyAddresses"] is True
    assert sts["spec"]["podManagementPolicy"] == "Parallel"
    (claim,) = sts["spec"]["volumeClaimTemplates"]
    container = sts["spec"]["template"]["spec"]["containers"][0]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    config_volume = next(
        v for v in sts["spec"]["template"]["spec"]["volumes"] if v["name"] == "config"
    )
    conf = rendered.config_data("ConfigMap", config_volume["configMap"]["name"])["nats.conf"]

    store = re.search(r"store_dir:\s*(\S+)", conf)
    assert store
    assert store.group(1).startswith(mounts[claim["metadata"]["name"]] + "/")
    routes = re.findall(r"nats://([\w.-]+):(\d+)", conf.split("routes:")[1])
    replicas = sts["spec"]["replicas"]
    assert [host for host, _ in routes] == [
        f"nats-{i}.{headless['metadata']['name']}" for i in range(replicas)
    ]
    cluster_port = {p["name"]: p["containerPort"] for p in container["ports"]}["cluster"]
    assert {int(port) for _, port in routes} == {cluster_port}

    # the configuration is one nats-server accepts, with the pod's environment
    env = {e["name"]: e.get("value", POD_NAME) for e in container["env"]}
    local = conf.replace("/data/", f"{tmp_path}/data/").replace("/var/run/nats/", f"{tmp_path}/")
    (tmp_path / "nats.conf").write_text(local)
    check = subprocess.run(
        [nats_server_binary(), "-t", "-c", str(tmp_path / "nats.conf")],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=30,
        check=False,
    )
    assert check.returncode == 0, check.stdout + check.stderr


def test_the_k8s_agent_may_touch_cluster_deployments_and_virtual_machines_only(
    rendered: Rendered,
) -> None:
    allowed = {
        ("k0rdent.mirantis.com", "clusterdeployments"),
        ("k0rdent.mirantis.com", "clusterdeployments/status"),
        ("kubevirt.io", "virtualmachines"),
        ("kubevirt.io", "virtualmachines/status"),
        ("subresources.kubevirt.io", "virtualmachines/start"),
        ("subresources.kubevirt.io", "virtualmachines/stop"),
        ("subresources.kubevirt.io", "virtualmachines/restart"),
    }
    roles = rendered.of("ClusterRole") + rendered.of("Role")
    assert [r["metadata"]["name"] for r in roles] == ["infraflow-k8s-agent"]
    granted = set()
    for rule in roles[0]["rules"]:
        assert "*" not in rule["verbs"]
        assert "*" not in rule["resources"]
        assert not rule.get("nonResourceURLs")
        granted |= {(g, r) for g in rule["apiGroups"] for r in rule["resources"]}
    assert granted <= allowed
    assert {r for _, r in granted} >= {"clusterdeployments", "virtualmachines"}
    # no other workload gets an API token
    for workload in rendered.workloads():
        automount = pod_spec(workload).get("automountServiceAccountToken")
        if workload["metadata"]["name"] == "k8s-agent":
            assert automount is True
        else:
            assert automount is False, workload["metadata"]["name"]


def test_network_policies_deny_by_default_and_let_every_service_reach_nats(
    rendered: Rendered,
) -> None:
    policies = {p["metadata"]["name"]: p for p in rendered.of("NetworkPolicy")}
    deny = policies["default-deny"]["spec"]
    assert deny["podSelector"] == {}
    assert set(deny["policyTypes"]) == {"Ingress", "Egress"}
    assert "allow-dns" in policies
    clients = policies["nats-clients-to-nats"]["spec"]["podSelector"]["matchLabels"]
    for d in rendered.of("Deployment"):
        labels = d["spec"]["template"]["metadata"]["labels"]
        assert selector_matches(clients, labels), f"{d['metadata']['name']} cannot reach NATS"
    nats_ingress = policies["nats"]["spec"]["ingress"]
    client_rule = next(r for r in nats_ingress if r["ports"][0]["port"] == 4222)
    assert client_rule["from"][0]["podSelector"]["matchLabels"] == clients
    gateway_in = policies["gateway-api"]["spec"]
    assert gateway_in["ingress"][0]["ports"][0]["port"] == 8080
    for site in SITES[rendered.overlay]:
        bmc = policies[f"bmc-agent-to-bmcs-{site}"]["spec"]["podSelector"]["matchLabels"]
        assert bmc["infraflow.io/site"] == site


def test_keys_come_from_secrets_and_never_from_config_maps(rendered: Rendered) -> None:
    secret_names = {"infraflow-jwt", "infraflow-credential-keys"}
    generated = {_base_name(s["metadata"]["name"]) for s in rendered.of("Secret")}
    assert generated == secret_names
    for cm in rendered.of("ConfigMap"):
        for key, value in (cm.get("data") or {}).items():
            assert not re.search(r"KEY|SECRET|PASSWORD|TOKEN", key), f"{key} in a ConfigMap"
            assert "PRIVATE KEY" not in value


def test_the_production_overlay_needs_the_keys_from_the_pipeline(kustomize_tree: Path) -> None:
    """Without the key files the production overlay refuses to render (no silent defaults)."""
    from .conftest import KUBERNETES, kubectl

    out = subprocess.run(
        [kubectl(), "kustomize", str(KUBERNETES / "overlays" / "production")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if (KUBERNETES / "overlays" / "production" / "secrets" / "credential-keys").exists():
        pytest.skip("keys are provisioned in this checkout")
    assert out.returncode != 0
    assert "secrets/" in out.stderr


# ---- helpers -------------------------------------------------------------------------------


def settings_env_names(cls: type[BaseSettings]) -> set[str]:
    """Every environment variable a settings class reads (prefix, nested with ``__``)."""
    prefix = str(cls.model_config.get("env_prefix", "")).upper()
    delimiter = str(cls.model_config.get("env_nested_delimiter") or "__")
    names: set[str] = set()
    for field_name, field in cls.model_fields.items():
        names.add(f"{prefix}{field_name.upper()}")
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            for sub in annotation.model_fields:
                names.add(f"{prefix}{field_name.upper()}{delimiter}{sub.upper()}")
    return names


def _load(cls: type[ServiceSettings], env: Mapping[str, str]) -> Any:
    with mock.patch.dict(os.environ, dict(env), clear=True):
        return cls()


def _service_of(workload: Obj) -> str:
    return str(workload["metadata"]["labels"]["app.kubernetes.io/name"])


def _deployments_of(rendered: Rendered, service: str) -> list[Obj]:
    found = [d for d in rendered.of("Deployment") if _service_of(d) == service]
    assert found, f"{rendered.overlay}: no Deployment of {service}"
    return found


def _base_name(generated: str) -> str:
    """``infraflow-config-4g6995k48k`` -> ``infraflow-config`` (kustomize's hash suffix)."""
    return re.sub(r"-[a-z0-9]{10}$", "", generated)


def _generated(rendered: Rendered, kind: str, base: str) -> str:
    (name,) = [
        o["metadata"]["name"]
        for o in rendered.of(kind)
        if _base_name(o["metadata"]["name"]) == base
    ]
    return str(name)


def _environment(rendered: Rendered, deployment: Obj, container: Obj) -> dict[str, str]:
    """The container's environment as the kubelet would build it; every reference must
    resolve to an object (and key) of the same render."""
    env: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        if "configMapRef" in source:
            env.update(rendered.config_data("ConfigMap", source["configMapRef"]["name"]))
        if "secretRef" in source:
            env.update(rendered.config_data("Secret", source["secretRef"]["name"]))
    for item in container.get("env") or []:
        if "value" in item:
            env[item["name"]] = str(item["value"])
            continue
        ref = item["valueFrom"]
        if "secretKeyRef" in ref:
            data = rendered.config_data("Secret", ref["secretKeyRef"]["name"])
            assert ref["secretKeyRef"]["key"] in data, f"{item['name']}: no such key"
            env[item["name"]] = data[ref["secretKeyRef"]["key"]]
        elif "configMapKeyRef" in ref:
            data = rendered.config_data("ConfigMap", ref["configMapKeyRef"]["name"])
            env[item["name"]] = data[ref["configMapKeyRef"]["key"]]
        elif "fieldRef" in ref:
            assert ref["fieldRef"]["fieldPath"] == "metadata.name"
            env[item["name"]] = POD_NAME
        else:
            raise AssertionError(f"unexpected reference {ref}")
    # volumes that name ConfigMaps or Secrets must exist too
    for volume in pod_spec(deployment).get("volumes") or []:
        if "secret" in volume and not volume["secret"].get("optional"):
            rendered.get("Secret", volume["secret"]["secretName"])
        if "configMap" in volume:
            rendered.get("ConfigMap", volume["configMap"]["name"])
    return env


def _check_nats_url(rendered: Rendered, url: str) -> None:
    parts = urlsplit(url)
    assert parts.scheme == "nats", url
    assert parts.hostname, url
    assert parts.port, url
    # "nats", "nats.<namespace>" or "nats.<namespace>.svc...": the Service's own name first
    service = rendered.get("Service", parts.hostname.split(".")[0])
    nats_pods = rendered.get("StatefulSet", "nats")["spec"]["template"]
    assert selector_matches(service["spec"]["selector"], nats_pods["metadata"]["labels"])
    port = next(p for p in service["spec"]["ports"] if p["port"] == parts.port)
    container_ports = {
        p["name"]: p["containerPort"] for p in nats_pods["spec"]["containers"][0]["ports"]
    }
    assert container_ports[port["targetPort"]] == 4222


def _check_gateway(
    rendered: Rendered, deployment: Obj, settings: GatewaySettings, tmp_path: Path
) -> None:
    service = rendered.get("Service", "gateway")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert selector_matches(service["spec"]["selector"], labels)
    assert [p["targetPort"] for p in service["spec"]["ports"]] == ["http"]
    Vault(settings.credential_key_list)
    auth = settings.auth
    if auth.jwt_public_key_file:
        # the key file is where a Secret volume puts it: verify with that file's content
        path = Path(auth.jwt_public_key_file)
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        mount = next(m for m in container["volumeMounts"] if Path(m["mountPath"]) == path.parent)
        volume = next(v for v in pod_spec(deployment)["volumes"] if v["name"] == mount["name"])
        data = rendered.config_data("Secret", volume["secret"]["secretName"])
        local = tmp_path / path.name
        local.write_text(data[path.name])
        auth = auth.model_copy(update={"jwt_public_key_file": str(local)})
    JwtVerifier(auth)  # raises unless a usable key is configured


def _check_callback_url(rendered: Rendered, url: str | None) -> None:
    """The installers must reach the gateway at this URL: never loopback; a bare host name is
    the gateway's in-cluster Service."""
    if url is None:
        return  # this agent has no provisioning callback setting
    host = urlsplit(url).hostname or ""
    assert host not in {"127.0.0.1", "localhost", "::1"}, url
    if "." not in host:
        assert rendered.get("Service", host)["metadata"]["name"] == "gateway"


def _check_k8s_agent_identity(rendered: Rendered, deployment: Obj) -> None:
    account = pod_spec(deployment)["serviceAccountName"]
    rendered.get("ServiceAccount", account)
    namespace = rendered.of("Namespace")[0]["metadata"]["name"]
    (binding,) = rendered.of("ClusterRoleBinding")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account, "namespace": namespace}
    ]
    assert binding["roleRef"]["name"] == "infraflow-k8s-agent"


def _check_projector_volume(deployment: Obj, settings: ProjectorSettings) -> None:
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    directory = Path(settings.db_path).parent
    mount = next(m for m in container["volumeMounts"] if Path(m["mountPath"]) == directory)
    assert not mount.get("readOnly")
    volume = next(v for v in pod_spec(deployment)["volumes"] if v["name"] == mount["name"])
    assert "ephemeral" in volume or "persistentVolumeClaim" in volume, volume
    assert settings.replica_name == POD_NAME  # every replica names its own consumer


def _external(hpa: Obj) -> dict[str, set[str]]:
    """External metrics of an HPA: metric name -> the consumers its selector names."""
    out: dict[str, set[str]] = {}
    for metric in hpa["spec"]["metrics"]:
        if metric["type"] != "External":
            continue
        spec = metric["external"]["metric"]
        selector = spec.get("selector") or {}
        consumers = set()
        if "consumer" in (selector.get("matchLabels") or {}):
            consumers.add(selector["matchLabels"]["consumer"])
        for expr in selector.get("matchExpressions") or []:
            if expr["key"] == "consumer" and expr["operator"] == "In":
                consumers |= set(expr["values"])
        out[spec["name"]] = consumers
    return out


_UNITS = {
    "m": 1e-3,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "k": 1e3,
    "M": 1e6,
    "G": 1e9,
}


def _quantity(value: str | int | float) -> float:
    text = str(value)
    for suffix, factor in sorted(_UNITS.items(), key=lambda kv: -len(kv[0])):
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * factor
    return float(text)
