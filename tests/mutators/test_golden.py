"""Golden cases through the real ``/mutate`` endpoint with the shipped default policies.

Each directory of tests/golden/mutate holds ``input.yaml`` (an object as the API server sends
it), ``expected.yaml`` (that object after applying the returned JSONPatch), optionally
``warnings.yaml`` (the warnings returned) and ``request.yaml`` (fields of the request other than
the default CREATE, such as ``operation: UPDATE``).

To regenerate the expected files after a deliberate change, run with MLGATE_UPDATE_GOLDEN=1 and
review the diff before committing.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any

import falcon.testing
import jsonpatch
import orjson
import pytest
import yaml

from tests.k8s_schema import validate_k8s
from tests.mutators.invariants import find_duplicates
from webhook.app import create_app
from webhook.settings import Settings

GOLDEN_DIR = Path(__file__).resolve().parent.parent / "golden" / "mutate"
CASES = sorted(path.name for path in GOLDEN_DIR.iterdir() if (path / "input.yaml").is_file())
UPDATE_GOLDEN = os.environ.get("MLGATE_UPDATE_GOLDEN") == "1"


@pytest.fixture(scope="module")
def client() -> falcon.testing.TestClient:
    return falcon.testing.TestClient(create_app(Settings(watch_interval=0)))


def build_review(obj: dict[str, Any], request: dict[str, Any]) -> dict[str, Any]:
    """An AdmissionReview like the API server sends for ``obj``."""
    group, _, version = obj["apiVersion"].rpartition("/")
    kind = obj["kind"]
    operation = request.get("operation", "CREATE")
    body = {
        "uid": f"golden-{obj['metadata']['name']}",
        "kind": {"group": group, "version": version, "kind": kind},
        "resource": {"group": group, "version": version, "resource": kind.lower() + "s"},
        "requestKind": {"group": group, "version": version, "kind": kind},
        "requestResource": {"group": group, "version": version, "resource": kind.lower() + "s"},
        "name": obj["metadata"]["name"],
        "namespace": obj["metadata"]["namespace"],
        "operation": operation,
        "userInfo": {"username": "admin", "groups": ["system:masters", "system:authenticated"]},
        "object": obj,
        "oldObject": obj if operation == "UPDATE" else None,
        "dryRun": False,
        "options": {"apiVersion": "meta.k8s.io/v1", "kind": f"{operation.title()}Options"},
    }
    body.update({key: value for key, value in request.items() if key != "operation"})
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": body}


def post_mutate(
    client: falcon.testing.TestClient, obj: dict[str, Any], request: dict[str, Any]
) -> tuple[list[dict[str, Any]], list[str]]:
    """The JSONPatch and warnings ``/mutate`` answers for ``obj``."""
    review = build_review(obj, request)
    result = client.simulate_post(
        "/mutate",
        params={"timeout": "5s"},
        body=orjson.dumps(review),
        headers={"Content-Type": "application/json"},
    )
    assert result.status_code == 200, result.text
    response = result.json["response"]
    assert response["uid"] == review["request"]["uid"]
    assert response["allowed"] is True
    patch: list[dict[str, Any]] = []
    if "patch" in response:
        assert response["patchType"] == "JSONPatch"
        patch = orjson.loads(base64.b64decode(response["patch"]))
    return patch, response.get("warnings", [])


def same_json(left: Any, right: Any) -> bool:
    option = orjson.OPT_SORT_KEYS
    return orjson.dumps(left, option=option) == orjson.dumps(right, option=option)


def read_yaml(path: Path, default: Any = None) -> Any:
    return yaml.safe_load(path.read_text()) if path.is_file() else default


def write_yaml(path: Path, value: Any) -> None:
    path.write_text(yaml.safe_dump(value, sort_keys=False, width=200))


@pytest.mark.parametrize("case", CASES)
def test_mutate_gives_golden_object(client: falcon.testing.TestClient, case: str) -> None:
    folder = GOLDEN_DIR / case
    original = read_yaml(folder / "input.yaml")
    request = read_yaml(folder / "request.yaml", {})

    patch, warnings = post_mutate(client, original, request)
    mutated = jsonpatch.apply_patch(original, patch)
    if UPDATE_GOLDEN:
        write_yaml(folder / "expected.yaml", mutated)
        if warnings:
            write_yaml(folder / "warnings.yaml", warnings)
        else:
            (folder / "warnings.yaml").unlink(missing_ok=True)

    assert same_json(mutated, read_yaml(folder / "expected.yaml"))
    assert warnings == read_yaml(folder / "warnings.yaml", [])
    validate_k8s(mutated)
    assert find_duplicates(mutated) == []
    second_patch, _ = post_mutate(client, mutated, request)
    assert second_patch == [], "a second pass must change nothing"
