"""deploy/ checked offline: every Kubernetes manifest against the pinned Kubernetes
version's schemas in strict mode (kubernetes-validate), the compose file against the
compose specification (check-jsonschema's vendored schema), and both against the registry,
so a service or consumer group added later cannot be left out of either."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from services.registry import REGISTRY

DEPLOY = Path(__file__).parents[2] / "deploy"
KUBERNETES_VERSION = "1.33.0"
"""The oldest Kubernetes the manifests promise (native gRPC probes are GA since 1.27)."""


def _documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


MANIFESTS = sorted((DEPLOY / "kubernetes").glob("*.yaml"))
RESOURCES = {
    (doc["kind"], doc["metadata"]["name"]): doc for path in MANIFESTS for doc in _documents(path)
}
CONFIG = RESOURCES["ConfigMap", "nova-config"]["data"]
COMPOSE = yaml.safe_load((DEPLOY / "compose.yaml").read_text())["services"]


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda path: path.name)
def test_each_manifest_is_valid_kubernetes_in_strict_mode(path: Path) -> None:
    for document in _documents(path):
        # Raises ValidationError (naming the field) for anything the schema does not allow.
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)


def test_the_compose_file_is_valid_against_the_compose_specification() -> None:
    checker = Path(sys.executable).parent / "check-jsonschema"
    done = subprocess.run(
        [str(checker), "--builtin-schema", "vendor.compose-spec", str(DEPLOY / "compose.yaml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ok -- validation done" in done.stdout


def _container(kind: str, name: str) -> dict[str, Any]:
    [container] = RESOURCES[kind, name]["spec"]["template"]["spec"]["containers"]
    return dict(container)


@pytest.mark.parametrize("name", sorted(REGISTRY.services))
def test_every_service_has_its_deployment_headless_service_budget_and_autoscaler(
    name: str,
) -> None:
    spec = REGISTRY.services[name]
    resource = f"nova-{name}"
    container = _container("Deployment", resource)
    assert container["args"] == ["serve", name]
    assert container["readinessProbe"]["grpc"] == {
        "port": spec.default_port,
        "service": spec.full_name,
    }
    assert container["livenessProbe"]["grpc"] == {"port": spec.default_port}
    service = RESOURCES["Service", resource]["spec"]
    assert service["clusterIP"] == "None", "headless: clients balance over every replica"
    assert [port["port"] for port in service["ports"]] == [spec.default_port]
    assert ("PodDisruptionBudget", resource) in RESOURCES
    assert RESOURCES["HorizontalPodAutoscaler", resource]["spec"]["minReplicas"] >= 2
    address = f"dns:///{resource}.nova.svc.cluster.local:{spec.default_port}"
    assert CONFIG[f"NOVA_{name.upper()}_ADDRESS"] == address
    assert COMPOSE[name]["command"] == ["serve", name]
    assert COMPOSE[name]["environment"][f"NOVA_{name.upper()}_ADDRESS"] == (
        f"{name}:{spec.default_port}"
    )


@pytest.mark.parametrize("group", sorted(REGISTRY.consumers))
def test_every_consumer_group_runs_as_its_own_deployment(group: str) -> None:
    command = ["events", "consume", "--group", group]
    assert _container("Deployment", f"nova-consumer-{group}")["args"] == command
    assert COMPOSE[f"consumer-{group}"]["command"] == command


def test_the_relay_gateway_and_migration_are_there() -> None:
    assert _container("Deployment", "nova-relay")["args"] == ["relay"]
    assert _container("Deployment", "nova-gateway")["args"] == ["serve", "gateway"]
    assert RESOURCES["Service", "nova-gateway"]["spec"].get("clusterIP") != "None"
    [job] = RESOURCES["Job", "nova-migrate"]["spec"]["template"]["spec"]["containers"]
    assert job["args"] == ["migrate"]


def test_pods_outlast_the_drain_run_unprivileged_and_are_bounded() -> None:
    drain = float(CONFIG["NOVA_DRAIN_DELAY_SECONDS"]) + float(CONFIG["NOVA_SHUTDOWN_GRACE_SECONDS"])
    deployments = [doc for (kind, _), doc in RESOURCES.items() if kind == "Deployment"]
    expected = len(REGISTRY.services) + len(REGISTRY.consumers) + 2  # relay, gateway
    assert len(deployments) == expected
    for deployment in deployments:
        pod = deployment["spec"]["template"]["spec"]
        name = deployment["metadata"]["name"]
        assert pod["terminationGracePeriodSeconds"] > drain, name
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        [container] = pod["containers"]
        assert container["securityContext"]["readOnlyRootFilesystem"] is True, name
        assert container["securityContext"]["allowPrivilegeEscalation"] is False, name
        assert {"cpu", "memory"} <= set(container["resources"]["requests"]), name
        assert {"cpu", "memory"} <= set(container["resources"]["limits"]), name
        assert [
            ref.get("configMapRef", ref.get("secretRef"))["name"] for ref in container["envFrom"]
        ] == ["nova-config", "nova-secrets"], name
