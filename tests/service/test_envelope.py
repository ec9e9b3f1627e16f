"""The HTTP envelope of /mutate and /validate, through falcon.testing: every captured review gets
a well-formed answer, and every kind of bad input gets its 4xx with a reason."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import falcon.testing
import jsonpatch
import pytest

from tests.harness import load_review, review_files, webhook_of
from tests.k8s_schema import validate_k8s
from webhook.app import create_app
from webhook.settings import Settings

JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def client() -> falcon.testing.TestClient:
    return falcon.testing.TestClient(create_app(Settings(watch_interval=0)))


def post(client: falcon.testing.TestClient, path: str, body: Any, **kwargs: Any) -> Any:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = kwargs.pop("headers", JSON)
    return client.simulate_post(path, body=data, headers=headers, **kwargs)


@pytest.mark.parametrize("path", review_files(), ids=lambda p: p.stem)
def test_captured_review_gets_well_formed_response(
    client: falcon.testing.TestClient, path: Path
) -> None:
    review = json.loads(path.read_text())
    webhook = webhook_of(path)
    result = post(client, f"/{webhook}", review, params={"timeout": "5s"})

    assert result.status_code == 200, result.text
    body = result.json
    assert body["apiVersion"] == "admission.k8s.io/v1"
    assert body["kind"] == "AdmissionReview"
    response = body["response"]
    assert response["uid"] == review["request"]["uid"]
    assert isinstance(response["allowed"], bool)
    if webhook == "validate":
        assert "patch" not in response
    if "patch" in response:
        assert response["patchType"] == "JSONPatch"
        patch = json.loads(base64.b64decode(response["patch"]))
        mutated = jsonpatch.apply_patch(review["request"]["object"], patch)
        validate_k8s(mutated)
    if not response["allowed"]:
        assert response["status"]["code"] == 403
        assert response["status"]["message"]
    for warning in response.get("warnings", []):
        assert len(warning) <= 256
        assert "\n" not in warning


@pytest.mark.parametrize(
    "name",
    [
        "028-validate-delete-pod-secure-model-pod",
        "029-validate-delete-pod-secure-model-pod",
        "030-validate-delete-pod-secure-model-pod",
    ],
)
def test_delete_is_allowed_untouched(client: falcon.testing.TestClient, name: str) -> None:
    review = load_review(name)
    response = post(client, "/validate", review).json["response"]
    assert response == {"uid": review["request"]["uid"], "allowed": True}


def test_kind_without_pod_spec_is_allowed_untouched(client: falcon.testing.TestClient) -> None:
    review = load_review("001-mutate-create-deployment-recommendation-model")
    request = review["request"]
    request["kind"] = {"group": "", "version": "v1", "kind": "ConfigMap"}
    request["resource"] = {"group": "", "version": "v1", "resource": "configmaps"}
    request["object"] = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}
    for webhook in ("mutate", "validate"):
        response = post(client, f"/{webhook}", review).json["response"]
        assert response == {"uid": request["uid"], "allowed": True}


def test_kube_system_is_never_acted_on(client: falcon.testing.TestClient) -> None:
    review = load_review("004-validate-create-deployment-image-analysis-model")
    review["request"]["namespace"] = "kube-system"
    review["request"]["object"]["metadata"]["namespace"] = "kube-system"
    response = post(client, "/validate", review).json["response"]
    assert response["allowed"] is True
    mutate = load_review("003-mutate-create-deployment-image-analysis-model")
    mutate["request"]["namespace"] = "kube-system"
    assert "patch" not in post(client, "/mutate", mutate).json["response"]


def test_own_namespace_is_never_acted_on(client: falcon.testing.TestClient) -> None:
    review = load_review("004-validate-create-deployment-image-analysis-model")
    review["request"]["namespace"] = "mlgate-system"
    assert post(client, "/validate", review).json["response"]["allowed"] is True


def test_opted_out_workload_is_not_mutated_but_still_validated(
    client: falcon.testing.TestClient,
) -> None:
    for name in ("003-mutate-", "004-validate-"):
        review = load_review(f"{name}create-deployment-image-analysis-model")
        review["request"]["object"]["metadata"]["annotations"] = {"mlgate.io/inject": "false"}
        response = post(client, f"/{name.split('-')[1]}", review).json["response"]
        if name.startswith("003"):
            assert "patch" not in response
        else:
            assert response["allowed"] is False  # :latest is still denied


def test_dry_run_denial_is_answered_like_a_real_one(client: falcon.testing.TestClient) -> None:
    review = load_review("025-validate-create-pod-churn-model-dry")
    assert review["request"]["dryRun"] is True
    response = post(client, "/validate", review).json["response"]
    assert response["uid"] == review["request"]["uid"]


def test_mutation_is_idempotent_on_captured_reviews(client: falcon.testing.TestClient) -> None:
    for path in review_files():
        if webhook_of(path) != "mutate":
            continue
        review = json.loads(path.read_text())
        first = post(client, "/mutate", review).json["response"]
        if "patch" not in first:
            continue
        patch = json.loads(base64.b64decode(first["patch"]))
        review["request"]["object"] = jsonpatch.apply_patch(review["request"]["object"], patch)
        second = post(client, "/mutate", review).json["response"]
        assert "patch" not in second, f"{path.name}: second pass patched {second.get('patch')}"


# --- bad input -------------------------------------------------------------------------------

VALID = load_review("002-validate-create-deployment-recommendation-model")


def _without(path: tuple[str, ...]) -> dict[str, Any]:
    review = json.loads(json.dumps(VALID))
    node = review
    for key in path[:-1]:
        node = node[key]
    del node[path[-1]]
    return review


def _with(path: tuple[str, ...], value: Any) -> dict[str, Any]:
    review = json.loads(json.dumps(VALID))
    node = review
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return review


BAD_BODIES = [
    pytest.param(b"{not json", 400, "not valid JSON", id="malformed-json"),
    pytest.param(b"", 400, "body is empty", id="empty-body"),
    pytest.param(b"[1, 2]", 422, "expected a JSON object", id="json-list"),
    pytest.param(b'"review"', 422, "expected a JSON object", id="json-string"),
    pytest.param(
        _with(("apiVersion",), "admission.k8s.io/v1beta1"), 422, "admission.k8s.io/v1",
        id="v1beta1-review",
    ),
    pytest.param(_with(("kind",), "TokenReview"), 422, "AdmissionReview", id="wrong-kind"),
    pytest.param(_without(("request",)), 422, "request is missing", id="no-request"),
    pytest.param(_with(("request",), "x"), 422, "request is missing", id="request-not-object"),
    pytest.param(_without(("request", "uid")), 422, "request.uid", id="no-uid"),
    pytest.param(_with(("request", "uid"), 12), 422, "request.uid", id="uid-not-string"),
    pytest.param(_without(("request", "kind")), 422, "request.kind", id="no-kind"),
    pytest.param(
        _with(("request", "operation"), "PATCH"), 422, "request.operation", id="bad-operation"
    ),
    pytest.param(_without(("request", "object")), 422, "request.object", id="create-no-object"),
    pytest.param(
        _with(("request", "object"), [1]), 422, "request.object must be an object",
        id="object-is-list",
    ),
    pytest.param(
        _with(("request", "userInfo", "groups"), "admins"), 422, "groups", id="groups-not-list"
    ),
    pytest.param(_with(("request", "dryRun"), "yes"), 422, "dryRun", id="dry-run-not-bool"),
]  # fmt: skip


@pytest.mark.parametrize(("body", "status", "reason"), BAD_BODIES)
@pytest.mark.parametrize("webhook", ["mutate", "validate"])
def test_bad_body_gets_4xx_naming_the_problem(
    client: falcon.testing.TestClient, webhook: str, body: Any, status: int, reason: str
) -> None:
    result = post(client, f"/{webhook}", body)
    assert result.status_code == status, result.text
    assert result.headers["content-type"].startswith("application/json")
    assert reason in result.json["reason"]
    assert result.json["status"] == status


def test_error_names_the_uid_when_it_is_known(client: falcon.testing.TestClient) -> None:
    result = post(client, "/validate", _with(("request", "operation"), "PATCH"))
    assert result.json["uid"] == VALID["request"]["uid"]


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "application/yaml", ""],
)
def test_wrong_content_type_gets_415(client: falcon.testing.TestClient, content_type: str) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    result = post(client, "/validate", VALID, headers=headers)
    assert result.status_code == 415
    assert "Content-Type must be application/json" in result.json["reason"]


def test_json_content_type_with_charset_is_accepted(client: falcon.testing.TestClient) -> None:
    headers = {"Content-Type": "application/json; charset=utf-8"}
    assert post(client, "/validate", VALID, headers=headers).status_code == 200


def test_body_over_limit_gets_413() -> None:
    client = falcon.testing.TestClient(create_app(Settings(watch_interval=0, max_body_bytes=4096)))
    padded = _with(("request", "object", "metadata", "annotations"), {"pad": "x" * 5000})
    result = post(client, "/validate", padded)
    assert result.status_code == 413
    assert "over the limit of 4096 bytes" in result.json["reason"]


def test_default_limit_is_the_api_servers_3_mib(client: falcon.testing.TestClient) -> None:
    big = _with(("request", "object", "metadata", "annotations"), {"pad": "x" * (3 * 2**20)})
    assert post(client, "/validate", big).status_code == 413
    fits = _with(("request", "object", "metadata", "annotations"), {"pad": "x" * (2 * 2**20)})
    assert post(client, "/validate", fits).status_code == 200


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
def test_wrong_method_gets_405(client: falcon.testing.TestClient, method: str) -> None:
    assert client.simulate_request(method, "/validate").status_code == 405


def test_unknown_path_gets_404(client: falcon.testing.TestClient) -> None:
    assert post(client, "/admit", VALID).status_code == 404


def test_odd_object_is_answered_not_crashed(client: falcon.testing.TestClient) -> None:
    odd = load_review("001-mutate-create-deployment-recommendation-model")
    spec = odd["request"]["object"]["spec"]["template"]["spec"]
    spec["containers"] = [{"name": "a", "env": "not-a-list", "resources": []}, "junk", None]
    spec["volumes"] = {"not": "a list"}
    for webhook in ("mutate", "validate"):
        result = post(client, f"/{webhook}", odd)
        assert result.status_code == 200, result.text
        assert result.json["response"]["uid"] == odd["request"]["uid"]


def test_healthz_and_readyz(client: falcon.testing.TestClient) -> None:
    assert client.simulate_get("/healthz").json == {"status": "ok"}
    ready = client.simulate_get("/readyz")
    assert ready.status_code == 200
    assert "model-defaults" in ready.json["policies"]


def test_readyz_is_503_without_valid_policies(tmp_path: Path) -> None:
    (tmp_path / "broken.yaml").write_text("apiVersion: mlgate.io/v1alpha1\nkind: Policy\n")
    client = falcon.testing.TestClient(
        create_app(Settings(policies_dir=tmp_path, watch_interval=0))
    )
    ready = client.simulate_get("/readyz")
    assert ready.status_code == 503
    assert "no valid policy set" in ready.json["problems"][0]
    result = post(client, "/validate", VALID)
    assert result.status_code == 503
    assert "no valid policy set" in result.json["reason"]


def test_metrics_count_answered_requests(client: falcon.testing.TestClient) -> None:
    post(client, "/validate", VALID)
    text = client.simulate_get("/metrics").text
    assert "mlgate_admission_requests_total{" in text
    assert 'webhook="validate"' in text
    assert "mlgate_admission_duration_seconds_bucket" in text


def test_pod_update_is_not_mutated_because_its_spec_is_immutable(
    client: falcon.testing.TestClient,
) -> None:
    review = load_review("026-mutate-update-pod-churn-model")  # kubectl label of a running pod
    response = post(client, "/mutate", review).json["response"]
    assert response == {"uid": review["request"]["uid"], "allowed": True}


def test_deployment_update_is_mutated_like_create(client: falcon.testing.TestClient) -> None:
    review = load_review("019-mutate-update-deployment-recommendation-model")
    response = post(client, "/mutate", review).json["response"]
    patch = json.loads(base64.b64decode(response["patch"]))
    mutated = jsonpatch.apply_patch(review["request"]["object"], patch)
    pod = mutated["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True
