"""Golden validation cases through the real ``/validate`` endpoint.

Each folder of ``tests/golden/validate/`` holds ``case.yaml`` (the request: a captured fixture
or ``object.yaml`` with ``old.yaml``; the cluster the webhook sees; the expected verdict) and
``policies/`` (policy files, loaded by the real loader). A case with a ``cluster`` section gets
a real ``KubeClusterView`` reading a real HTTP server that speaks list/watch; ``unreachable``
points the view at a closed port instead.
"""

from __future__ import annotations

import re
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from falcon import testing
from kubernetes import client

from tests.audit.records import RecordingSink
from tests.harness import load_review
from tests.k8s_schema import validate_k8s
from tests.kube.apiserver import KubeApiServer
from webhook.app import create_app
from webhook.kube import KubeClusterView
from webhook.settings import Settings

GOLDEN = Path(__file__).resolve().parent.parent / "golden" / "validate"
CASES = sorted(p for p in GOLDEN.iterdir() if p.is_dir())

# kind -> (group, version, resource)
RESOURCES = {
    "Pod": ("", "v1", "pods"),
    "Deployment": ("apps", "v1", "deployments"),
    "StatefulSet": ("apps", "v1", "statefulsets"),
    "DaemonSet": ("apps", "v1", "daemonsets"),
    "Job": ("batch", "v1", "jobs"),
    "CronJob": ("batch", "v1", "cronjobs"),
    "Rollout": ("argoproj.io", "v1alpha1", "rollouts"),
}
CLUSTER_PATHS = {
    "resourcequotas": "/api/v1/resourcequotas",
    "namespaces": "/api/v1/namespaces",
    "deployments": "/apis/apps/v1/deployments",
    "statefulsets": "/apis/apps/v1/statefulsets",
    "rollouts": "/apis/argoproj.io/v1alpha1/rollouts",
}
DENIED_RULE = re.compile(r"^- \[[^/\]]+/([^\]]+)\]", re.MULTILINE)


def build_review(case_dir: Path, case: dict[str, Any]) -> dict[str, Any]:
    """The AdmissionReview of a case: a captured fixture, or one built from ``object.yaml``."""
    if "fixture" in case:
        return load_review(case["fixture"])
    obj = yaml.safe_load((case_dir / "object.yaml").read_text())
    old_path = case_dir / "old.yaml"
    old = yaml.safe_load(old_path.read_text()) if old_path.exists() else None
    for manifest in (obj, old):
        if manifest is not None:
            validate_k8s(manifest)
    request = case.get("request", {})
    group, version, resource = RESOURCES[obj["kind"]]
    user = request.get("user", {"username": "admin", "groups": ["system:masters"]})
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": str(uuid.uuid4()),
            "kind": {"group": group, "version": version, "kind": obj["kind"]},
            "resource": {"group": group, "version": version, "resource": resource},
            "name": obj["metadata"]["name"],
            "namespace": obj["metadata"]["namespace"],
            "operation": "UPDATE" if old is not None else "CREATE",
            "userInfo": user,
            "object": obj,
            "oldObject": old,
            "dryRun": False,
        },
    }


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def view_of(host: str) -> KubeClusterView:
    configuration = client.Configuration()
    configuration.host = host
    configuration.retries = False
    return KubeClusterView(
        client.ApiClient(configuration),
        watch_timeout=5,
        request_timeout=2.0,
        backoff=(0.05, 0.2),
    )


@contextmanager
def cluster_for(spec: dict[str, Any] | None) -> Iterator[KubeClusterView | None]:
    if spec is None:
        yield None
        return
    if spec.get("unreachable"):
        view = view_of(closed_port_url())
        try:
            yield view
        finally:
            view.close()
        return
    server = KubeApiServer().start()
    for key, objects in spec.items():
        for obj in objects:
            server.put(CLUSTER_PATHS[key], obj)
    view = view_of(server.url)
    try:
        assert view.wait_synced(10.0)
        yield view
    finally:
        view.close()
        server.stop()


@pytest.mark.parametrize("case_dir", CASES, ids=[p.name for p in CASES])
def test_golden_validation(case_dir: Path) -> None:
    case = yaml.safe_load((case_dir / "case.yaml").read_text())
    review = build_review(case_dir, case)
    sink = RecordingSink()
    settings = Settings(policies_dir=case_dir / "policies", watch_interval=0)
    with cluster_for(case.get("cluster")) as kube:
        app = create_app(settings, kube=kube, audit=sink)
        result = testing.TestClient(app).simulate_post("/validate", json=review)
    assert result.status_code == 200, result.text
    response = result.json["response"]
    expect = case["expect"]
    message = response.get("status", {}).get("message", "")
    assert response["uid"] == review["request"]["uid"]
    assert response["allowed"] is expect["allowed"], message or response.get("warnings")
    assert set(DENIED_RULE.findall(message)) == set(expect.get("denied", [])), message
    for text in expect.get("message", []):
        assert text in message
    warnings = response.get("warnings", [])
    assert len(warnings) == len(expect.get("warnings", [])), warnings
    for text in expect.get("warnings", []):
        assert any(text in w for w in warnings), (text, warnings)
    audited = sorted(r.rule for r in sink.records if r.action == "audit")
    assert audited == sorted(expect.get("audited", []))
