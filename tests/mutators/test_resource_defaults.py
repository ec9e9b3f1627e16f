"""Resource defaults: LimitRange-like defaults, compared as quantities, never above a limit."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from mutators.resource_defaults import mutate_pod
from policies.model import ResourceDefaultsSettings
from tests.mutators.workloads import (
    check_second_pass_changes_nothing,
    check_warnings,
    container,
    pod,
    read_path,
    run_mutator,
)

DEFAULTS = ResourceDefaultsSettings()
OVERRIDE = replace(DEFAULTS, override=True)
DEFAULT_RESOURCES = {
    "requests": {"cpu": "500m", "memory": "1Gi"},
    "limits": {"cpu": "1000m", "memory": "2Gi"},
}


def with_resources(**resources: Any) -> dict[str, Any]:
    return pod(container(resources=resources))


CASES: list[Any] = [
    pytest.param(pod(), DEFAULTS, DEFAULT_RESOURCES, [], id="none-gets-both-defaults"),
    pytest.param(
        pod(container(resources={})), DEFAULTS, DEFAULT_RESOURCES, [], id="empty-gets-defaults"
    ),
    pytest.param(
        with_resources(limits={"cpu": "250m", "memory": "4Gi"}),
        DEFAULTS,
        {"requests": {"cpu": "250m", "memory": "1Gi"}, "limits": {"cpu": "250m", "memory": "4Gi"}},
        [],
        id="limit-only-request-is-min-of-limit-and-default",
    ),
    pytest.param(
        with_resources(limits={"cpu": "0.5", "memory": "1024Mi"}),
        DEFAULTS,
        {
            "requests": {"cpu": "0.5", "memory": "1024Mi"},
            "limits": {"cpu": "0.5", "memory": "1024Mi"},
        },
        [],
        id="limit-equal-to-default-request-in-other-spelling-kept-as-written",
    ),
    pytest.param(
        with_resources(requests={"cpu": "200m", "memory": "512Mi"}),
        DEFAULTS,
        {
            "requests": {"cpu": "200m", "memory": "512Mi"},
            "limits": {"cpu": "1000m", "memory": "2Gi"},
        },
        [],
        id="request-only-gets-default-limit",
    ),
    pytest.param(
        with_resources(requests={"cpu": "2", "memory": "3Gi"}),
        DEFAULTS,
        {"requests": {"cpu": "2", "memory": "3Gi"}, "limits": {"cpu": "2", "memory": "3Gi"}},
        ["cpu limit set to its request 2", "memory limit set to its request 3Gi"],
        id="request-above-default-limit-raises-limit-to-request",
    ),
    pytest.param(
        with_resources(requests={"cpu": "3"}, limits={"cpu": "4", "memory": "1G"}),
        DEFAULTS,
        {"requests": {"cpu": "3", "memory": "1G"}, "limits": {"cpu": "4", "memory": "1G"}},
        [],
        id="both-set-kept-and-1G-below-1Gi-compared-numerically",
    ),
    pytest.param(
        with_resources(
            requests={"cpu": "3", "memory": "1Mi"}, limits={"cpu": "4", "memory": "8Gi"}
        ),
        OVERRIDE,
        DEFAULT_RESOURCES,
        [],
        id="override-replaces-author-values",
    ),
    pytest.param(
        with_resources(requests={"cpu": "1"}, limits={"cpu": "1"}),
        replace(OVERRIDE, requests=(("cpu", "1000m"),), limits=(("cpu", "1000m"),)),
        {"requests": {"cpu": "1"}, "limits": {"cpu": "1"}},
        [],
        id="override-keeps-equal-amount-spelled-differently",
    ),
    pytest.param(
        pod(),
        replace(DEFAULTS, requests=(("cpu", "2"),), limits=(("cpu", "1"),)),
        {"requests": {"cpu": "1"}, "limits": {"cpu": "1"}},
        [],
        id="default-request-capped-at-default-limit",
    ),
    pytest.param(
        with_resources(limits={"nvidia.com/gpu": "1"}),
        replace(DEFAULTS, requests=(("memory", "1Gi"),), limits=()),
        {"requests": {"memory": "1Gi"}, "limits": {"nvidia.com/gpu": "1"}},
        [],
        id="only-the-policy-resources-are-touched",
    ),
    pytest.param(
        with_resources(limits={"cpu": "lots"}),
        DEFAULTS,
        {"requests": {"memory": "1Gi"}, "limits": {"cpu": "lots", "memory": "2Gi"}},
        ["cpu limit 'lots' is not a quantity"],
        id="invalid-author-quantity-left-alone-with-warning",
    ),
]


@pytest.mark.parametrize(("obj", "settings", "expected", "warnings"), CASES)
def test_resource_defaults_follow_limit_range_semantics(
    obj: dict[str, Any],
    settings: ResourceDefaultsSettings,
    expected: dict[str, Any],
    warnings: list[str],
) -> None:
    mutated, result = run_mutator(mutate_pod, obj, settings)
    assert read_path(mutated, "spec.containers.0.resources") == expected
    check_warnings(result, warnings)


@pytest.mark.parametrize(("obj", "settings", "expected", "warnings"), CASES)
def test_resource_defaults_second_pass_changes_nothing(
    obj: dict[str, Any],
    settings: ResourceDefaultsSettings,
    expected: dict[str, Any],
    warnings: list[str],
) -> None:
    del expected, warnings
    check_second_pass_changes_nothing(mutate_pod, obj, settings)


def test_init_containers_get_defaults_but_ephemeral_containers_do_not() -> None:
    obj = pod(
        initContainers=[container("init")],
        ephemeralContainers=[{"name": "debug", "image": "busybox:1.36"}],
    )
    mutated, _ = run_mutator(mutate_pod, obj, DEFAULTS)
    assert read_path(mutated, "spec.initContainers.0.resources") == DEFAULT_RESOURCES
    assert read_path(mutated, "spec.ephemeralContainers.0.resources") is None
