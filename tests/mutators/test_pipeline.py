"""apply_all: one copy, every selected policy's mutators in order, mlgate.io/mutated-by."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from mutators import apply_all, make_patch
from mutators.diff import copy_json
from policies.model import (
    GpuSchedulingSettings,
    MetricsAnnotationsSettings,
    ModelConfigSettings,
    MutateSpec,
    Policy,
    ResourceDefaultsSettings,
    SecurityContextSettings,
)
from tests.k8s_schema import validate_k8s
from tests.mutators.workloads import container, deployment, pod, read_path

EVERYTHING = MutateSpec(
    model_config=ModelConfigSettings(),
    resource_defaults=ResourceDefaultsSettings(),
    gpu_scheduling=GpuSchedulingSettings(),
    security_context=SecurityContextSettings(),
    metrics_annotations=MetricsAnnotationsSettings(),
)
MODEL_DEFAULTS = Policy(name="model-defaults", mutate=EVERYTHING)
METRICS_ONLY = Policy(
    name="metrics", mutate=MutateSpec(metrics_annotations=MetricsAnnotationsSettings(path="/m"))
)
GPU_POD = pod(container(resources={"limits": {"nvidia.com/gpu": "1"}}))


@pytest.mark.parametrize(
    ("obj", "policies", "changed_by", "mutators"),
    [
        pytest.param(
            GPU_POD,
            [MODEL_DEFAULTS],
            ("model-defaults",),
            (
                "model-config",
                "resource-defaults",
                "gpu-scheduling",
                "security-context",
                "metrics-annotations",
            ),
            id="every-mutator-on-a-gpu-pod",
        ),
        pytest.param(
            pod(),
            [METRICS_ONLY, MODEL_DEFAULTS],
            ("metrics", "model-defaults"),
            (
                "metrics-annotations",
                "model-config",
                "resource-defaults",
                "security-context",
            ),
            id="two-policies-in-order-no-gpu",
        ),
        pytest.param(
            pod(),
            [MODEL_DEFAULTS, replace(MODEL_DEFAULTS, name="again")],
            ("model-defaults",),
            ("model-config", "resource-defaults", "security-context", "metrics-annotations"),
            id="policy-with-nothing-left-to-do-not-listed",
        ),
        pytest.param(
            pod(),
            [
                Policy(
                    name="off",
                    mutate=MutateSpec(
                        metrics_annotations=MetricsAnnotationsSettings(enabled=False)
                    ),
                )
            ],
            (),
            (),
            id="disabled-mutator-does-nothing",
        ),
        pytest.param(
            pod(annotations={"mlgate.io/inject": "false"}), [MODEL_DEFAULTS], (), (), id="opted-out"
        ),
        pytest.param(
            deployment(template_annotations={"mlgate.io/inject": "false"}),
            [MODEL_DEFAULTS],
            (),
            (),
            id="opted-out-on-template",
        ),
        pytest.param(pod(), [], (), (), id="no-policy"),
        pytest.param(
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {}},
            [MODEL_DEFAULTS],
            (),
            (),
            id="kind-without-pod-spec",
        ),
    ],
)
def test_apply_all_reports_policies_and_mutators_that_changed_something(
    obj: dict[str, Any],
    policies: list[Policy],
    changed_by: tuple[str, ...],
    mutators: tuple[str, ...],
) -> None:
    before = copy_json(obj)
    outcome = apply_all(obj, policies)
    assert obj == before, "the input is never modified"
    assert outcome.changed_by == changed_by
    assert outcome.mutators == mutators
    validate_k8s(outcome.obj)
    if changed_by:
        assert read_path(outcome.obj, "metadata.annotations")["mlgate.io/mutated-by"] == ",".join(
            changed_by
        )
        again = apply_all(outcome.obj, policies)
        assert again.changed_by == ()
        assert make_patch(outcome.obj, again.obj) == []
    else:
        assert outcome.obj == obj


@pytest.mark.parametrize(
    ("existing", "expected"),
    [
        ("team-defaults", "team-defaults,model-defaults"),
        ("model-defaults, team-defaults", "model-defaults,team-defaults"),
        ("", "model-defaults"),
    ],
    ids=["appended-after-earlier-names", "already-listed-kept-in-place", "empty-value"],
)
def test_mutated_by_merges_with_existing_value(existing: str, expected: str) -> None:
    obj = pod(annotations={"mlgate.io/mutated-by": existing})
    outcome = apply_all(obj, [MODEL_DEFAULTS])
    assert outcome.obj["metadata"]["annotations"]["mlgate.io/mutated-by"] == expected


def test_mutated_by_goes_on_the_workload_not_the_template() -> None:
    outcome = apply_all(deployment(), [MODEL_DEFAULTS])
    assert outcome.obj["metadata"]["annotations"] == {"mlgate.io/mutated-by": "model-defaults"}
    assert "mlgate.io/mutated-by" not in outcome.obj["spec"]["template"]["metadata"]["annotations"]


def test_warnings_name_policy_and_mutator_once_each() -> None:
    obj = pod(container(securityContext={"runAsUser": 0}))
    outcome = apply_all(obj, [MODEL_DEFAULTS, replace(MODEL_DEFAULTS, name="second")])
    assert outcome.warnings == (
        'model-defaults/security-context: container "server": runAsUser: 0 (root) left alone; '
        "runAsNonRoot not set on the pod",
        'second/security-context: container "server": runAsUser: 0 (root) left alone; '
        "runAsNonRoot not set on the pod",
    )
