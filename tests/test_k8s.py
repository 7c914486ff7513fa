"""deploy/k8s: the kustomize overlays rendered offline, validated, and held to the issue's rules.

The rendered files are what deploy/k8s/render.py writes (a subset of kustomize, in Python);
where kubectl is installed, ``kubectl kustomize`` (kustomize v5, offline) must give the same
resources. Every rendered resource is validated against the Kubernetes API schemas shipped by
kubernetes-validate (strict: an unknown field is an error). No cluster is needed, none is used.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from maillage.common import migrate
from maillage.common.catalog import catalog
from maillage.notifications import delivery

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "deploy" / "k8s"
SERVICES = ("registry", "cordees", "stages3e", "funding", "notifications")
KUBERNETES_VERSION = "1.32"
# A stopping pod finishes a webhook attempt in flight (at most delivery.TOTAL_TIMEOUT) and the
# consumers' batch in hand, after the preStop pause: the grace period must cover all three.
PRESTOP_S = 5
SHUTDOWN_S = PRESTOP_S + delivery.TOTAL_TIMEOUT + 15

Resource = dict[str, Any]


def _renderer() -> Any:
    spec = importlib.util.spec_from_file_location("k8s_render", K8S / "render.py")
    assert spec
    assert spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def rendered(overlay: str) -> list[Resource]:
    text = (K8S / "rendered" / f"{overlay}.yaml").read_text(encoding="utf-8")
    return [document for document in yaml.safe_load_all(text) if document]


def by_key(resources: list[Resource]) -> dict[tuple[str, str], Resource]:
    return {(r["kind"], r["metadata"]["name"]): r for r in resources}


def pod_spec(resource: Resource) -> dict[str, Any]:
    spec: dict[str, Any] = resource["spec"]["template"]["spec"]
    return spec


OVERLAYS = pytest.mark.parametrize("overlay", ["dev", "prod"])


@OVERLAYS
def test_rendered_files_are_what_the_overlays_give(overlay: str) -> None:
    text = (K8S / "rendered" / f"{overlay}.yaml").read_text(encoding="utf-8")
    assert _renderer().render(overlay) == text, "run .venv/bin/python deploy/k8s/render.py"


@OVERLAYS
@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (kustomize) not installed")
def test_kustomize_renders_the_same_resources(overlay: str) -> None:
    output = subprocess.run(
        ["kubectl", "kustomize", str(K8S / "overlays" / overlay)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    real = [document for document in yaml.safe_load_all(output) if document]
    assert by_key(real) == by_key(rendered(overlay))


@OVERLAYS
def test_every_resource_is_valid_against_the_kubernetes_schemas(overlay: str) -> None:
    for resource in rendered(overlay):
        kubernetes_validate.validate(resource, KUBERNETES_VERSION, strict=True)


def test_the_validator_refuses_a_broken_resource() -> None:
    deployment = by_key(rendered("prod"))[("Deployment", "cordees")]
    deployment["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGet"]["port"] = [
        8000
    ]
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


def test_the_renderer_refuses_what_it_does_not_implement(tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text("resources: []\nnamePrefix: x-\n")
    with pytest.raises(ValueError, match="namePrefix"):
        _renderer().build(tmp_path)


@OVERLAYS
def test_each_service_has_its_deployment_service_job_hpa_pdb_and_policy(overlay: str) -> None:
    resources = by_key(rendered(overlay))
    for service in SERVICES:
        for kind in (
            "Deployment",
            "Service",
            "HorizontalPodAutoscaler",
            "PodDisruptionBudget",
            "NetworkPolicy",
        ):
            assert (kind, service) in resources, f"{overlay}: no {kind} {service}"
        assert ("Job", f"{service}-migrate") in resources
        assert ("ConfigMap", f"{service}-config") in resources
    assert not [r for r in resources.values() if r["kind"] == "Secret"], "no secret committed"


@OVERLAYS
def test_pods_are_locked_down_and_probed(overlay: str) -> None:
    for resource in rendered(overlay):
        if resource["kind"] not in ("Deployment", "Job"):
            continue
        pod = pod_spec(resource)
        where = f"{overlay} {resource['kind']} {resource['metadata']['name']}"
        assert pod["securityContext"]["runAsNonRoot"] is True, where
        assert pod["automountServiceAccountToken"] is False, where
        for container in pod["containers"]:
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True, where
            assert security["allowPrivilegeEscalation"] is False, where
            assert security["capabilities"]["drop"] == ["ALL"], where
            assert {"cpu", "memory"} <= set(container["resources"]["requests"]), where
            assert {"cpu", "memory"} <= set(container["resources"]["limits"]), where
            for variable in container.get("env", []):
                if variable["name"].endswith(("_DATABASE_URL", "_SECRET", "_KEY", "_PASSWORD")):
                    assert "secretKeyRef" in variable["valueFrom"], f"{where}: {variable}"
            if resource["kind"] == "Deployment":
                assert container["livenessProbe"]["httpGet"]["path"] == "/livez", where
                assert container["readinessProbe"]["httpGet"]["path"] == "/readyz", where
        if resource["kind"] == "Deployment":
            assert pod["terminationGracePeriodSeconds"] > SHUTDOWN_S, where
            assert container["lifecycle"]["preStop"]["exec"]["command"] == [
                "sleep",
                str(PRESTOP_S),
            ]
            service = resource["metadata"]["name"]
            settings = by_key(rendered(overlay))[("ConfigMap", f"{service}-config")]["data"]
            if service != "console":  # the console has no database (decision 53)
                assert settings[f"{service.upper()}_MIGRATE_ON_START"] == "false", where
        else:
            assert pod["containers"][0]["command"] == ["python", "-m", "maillage.common.migrate"]


@OVERLAYS
def test_the_first_phase_of_a_release_has_what_the_migration_jobs_need(overlay: str) -> None:
    """docs/operations.md applies ``-l app.kubernetes.io/component!=api`` first, waits for the
    Jobs, then applies everything: the first phase must hold the Jobs and all they use."""
    first = [
        resource
        for resource in rendered(overlay)
        if resource["metadata"].get("labels", {}).get("app.kubernetes.io/component") != "api"
    ]
    kinds = {resource["kind"] for resource in first}
    assert kinds == {"Namespace", "ServiceAccount", "ConfigMap", "NetworkPolicy", "Job"}
    assert len([r for r in first if r["kind"] == "Job"]) == len(SERVICES)
    # One per service, the console's, the default deny and the dependencies'.
    assert len([r for r in first if r["kind"] == "NetworkPolicy"]) == len(SERVICES) + 3


@OVERLAYS
def test_replicas_never_exceed_the_partitions_a_group_can_use(overlay: str) -> None:
    partitions = min(topic.partitions for topic in catalog.topics.values())
    for resource in rendered(overlay):
        if resource["kind"] == "HorizontalPodAutoscaler":
            assert resource["spec"]["maxReplicas"] <= partitions
            assert resource["spec"]["minReplicas"] >= 1


@OVERLAYS
def test_network_policies_open_only_what_each_service_needs(overlay: str) -> None:
    resources = by_key(rendered(overlay))
    deny = resources[("NetworkPolicy", "default-deny")]["spec"]
    assert deny == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    dependencies = resources[("NetworkPolicy", "maillage-dependencies")]["spec"]
    ports = {port["port"] for rule in dependencies["egress"] for port in rule["ports"]}
    assert ports == {9092, 5432}  # Kafka and PostgreSQL, named by the overlay
    for service in SERVICES:
        egress = resources[("NetworkPolicy", service)]["spec"]["egress"]
        outside = [rule for rule in egress if any("ipBlock" in peer for peer in rule.get("to", []))]
        jwks = [
            rule
            for rule in egress
            if any(
                peer.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/name")
                == "registry"
                for peer in rule.get("to", [])
            )
        ]
        assert bool(outside) == (service == "notifications"), service
        if outside:
            assert {port["port"] for port in outside[0]["ports"]} == {443, 587}
            assert "10.0.0.0/8" in outside[0]["to"][0]["ipBlock"]["except"]
        assert bool(jwks) == (service != "registry"), service


@OVERLAYS
def test_overlays_name_their_kafka_and_namespace(overlay: str) -> None:
    resources = rendered(overlay)
    namespaces = [r["metadata"]["name"] for r in resources if r["kind"] == "Namespace"]
    assert len(namespaces) == 1
    assert {r["metadata"].get("namespace") for r in resources if r["kind"] != "Namespace"} == {
        namespaces[0]
    }
    common = by_key(resources)[("ConfigMap", "maillage-common")]["data"]
    assert "kafka-bootstrap" in common["KAFKA_BOOTSTRAP_SERVERS"]
    assert common["KAFKA_BOOTSTRAP_SERVERS"] != "kafka-bootstrap:9092"  # the base's placeholder


def test_the_migration_job_command_migrates_a_service(database_url: str) -> None:
    environment = {"MAILLAGE_SERVICE": "cordees", "CORDEES_DATABASE_URL": database_url}
    assert migrate.main(environment) == 0
    assert migrate.main(environment) == 0  # up to date: nothing to do, still success
    assert migrate.main({"MAILLAGE_SERVICE": "nope"}) == 1
    assert migrate.main({"MAILLAGE_SERVICE": "cordees"}) == 1  # no database URL


@OVERLAYS
def test_the_staff_console_runs_one_replica_without_database_and_reaches_the_services(
    overlay: str,
) -> None:
    resources = by_key(rendered(overlay))
    for kind in ("Deployment", "Service", "PodDisruptionBudget", "NetworkPolicy"):
        assert (kind, "console") in resources, f"{overlay}: no {kind} console"
    assert ("Job", "console-migrate") not in resources
    assert ("HorizontalPodAutoscaler", "console") not in resources
    deployment = resources[("Deployment", "console")]
    assert deployment["spec"]["replicas"] == 1  # its sessions live in the process
    names = {v["name"] for v in pod_spec(deployment)["containers"][0].get("env", [])}
    assert not [name for name in names if "DATABASE" in name or "KAFKA" in name]
    settings = resources[("ConfigMap", "console-config")]["data"]
    assert settings["CONSOLE_FUNDING_URL"] == "http://funding"
    for service in SERVICES:  # every service admits the console's calls
        ingress = resources[("NetworkPolicy", service)]["spec"]["ingress"]
        peers = [peer for rule in ingress for peer in rule.get("from", [])]
        assert {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "console"}}} in peers
