"""GPU scheduling: GPUs in requests and limits, tolerations, node selector, only for GPU pods."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from mutators.gpu_scheduling import mutate_pod
from policies.model import GpuSchedulingSettings, Toleration
from tests.mutators.workloads import (
    check_second_pass_changes_nothing,
    check_warnings,
    container,
    deployment,
    pod,
    read_path,
    run_mutator,
)

DEFAULTS = GpuSchedulingSettings()
OVERRIDE = replace(DEFAULTS, override=True)
GPU = "nvidia.com/gpu"
GPU_TOLERATION = {"key": GPU, "operator": "Exists", "effect": "NoSchedule"}
GPU_NODES = {"nvidia.com/gpu.present": "true"}


def gpu_container(name: str = "server", **resources: Any) -> dict[str, Any]:
    return container(name, resources=resources)


CASES: list[Any] = [
    pytest.param(
        pod(gpu_container(limits={GPU: "2"})),
        DEFAULTS,
        {
            "spec.containers.0.resources": {"limits": {GPU: "2"}, "requests": {GPU: "2"}},
            "spec.tolerations": [GPU_TOLERATION],
            "spec.nodeSelector": GPU_NODES,
        },
        [],
        id="limit-only-gets-request-toleration-and-node-selector",
    ),
    pytest.param(
        pod(gpu_container(requests={GPU: 1})),
        DEFAULTS,
        {"spec.containers.0.resources": {"requests": {GPU: 1}, "limits": {GPU: 1}}},
        [],
        id="request-only-gets-limit",
    ),
    pytest.param(
        pod(gpu_container(requests={GPU: "1"}, limits={GPU: "2"})),
        DEFAULTS,
        {"spec.containers.0.resources": {"requests": {GPU: "1"}, "limits": {GPU: "2"}}},
        ["request 1 differs from limit 2"],
        id="request-and-limit-differing-kept-with-warning",
    ),
    pytest.param(
        pod(gpu_container(requests={GPU: "1"}, limits={GPU: "2"})),
        OVERRIDE,
        {"spec.containers.0.resources": {"requests": {GPU: "2"}, "limits": {GPU: "2"}}},
        [],
        id="override-sets-request-to-limit",
    ),
    pytest.param(
        pod(gpu_container(limits={"cpu": "1"})),
        DEFAULTS,
        {"spec.tolerations": None, "spec.nodeSelector": None},
        [],
        id="pod-without-gpu-gets-nothing",
    ),
    pytest.param(
        pod(gpu_container(limits={GPU: "0"})),
        DEFAULTS,
        {"spec.tolerations": None, "spec.containers.0.resources.requests": None},
        [],
        id="zero-gpus-is-no-gpu",
    ),
    pytest.param(
        pod(container("a"), container("b"), annotations={"mlgate.io/gpu": "1"}),
        DEFAULTS,
        {
            "spec.containers.0.resources": {"limits": {GPU: "1"}, "requests": {GPU: "1"}},
            "spec.containers.1.resources": None,
            "spec.tolerations": [GPU_TOLERATION],
        },
        [],
        id="count-annotation-goes-on-first-app-container",
    ),
    pytest.param(
        deployment(
            container("sidecar"),
            container("server"),
            template_annotations={
                "mlgate.io/gpu": "4",
                "kubectl.kubernetes.io/default-container": "server",
            },
        ),
        DEFAULTS,
        {
            "spec.template.spec.containers.0.resources": None,
            "spec.template.spec.containers.1.resources.limits": {GPU: "4"},
        },
        [],
        id="count-annotation-goes-on-default-container",
    ),
    pytest.param(
        pod(gpu_container(limits={GPU: "1"}), annotations={"mlgate.io/gpu": "2"}),
        DEFAULTS,
        {"spec.containers.0.resources": {"limits": {GPU: "1"}, "requests": {GPU: "1"}}},
        [],
        id="container-count-wins-over-annotation",
    ),
    pytest.param(
        pod(annotations={"mlgate.io/gpu": "two"}),
        DEFAULTS,
        {"spec.tolerations": None, "spec.containers.0.resources": None},
        ["'two' is not a GPU count"],
        id="invalid-count-annotation-ignored-with-warning",
    ),
    pytest.param(
        pod(
            gpu_container(limits={GPU: "1"}),
            annotations={"mlgate.io/gpu-type": "nvidia-a100"},
        ),
        DEFAULTS,
        {"spec.nodeSelector": {**GPU_NODES, "accelerator": "nvidia-a100"}},
        [],
        id="gpu-type-annotation-adds-accelerator",
    ),
    pytest.param(
        pod(
            gpu_container(limits={GPU: "1"}),
            annotations={"mlgate.io/gpu-type": "nvidia-a100"},
            nodeSelector={"accelerator": "nvidia-t4"},
        ),
        DEFAULTS,
        {"spec.nodeSelector": {"accelerator": "nvidia-t4", **GPU_NODES}},
        ["nodeSelector accelerator: 'nvidia-t4' left alone"],
        id="conflicting-node-selector-kept-with-warning",
    ),
    pytest.param(
        pod(
            gpu_container(limits={GPU: "1"}),
            annotations={"mlgate.io/gpu-type": "nvidia-a100"},
            nodeSelector={"accelerator": "nvidia-t4"},
        ),
        OVERRIDE,
        {"spec.nodeSelector": {"accelerator": "nvidia-a100", **GPU_NODES}},
        [],
        id="conflicting-node-selector-replaced-with-override",
    ),
    pytest.param(
        pod(
            gpu_container(limits={GPU: "1"}),
            tolerations=[{"key": GPU, "operator": "Exists"}],
        ),
        DEFAULTS,
        {"spec.tolerations": [{"key": GPU, "operator": "Exists"}]},
        [],
        id="toleration-covering-every-effect-not-repeated",
    ),
    pytest.param(
        pod(
            gpu_container(limits={GPU: "1"}),
            tolerations=[{"key": GPU, "operator": "Exists", "effect": "NoExecute"}],
        ),
        DEFAULTS,
        {
            "spec.tolerations": [
                {"key": GPU, "operator": "Exists", "effect": "NoExecute"},
                GPU_TOLERATION,
            ]
        },
        [],
        id="toleration-for-other-effect-does-not-cover",
    ),
    pytest.param(
        pod(gpu_container(limits={GPU: "1"})),
        replace(
            DEFAULTS,
            runtime_class_name="nvidia",
            priority_class_name="gpu-inference",
            tolerations=(
                Toleration(key="gpu", operator="Equal", value="yes", effect="NoSchedule"),
            ),
        ),
        {
            "spec.runtimeClassName": "nvidia",
            "spec.priorityClassName": "gpu-inference",
            "spec.tolerations": [
                {"key": "gpu", "operator": "Equal", "value": "yes", "effect": "NoSchedule"}
            ],
        },
        [],
        id="optional-runtime-and-priority-class",
    ),
    pytest.param(
        pod(gpu_container(limits={GPU: "1"}), priority=1000),
        replace(DEFAULTS, priority_class_name="gpu-inference"),
        {"spec.priorityClassName": None},
        ["pod priority already set"],
        id="resolved-priority-keeps-priority-class-off",
    ),
    pytest.param(
        pod(initContainers=[gpu_container("warmup", limits={GPU: "1"})]),
        DEFAULTS,
        {
            "spec.initContainers.0.resources.requests": {GPU: "1"},
            "spec.tolerations": [GPU_TOLERATION],
        },
        [],
        id="init-container-asking-for-gpu",
    ),
]


@pytest.mark.parametrize(("obj", "settings", "expected", "warnings"), CASES)
def test_gpu_pod_gets_gpu_scheduling(
    obj: dict[str, Any],
    settings: GpuSchedulingSettings,
    expected: dict[str, Any],
    warnings: list[str],
) -> None:
    mutated, result = run_mutator(mutate_pod, obj, settings)
    for path, value in expected.items():
        assert read_path(mutated, path) == value, path
    check_warnings(result, warnings)


@pytest.mark.parametrize(("obj", "settings", "expected", "warnings"), CASES)
def test_gpu_scheduling_second_pass_changes_nothing(
    obj: dict[str, Any],
    settings: GpuSchedulingSettings,
    expected: dict[str, Any],
    warnings: list[str],
) -> None:
    del expected, warnings
    check_second_pass_changes_nothing(mutate_pod, obj, settings)
