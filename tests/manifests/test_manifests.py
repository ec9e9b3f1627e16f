"""The kustomize base and the cert-manager overlay, rendered by the kubectl on this machine."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.k8s_schema import validate_k8s

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "manifests"
TARGETS = {"self-managed": MANIFESTS, "cert-manager": MANIFESTS / "overlays" / "cert-manager"}
WEBHOOK_KINDS = ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration")
PROTECTED_NAMESPACES = ("kube-system", "mlgate-system")

pytestmark = pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")


def render(target: Path) -> list[dict[str, Any]]:
    out = subprocess.run(
        ["kubectl", "kustomize", str(target)], check=True, capture_output=True, text=True
    ).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


RENDERED = {name: render(path) for name, path in TARGETS.items()} if shutil.which("kubectl") else {}


def objects(target: str, kind: str) -> list[dict[str, Any]]:
    return [o for o in RENDERED[target] if o["kind"] == kind]


def one(target: str, kind: str) -> dict[str, Any]:
    (found,) = objects(target, kind)
    return found


def names(target: str) -> list[str]:
    return [f"{o['kind']}/{o['metadata']['name']}" for o in RENDERED[target]]


@pytest.mark.parametrize(
    ("target", "index"),
    [(t, i) for t in TARGETS for i in range(len(RENDERED.get(t, [])))],
    ids=[f"{t}:{n}" for t in TARGETS for n in (names(t) if RENDERED else [])],
)
def test_rendered_object_validates_against_the_official_schema(target: str, index: int) -> None:
    obj = RENDERED[target][index]
    if obj["apiVersion"].startswith("cert-manager.io/"):
        pytest.skip("cert-manager custom resource: no official schema")
    validate_k8s(obj)


def test_base_holds_exactly_the_install() -> None:
    assert sorted(names("self-managed")) == sorted(
        [
            "Namespace/mlgate-system",
            "ServiceAccount/mlgate",
            "ClusterRole/mlgate",
            "ClusterRoleBinding/mlgate",
            "Role/mlgate-certs",
            "RoleBinding/mlgate-certs",
            "Secret/mlgate-certs",
            f"ConfigMap/{one('self-managed', 'ConfigMap')['metadata']['name']}",
            "Service/mlgate",
            "Deployment/mlgate",
            "PodDisruptionBudget/mlgate",
            "MutatingWebhookConfiguration/mlgate",
            "ValidatingWebhookConfiguration/mlgate",
        ]
    )


def test_policy_configmap_holds_exactly_the_default_policy_files() -> None:
    shipped = {p.name: p.read_text() for p in (ROOT / "policies" / "defaults").glob("*.yaml")}
    copies = {p.name: p.read_text() for p in (MANIFESTS / "base" / "policies").glob("*.yaml")}
    assert copies == shipped, "manifests/base/policies drifted: cp policies/defaults/*.yaml there"
    assert one("self-managed", "ConfigMap")["data"] == shipped


def selector_matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """Kubernetes label selector semantics for matchLabels and In/NotIn/Exists/DoesNotExist."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expr in selector.get("matchExpressions", []):
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        present = key in labels
        holds = {
            "In": present and labels.get(key) in values,
            "NotIn": not present or labels.get(key) not in values,
            "Exists": present,
            "DoesNotExist": not present,
        }[op]
        if not holds:
            return False
    return True


WEBHOOKS = [
    (target, kind, hook["name"])
    for target in TARGETS
    for kind in WEBHOOK_KINDS
    for hook in (one(target, kind)["webhooks"] if RENDERED else [])
]


def webhook(target: str, kind: str, name: str) -> dict[str, Any]:
    return next(h for h in one(target, kind)["webhooks"] if h["name"] == name)


@pytest.mark.parametrize(
    "namespace_labels",
    [
        {"mlgate.io/enabled": "true", "kubernetes.io/metadata.name": ns}
        for ns in PROTECTED_NAMESPACES
    ]
    + [{"kubernetes.io/metadata.name": "ml-serving"}],
    ids=[*(f"{ns}-even-if-labelled" for ns in PROTECTED_NAMESPACES), "unlabelled-namespace"],
)
@pytest.mark.parametrize(("target", "kind", "name"), WEBHOOKS)
def test_namespace_selector_never_matches(
    target: str, kind: str, name: str, namespace_labels: dict[str, str]
) -> None:
    assert not selector_matches(webhook(target, kind, name)["namespaceSelector"], namespace_labels)


