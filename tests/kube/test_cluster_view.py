"""The cluster view against a real HTTP server speaking the Kubernetes list/watch protocol."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from policies.context import LookupFailure, QuotaStatus
from tests.kube.apiserver import KubeApiServer
from webhook.kube import (
    KubeClusterView,
    KubeConfigError,
    KubeForbiddenError,
    KubeGoneError,
    KubeNotFoundError,
    KubeStatusError,
    KubeUnavailableError,
    connect_cluster,
    translate_error,
)

QUOTAS = "/api/v1/resourcequotas"
NAMESPACES = "/api/v1/namespaces"
DEPLOYMENTS = "/apis/apps/v1/deployments"


def make_quota(
    name: str, namespace: str, *, hard: dict[str, str], used: dict[str, str]
) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"hard": hard},
        "status": {"hard": hard, "used": used},
    }


def make_deployment(name: str, namespace: str, *, replicas: int, gpus: str) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"app": name},
            "managedFields": [{"manager": "kubectl"}],
        },
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "containers": [
                        {
                            "name": "server",
                            "image": "registry.example.com/ml/model:1.0",
                            "resources": {"requests": {"nvidia.com/gpu": gpus}},
                        }
                    ]
                },
            },
        },
    }


def api_client(host: str) -> client.ApiClient:
    configuration = client.Configuration()
    configuration.host = host
    configuration.retries = False
    return client.ApiClient(configuration)


def make_view(host: str, **options: Any) -> KubeClusterView:
    settings: dict[str, Any] = {
        "staleness": 30.0,
        "watch_timeout": 2,
        "request_timeout": 2.0,
        "backoff": (0.05, 0.2),
    }
    settings.update(options)
    return KubeClusterView(api_client(host), **settings)


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture
def apiserver() -> Iterator[KubeApiServer]:
    server = KubeApiServer().start()
    server.put(
        NAMESPACES, {"metadata": {"name": "ml-prod", "labels": {"mlgate.io/enabled": "true"}}}
    )
    server.put(
        QUOTAS,
        make_quota(
            "ml-quota",
            "ml-prod",
            hard={"requests.nvidia.com/gpu": "10"},
            used={"requests.nvidia.com/gpu": "6"},
        ),
    )
    server.put(DEPLOYMENTS, make_deployment("recommender", "ml-prod", replicas=3, gpus="2"))
    yield server
    server.stop()


@pytest.fixture
def view(apiserver: KubeApiServer) -> Iterator[KubeClusterView]:
    cluster = make_view(apiserver.url)
    assert cluster.wait_synced(5.0)
    yield cluster
    cluster.close()


def test_synced_view_answers_quotas_namespace_labels_and_workloads(view: KubeClusterView) -> None:
    assert view.resource_quotas("ml-prod") == (
        QuotaStatus(
            "ml-quota",
            hard=(("requests.nvidia.com/gpu", "10"),),
            used=(("requests.nvidia.com/gpu", "6"),),
        ),
    )
    assert view.resource_quotas("elsewhere") == ()
    assert view.namespace_labels("ml-prod") == {"mlgate.io/enabled": "true"}
    assert view.namespace_labels("elsewhere") is None
    deployment = view.workload(
        group="apps", resource="deployments", namespace="ml-prod", name="recommender"
    )
    assert isinstance(deployment, dict)
    assert deployment["kind"] == "Deployment"
    assert deployment["spec"]["replicas"] == 3
    assert "managedFields" not in deployment["metadata"]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        pytest.param(
            lambda s: s.put(
                QUOTAS,
                make_quota(
                    "ml-quota",
                    "ml-prod",
                    hard={"requests.nvidia.com/gpu": "10"},
                    used={"requests.nvidia.com/gpu": "9"},
                ),
            ),
            ("ml-quota",),
            id="modified-used",
        ),
        pytest.param(
            lambda s: s.put(QUOTAS, make_quota("second", "ml-prod", hard={"pods": "5"}, used={})),
            ("ml-quota", "second"),
            id="added",
        ),
        pytest.param(
            lambda s: s.delete(QUOTAS, namespace="ml-prod", name="ml-quota"),
            (),
            id="deleted",
        ),
    ],
)
def test_watch_events_reach_the_cache(
    apiserver: KubeApiServer,
    view: KubeClusterView,
    change: Callable[[KubeApiServer], None],
    expected: tuple[str, ...],
) -> None:
    before = view.resource_quotas("ml-prod")
    change(apiserver)

    def changed() -> bool:
        now = view.resource_quotas("ml-prod")
        return now != before and tuple(q.name for q in now) == expected  # type: ignore[union-attr]

    assert wait_for(changed)


def test_expired_resource_version_lists_again(
    apiserver: KubeApiServer, view: KubeClusterView
) -> None:
    def lists() -> int:
        return apiserver.count_requests(QUOTAS) - apiserver.count_requests(QUOTAS + "?")

    before = lists()
    apiserver.expire()  # the open watch gets 410 Gone, as after an etcd compaction
    apiserver.put(QUOTAS, make_quota("late", "ml-prod", hard={"pods": "1"}, used={}))
    assert wait_for(lambda: lists() > before)
    assert wait_for(
        lambda: any(q.name == "late" for q in view.resource_quotas("ml-prod"))  # type: ignore[union-attr]
    )


def test_lookups_are_answered_from_memory(apiserver: KubeApiServer, view: KubeClusterView) -> None:
    before = len(apiserver.requests)
    for _ in range(200):
        view.resource_quotas("ml-prod")
        view.namespace_labels("ml-prod")
        view.workload(group="apps", resource="deployments", namespace="ml-prod", name="recommender")
    # Only the informers' own watch renewals may have happened meanwhile.
    assert len(apiserver.requests) - before <= 6


def test_unreachable_cluster_gives_lookup_failures() -> None:
    view = make_view(closed_port_url())
    try:
        assert not view.wait_synced(0.5)
        quotas = view.resource_quotas("ml-prod")
        assert isinstance(quotas, LookupFailure)
        assert "not synced" in quotas.reason
        assert "Connection refused" in quotas.reason or "connect" in quotas.reason.lower()
        assert view.namespace_labels("ml-prod") is None
        target = view.workload(group="apps", resource="deployments", namespace="ml-prod", name="x")
        assert isinstance(target, LookupFailure)
    finally:
        view.close()


def test_broken_watch_serves_until_the_staleness_bound(apiserver: KubeApiServer) -> None:
    view = make_view(apiserver.url, staleness=1.0)
    try:
        assert view.wait_synced(5.0)
        apiserver.stop()
        # Within the bound the last known state is served...
        assert isinstance(view.resource_quotas("ml-prod"), tuple)
        # ...after it, the cache admits it cannot be trusted.
        assert wait_for(lambda: isinstance(view.resource_quotas("ml-prod"), LookupFailure), 8.0)
        failure = view.resource_quotas("ml-prod")
        assert isinstance(failure, LookupFailure)
        assert "broken" in failure.reason
    finally:
        view.close()


def test_missing_rollout_crd_fails_only_rollout_lookups() -> None:
    server = KubeApiServer(rollouts=False).start()
    view = make_view(server.url)

    def rollout() -> dict[str, Any] | LookupFailure:
        return view.workload(
            group="argoproj.io", resource="rollouts", namespace="ml-prod", name="model-rollout"
        )

    try:
        assert view.informers["ResourceQuotas"].wait_synced(5.0)
        assert wait_for(lambda: "404" in getattr(rollout(), "reason", ""))
        assert isinstance(view.resource_quotas("ml-prod"), tuple)
    finally:
        view.close()
        server.stop()


@pytest.mark.parametrize(
    ("error", "family"),
    [
        pytest.param(ApiException(status=410, reason="Expired"), KubeGoneError, id="410-gone"),
        pytest.param(ApiException(status=404, reason="NotFound"), KubeNotFoundError, id="404"),
        pytest.param(ApiException(status=403, reason="Forbidden"), KubeForbiddenError, id="403"),
        pytest.param(ApiException(status=500, reason="Boom"), KubeStatusError, id="500"),
        pytest.param(ApiException(status=0, reason="SSL"), KubeUnavailableError, id="no-status"),
        pytest.param(ConnectionRefusedError("refused"), KubeUnavailableError, id="socket"),
    ],
)
def test_api_errors_are_wrapped_into_our_families(error: Exception, family: type) -> None:
    wrapped = translate_error(error)
    assert type(wrapped) is family


@pytest.mark.parametrize("given", [True, False], ids=["argument", "KUBECONFIG"])
def test_connect_cluster_uses_the_kubeconfig(
    apiserver: KubeApiServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, given: bool
) -> None:
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: test\n"
        f"clusters: [{{name: test, cluster: {{server: '{apiserver.url}'}}}}]\n"
        "users: [{name: test, user: {token: abc}}]\n"
        "contexts: [{name: test, context: {cluster: test, user: test}}]\n"
    )
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", "" if given else str(kubeconfig))
    view = connect_cluster(str(kubeconfig) if given else None, watch_timeout=2, backoff=(0.05, 0.2))
    assert view is not None
    try:
        assert view.wait_synced(5.0)
        assert view.namespace_labels("ml-prod") == {"mlgate.io/enabled": "true"}
    finally:
        view.close()


def test_connect_cluster_without_config_outside_a_pod_is_none(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.delenv("KUBECONFIG", raising=False)
    assert connect_cluster(None) is None


def test_connect_cluster_with_a_broken_kubeconfig_raises(tmp_path: Path) -> None:
    broken = tmp_path / "config"
    broken.write_text("apiVersion: v1\nkind: Config\n")
    with pytest.raises(KubeConfigError):
        connect_cluster(str(broken))


def test_readyz_waits_for_cluster_caches_within_a_grace_period(apiserver: KubeApiServer) -> None:
    import falcon.testing

    from webhook.app import create_app
    from webhook.settings import Settings

    unreachable = make_view(closed_port_url())
    synced = make_view(apiserver.url)
    try:
        assert synced.wait_synced(5)
        settings = Settings(watch_interval=0)
        waiting = falcon.testing.TestClient(create_app(settings, kube=unreachable))
        result = waiting.simulate_get("/readyz")
        assert result.status_code == 503
        assert "cluster caches" in result.json["problems"][0]
        ready = falcon.testing.TestClient(create_app(settings, kube=synced))
        assert ready.simulate_get("/readyz").status_code == 200
        # Past the grace period an unreachable cluster no longer keeps the replica unready.
        no_grace = Settings(watch_interval=0, cluster_sync_grace=0)
        gave_up = falcon.testing.TestClient(create_app(no_grace, kube=unreachable))
        assert gave_up.simulate_get("/readyz").status_code == 200
    finally:
        unreachable.close()
        synced.close()
