"""The pure pieces of the checks, table-driven: image references, exemptions, pod arithmetic."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policies.context import LookupFailure, QuotaStatus, UserInfo
from policies.engine import evaluate, summarize
from policies.exemptions import applies_exemption
from policies.images import ImageRef, parse_image
from policies.model import (
    Exemption,
    ImageSettings,
    LabelRequirement,
    LabelSelector,
    Policy,
    QuotaSettings,
    ResourceBudget,
    ValidateSpec,
    ValidationLabelSettings,
)
from policies.quota import count_pods, parse_quota_key, read_pod_resources
from policies.results import CheckResult
from tests.contexts import NOW, make_ctx


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        ("nginx", ImageRef("docker.io", "library/nginx", None, None)),
        ("proptechusa/model:v2.1.0", ImageRef("docker.io", "proptechusa/model", "v2.1.0", None)),
        ("ghcr.io/x/embedder:0.9.0", ImageRef("ghcr.io", "x/embedder", "0.9.0", None)),
        ("localhost:5000/m:1", ImageRef("localhost:5000", "m", "1", None)),
        ("reg.io:443/a/b", ImageRef("reg.io:443", "a/b", None, None)),
        ("m@sha256:abc", ImageRef("docker.io", "library/m", None, "sha256:abc")),
        (
            "index.docker.io/library/python:3.11",
            ImageRef("docker.io", "library/python", "3.11", None),
        ),
    ],
    ids=["bare", "docker-hub-user", "ghcr", "registry-port", "port-no-tag", "digest", "index"],
)
def test_image_references_parse_like_the_runtime(image: str, expected: ImageRef) -> None:
    assert parse_image(image) == expected


SA = "system:serviceaccount:ci:deployer"


@pytest.mark.parametrize(
    ("exemption", "user", "rule", "applies"),
    [
        (Exemption(namespaces=("ml-*",)), "admin", "images.no-latest", True),
        (Exemption(namespaces=("other",)), "admin", "images.no-latest", False),
        (Exemption(rules=("labels.accuracy",)), "admin", "images.no-latest", False),
        (Exemption(expires=NOW - dt.timedelta(seconds=1)), "admin", "x", False),
        (Exemption(expires=NOW), "admin", "x", False),
        (Exemption(expires=dt.datetime(2027, 1, 1)), "admin", "x", True),  # naive: UTC
        (Exemption(service_accounts=("ci/deployer",)), SA, "x", True),
        (Exemption(service_accounts=("ci/*",)), SA, "x", True),
        (Exemption(service_accounts=("ci/other",)), SA, "x", False),
        (Exemption(service_accounts=("ci/deployer",)), "deployer", "x", False),
        (Exemption(users=("admin",)), "admin", "x", True),
        (Exemption(groups=("system:masters",)), "someone", "x", True),
        (Exemption(groups=("ml-admins",)), "admin", "x", False),
        (
            Exemption(
                selector=LabelSelector(
                    match_expressions=(LabelRequirement("tier", "In", ("experimental",)),)
                )
            ),
            "admin",
            "x",
            True,
        ),
        (
            Exemption(selector=LabelSelector(match_labels=(("tier", "prod"),))),
            "admin",
            "x",
            False,
        ),
    ],
    ids=[
        "namespace-glob",
        "other-namespace",
        "other-rule",
        "expired",
        "expires-now",
        "naive-future",
        "service-account",
        "service-account-wildcard",
        "other-service-account",
        "plain-user-is-no-service-account",
        "user",
        "group",
        "other-group",
        "selector",
        "selector-mismatch",
    ],
)
def test_exemption_applies_only_when_every_part_holds(
    exemption: Exemption, user: str, rule: str, applies: bool
) -> None:
    ctx = make_ctx(user=UserInfo(user, ("system:masters",)))
    labels = {"tier": "experimental"}
    assert applies_exemption(exemption, ctx=ctx, rule=rule, labels=labels) is applies


def container(
    name: str,
    *,
    requests: dict[str, str] | None = None,
    limits: dict[str, str] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    resources: dict[str, Any] = {}
    if requests:
        resources["requests"] = requests
    if limits:
        resources["limits"] = limits
    return {"name": name, "image": "x:1", "resources": resources, **extra}


@pytest.mark.parametrize(
    ("spec", "cpu_request", "gpu_request"),
    [
        (
            {
                "containers": [
                    container("a", requests={"cpu": "500m"}),
                    container("b", requests={"cpu": "250m"}),
                ]
            },
            "0.75",
            "0",
        ),
        (
            {
                "initContainers": [container("i", requests={"cpu": "2"})],
                "containers": [container("a", requests={"cpu": "500m"})],
            },
            "2",
            "0",
        ),
        (
            {
                "initContainers": [
                    container("s", requests={"cpu": "1"}, restartPolicy="Always"),
                    container("i", requests={"cpu": "500m"}),
                ],
                "containers": [container("a", requests={"cpu": "500m"})],
            },
            "1.5",
            "0",
        ),
        ({"containers": [container("g", limits={"nvidia.com/gpu": "2"})]}, "0", "2"),
        (
            {"containers": [container("a", requests={"cpu": "1"})], "overhead": {"cpu": "250m"}},
            "1.25",
            "0",
        ),
    ],
    ids=[
        "sum-of-app-containers",
        "largest-init-container",
        "sidecar-adds-to-both",
        "limit-without-request-requests-it",
        "overhead",
    ],
)
def test_effective_pod_request_is_what_the_scheduler_counts(
    spec: dict[str, Any], cpu_request: str, gpu_request: str
) -> None:
    pod = read_pod_resources(spec, path="spec")
    assert pod.amount("requests", "cpu") == Decimal(cpu_request)
    assert pod.amount("requests", "nvidia.com/gpu") == Decimal(gpu_request)


@pytest.mark.parametrize(
    ("obj", "pods"),
    [
        ({"kind": "Deployment", "spec": {"replicas": 3}}, 3),
        ({"kind": "Deployment", "spec": {}}, 1),
        ({"kind": "Rollout", "spec": {"replicas": 5}}, 5),
        ({"kind": "Job", "spec": {"parallelism": 4, "completions": 8}}, 4),
        ({"kind": "Job", "spec": {"parallelism": 4, "completions": 2}}, 2),
        ({"kind": "CronJob", "spec": {"jobTemplate": {"spec": {"parallelism": 3}}}}, 3),
        ({"kind": "DaemonSet", "spec": {}}, 1),
        ({"kind": "Pod", "spec": {}}, 1),
        ({"kind": "Deployment", "spec": {"replicas": "3"}}, 1),
    ],
    ids=[
        "replicas",
        "default-replicas",
        "rollout",
        "job-parallelism",
        "job-few-completions",
        "cronjob",
        "daemonset-one-per-node",
        "pod",
        "malformed-replicas",
    ],
)
def test_pod_count_of_each_kind(obj: dict[str, Any], pods: int) -> None:
    assert count_pods(obj) == pods


@pytest.mark.parametrize(
    ("key", "tracked"),
    [
        ("cpu", ("requests", "cpu")),
        ("requests.memory", ("requests", "memory")),
        ("limits.cpu", ("limits", "cpu")),
        ("requests.nvidia.com/gpu", ("requests", "nvidia.com/gpu")),
        ("pods", ("pods", "pods")),
        ("count/deployments.apps", None),
        ("services", None),
    ],
    ids=["bare-cpu", "requests", "limits", "extended", "pods", "object-count", "services"],
)
def test_quota_keys_that_track_pods(key: str, tracked: tuple[str, str] | None) -> None:
    assert parse_quota_key(key) == tracked


EVERYTHING = Policy(
    name="all",
    validate=ValidateSpec(
        quota=QuotaSettings(budgets=(ResourceBudget(requests=(("cpu", "4"),), pods=3),)),
        images=ImageSettings(
            allowed_repositories=("docker.io/*",), require_digest_namespaces=("*",)
        ),
        labels=ValidationLabelSettings(),
    ),
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=12,
)


@settings(max_examples=150, deadline=None)
@given(
    kind=st.sampled_from(["Pod", "Deployment", "Job", "CronJob", "Rollout", "Scale"]),
    spec=json_values,
    metadata=json_values,
    quotas=st.sampled_from(
        [
            None,
            (),
            LookupFailure("ResourceQuotas", "down"),
            (QuotaStatus("q", hard=(("cpu", "x"),), used=()),),
        ]
    ),
)
def test_checks_never_raise_on_malformed_objects(
    kind: str, spec: Any, metadata: Any, quotas: Any
) -> None:
    obj = {"kind": kind, "metadata": metadata, "spec": spec}
    ctx = make_ctx(obj=obj, quotas=quotas, kind=kind)
    results = evaluate(ctx, [EVERYTHING])
    assert all(isinstance(r, CheckResult) for r in results)
    assert not any(r.rule.endswith("internal-error") for r in results), results


def test_exempted_rule_is_a_skip_naming_the_exemption() -> None:
    policy = Policy(
        name="gate",
        validate=ValidateSpec(labels=ValidationLabelSettings(required_labels=())),
        exemptions=(Exemption(rules=("labels.validated",), reason="ML-1234"),),
    )
    obj = {"kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": []}}
    results = evaluate(make_ctx(obj=obj, kind="Pod"), [policy])
    validated = [r for r in results if r.rule == "labels.validated"]
    assert [r.status for r in validated] == ["skip"]
    assert "exemption #1 of policy gate (reason: ML-1234)" in validated[0].message
    assert "would have failed" in validated[0].message
    verdict = summarize(results)
    assert {r.rule for r in verdict.denials} == {"labels.accuracy", "labels.bias-score"}
    assert not verdict.allowed


def test_a_check_that_raises_gives_an_error_result_with_the_check_action() -> None:
    budget = ResourceBudget(requests=(("cpu", "lots"),))
    quota = QuotaSettings(action="warn", budgets=(budget,), resource_quota=False)
    policy = Policy(name="p", validate=ValidateSpec(quota=quota))
    obj = {"kind": "Pod", "metadata": {"name": "m"}, "spec": {"containers": [{"name": "c"}]}}
    results = evaluate(make_ctx(obj=obj, kind="Pod"), [policy])
    message = "the quota check of policy p failed: QuantityError(\"not a quantity: 'lots'\")"
    assert results == [CheckResult("p", "quota.internal-error", "error", message, "warn")]


def test_rule_actions_override_the_check_action_rule_by_rule() -> None:
    policy = Policy(
        name="p",
        validate=ValidateSpec(
            quota=QuotaSettings(budgets=(ResourceBudget(pods=1),), resource_quota=False),
            images=ImageSettings(action="warn"),
            labels=ValidationLabelSettings(action="deny"),
            rule_actions=(
                ("images.tag-matches-version", "deny"),
                ("labels.accuracy", "audit"),
                ("quota.budget", "warn"),
            ),
        ),
    )
    obj = {
        "kind": "Deployment",
        "metadata": {"name": "m", "labels": {"app": "m", "version": "v2"}},
        "spec": {"replicas": 2, "template": {"spec": {"containers": [{"image": "m:v1"}]}}},
    }
    results = evaluate(make_ctx(obj=obj), [policy])
    actions = {r.rule: (r.status, r.action) for r in results}
    assert actions == {
        "quota.budget": ("fail", "warn"),
        "images.no-latest": ("pass", "warn"),
        "images.tag-matches-version": ("fail", "deny"),
        "labels.required": ("pass", "deny"),
        "labels.accuracy": ("fail", "audit"),
        "labels.bias-score": ("fail", "deny"),
        "labels.validated": ("fail", "deny"),
    }