@pytest.mark.parametrize(("target", "kind", "name"), WEBHOOKS)
def test_namespace_selector_matches_a_labelled_namespace(target: str, kind: str, name: str) -> None:
    labels = {"mlgate.io/enabled": "true", "kubernetes.io/metadata.name": "ml-serving"}
    assert selector_matches(webhook(target, kind, name)["namespaceSelector"], labels)


@pytest.mark.parametrize(("target", "kind", "name"), WEBHOOKS)
def test_webhook_settings_are_safe(target: str, kind: str, name: str) -> None:
    hook = webhook(target, kind, name)
    assert hook["admissionReviewVersions"] == ["v1"]
    assert hook["sideEffects"] == "None"
    assert hook["matchPolicy"] == "Equivalent"
    assert hook["failurePolicy"] == "Fail"
    assert 1 <= hook["timeoutSeconds"] <= 10
    path = "/mutate" if kind.startswith("Mutating") else "/validate"
    assert hook["clientConfig"]["service"] == {
        "name": "mlgate",
        "namespace": "mlgate-system",
        "path": path,
        "port": 443,
    }
    if kind.startswith("Mutating"):
        assert hook["reinvocationPolicy"] == "IfNeeded"


def covered(hook: dict[str, Any]) -> set[str]:
    return {
        f"{group or 'core'}/{resource}"
        for rule in hook["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        if {"CREATE", "UPDATE"} <= set(rule["operations"])
    }


POD_KINDS = {
    "core/pods",
    "apps/deployments",
    "apps/statefulsets",
    "apps/replicasets",
    "apps/daemonsets",
    "batch/jobs",
    "batch/cronjobs",
    "argoproj.io/rollouts",
}
SCALE = {"apps/deployments/scale", "apps/statefulsets/scale", "argoproj.io/rollouts/scale"}


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("MutatingWebhookConfiguration", POD_KINDS),
        ("ValidatingWebhookConfiguration", POD_KINDS | SCALE),
    ],
    ids=["mutating-pod-kinds", "validating-pod-kinds-and-scale"],
)
def test_rules_cover_every_pod_bearing_kind(kind: str, expected: set[str]) -> None:
    (hook,) = one("self-managed", kind)["webhooks"]
    assert expected <= covered(hook)


@pytest.mark.parametrize("target", list(TARGETS))
def test_rbac_has_no_wildcards_and_writes_only_its_own_objects(target: str) -> None:
    rules = [
        rule
        for kind in ("ClusterRole", "Role")
        for role in objects(target, kind)
        for rule in role["rules"]
    ]
    assert rules
    for rule in rules:
        for field in ("apiGroups", "resources", "verbs"):
            assert "*" not in rule.get(field, []), rule
        writes = set(rule["verbs"]) - {"get", "list", "watch"}
        if writes and rule["resources"] != ["events"]:
            assert rule.get("resourceNames"), f"write without resourceNames: {rule}"
            assert not writes & {"create", "delete"}, rule
    secret_rules = [r for r in rules if "secrets" in r["resources"]]
    for rule in secret_rules:
        assert rule["resourceNames"] == ["mlgate-certs"]
    assert objects(target, "ClusterRole")
    cluster_secret_rules = [
        r
        for role in objects(target, "ClusterRole")
        for r in role["rules"]
        if "secrets" in r["resources"]
    ]
    assert not cluster_secret_rules


@pytest.mark.parametrize("target", list(TARGETS))
def test_deployment_is_hardened_and_highly_available(target: str) -> None:
    deployment = one(target, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert deployment["spec"]["replicas"] >= 2
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert set(container["resources"]) == {"requests", "limits"}
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        assert container[probe]["httpGet"]["path"] == path
        assert container[probe]["httpGet"]["scheme"] == "HTTPS"
    assert pod["affinity"]["podAntiAffinity"]
    pdb = one(target, "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    service = one(target, "Service")
    assert service["spec"]["ports"] == [
        {"name": "https", "port": 443, "targetPort": "https", "protocol": "TCP"}
    ]
    assert container["ports"][0]["containerPort"] == 8443
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]


@pytest.mark.parametrize(
    ("target", "manages_certs"),
    [("self-managed", True), ("cert-manager", False)],
    ids=["self-managed-runs-the-manager", "cert-manager-mounts-its-secret"],
)
def test_certificates_come_from_exactly_one_place(target: str, manages_certs: bool) -> None:
    args = one(target, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert ("--manage-certs" in args) is manages_certs
    annotated = [
        "cert-manager.io/inject-ca-from" in one(target, kind)["metadata"].get("annotations", {})
        for kind in WEBHOOK_KINDS
    ]
    assert annotated == [not manages_certs] * 2
