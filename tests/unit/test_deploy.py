"""The deployment files: Kubernetes manifests valid against the Kubernetes schemas (offline), image basics."""
from __future__ import annotations

import copy
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from tests.conftest import REPO

MANIFESTS = sorted((REPO / "deploy" / "k8s").glob("*.yaml"))
K8S_VERSION = "1.31.0"


def resources(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifests_are_valid_kubernetes(path: Path) -> None:
    for resource in resources(path):
        kubernetes_validate.validate(resource, K8S_VERSION, strict=True)


def test_the_validation_catches_a_broken_manifest() -> None:
    (statefulset,) = [r for p in MANIFESTS for r in resources(p) if r["kind"] == "StatefulSet"]
    broken = copy.deepcopy(statefulset)
    broken["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "web"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


def test_the_worker_pods_have_probes_state_and_a_grace_period() -> None:
    (statefulset,) = [r for p in MANIFESTS for r in resources(p) if r["kind"] == "StatefulSet"]
    pod = statefulset["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/live"
    assert {m["mountPath"] for m in container["volumeMounts"]} >= {"/state", "/model"}
    assert "POD_NAME" in {e["name"] for e in container["env"]}
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["terminationGracePeriodSeconds"] >= 30
    kinds = {r["kind"] for p in MANIFESTS for r in resources(p)}
    assert {"StatefulSet", "Service", "PodDisruptionBudget"} <= kinds


def test_the_image_runs_as_a_user_with_a_health_check_and_a_small_context() -> None:
    dockerfile = (REPO / "deploy" / "Dockerfile").read_text()
    assert "\nUSER worker\n" in dockerfile and "HEALTHCHECK" in dockerfile and "EXPOSE 6066" in dockerfile
    assert "-c constraints.txt" in dockerfile
    ignored = (REPO / ".dockerignore").read_text().split()
    assert {".venv", ".state", "artifacts", "tests", "benchmarks"} <= set(ignored)


def test_the_nightly_retrain_trains_before_the_day_it_is_judged_on() -> None:
    (cronjob,) = [r for p in MANIFESTS for r in resources(p) if r["kind"] == "CronJob"]
    job = cronjob["spec"]["jobTemplate"]["spec"]
    (container,) = job["template"]["spec"]["containers"]
    script = container["args"][0]
    train = next(line for line in script.splitlines() if "clickstream train" in line)
    promote = next(line for line in script.splitlines() if "clickstream promote" in line)
    assert '--until "$cut"' in train and '--from-time "$cut"' in promote and "--serving /model/current" in promote
    assert cronjob["spec"]["concurrencyPolicy"] == "Forbid" and job["backoffLimit"] == 0
    assert not any(m.get("readOnly") for m in container["volumeMounts"])  # it writes candidates and the link
