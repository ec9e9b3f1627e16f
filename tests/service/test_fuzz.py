"""Generated bodies against both endpoints: never a 5xx, always a JSON answer."""

from __future__ import annotations

import json
from typing import Any

import falcon.testing
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.harness import load_review
from webhook.app import create_app
from webhook.settings import Settings

CLIENT = falcon.testing.TestClient(create_app(Settings(watch_interval=0)))
JSON = {"Content-Type": "application/json"}

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=30,
)

BASE = load_review("001-mutate-create-deployment-recommendation-model")
KEYS = ["apiVersion", "kind", "request"]
REQUEST_KEYS = [
    "uid", "kind", "resource", "subResource", "namespace", "name", "operation", "userInfo",
    "object", "oldObject", "dryRun",
]  # fmt: skip
POD_SPEC_KEYS = ["containers", "initContainers", "volumes", "securityContext", "nodeSelector"]


def _assert_answered(webhook: str, body: bytes) -> dict[str, Any]:
    result = CLIENT.simulate_post(f"/{webhook}", body=body, headers=JSON)
    assert result.status_code < 500, result.text
    assert result.headers["content-type"].startswith("application/json")
    parsed: dict[str, Any] = result.json
    if result.status_code == 200:
        assert parsed["response"]["uid"]
    else:
        assert parsed["reason"]
    return parsed


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=st.binary(max_size=300), webhook=st.sampled_from(["mutate", "validate"]))
def test_random_bytes_never_give_5xx(body: bytes, webhook: str) -> None:
    _assert_answered(webhook, body)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    key=st.sampled_from(KEYS), value=json_values, webhook=st.sampled_from(["mutate", "validate"])
)
def test_envelope_with_any_value_never_gives_5xx(key: str, value: Any, webhook: str) -> None:
    review = json.loads(json.dumps(BASE))
    review[key] = value
    _assert_answered(webhook, json.dumps(review).encode())


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    key=st.sampled_from(REQUEST_KEYS),
    value=json_values,
    webhook=st.sampled_from(["mutate", "validate"]),
)
def test_request_field_with_any_value_never_gives_5xx(key: str, value: Any, webhook: str) -> None:
    review = json.loads(json.dumps(BASE))
    review["request"][key] = value
    _assert_answered(webhook, json.dumps(review).encode())


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    key=st.sampled_from(POD_SPEC_KEYS),
    value=json_values,
    container_key=st.sampled_from(["env", "resources", "ports", "securityContext", "image"]),
    container_value=json_values,
    webhook=st.sampled_from(["mutate", "validate"]),
)
def test_odd_pod_spec_never_gives_5xx(
    key: str, value: Any, container_key: str, container_value: Any, webhook: str
) -> None:
    review = json.loads(json.dumps(BASE))
    spec = review["request"]["object"]["spec"]["template"]["spec"]
    spec["containers"][0][container_key] = container_value
    spec[key] = value
    parsed = _assert_answered(webhook, json.dumps(review).encode())
    assert parsed["response"]["uid"] == BASE["request"]["uid"]


@pytest.mark.parametrize("depth", [200, 5000])
def test_deeply_nested_body_is_answered(depth: int) -> None:
    body = b'{"a":' * depth + b"1" + b"}" * depth
    for webhook in ("mutate", "validate"):
        _assert_answered(webhook, body)
