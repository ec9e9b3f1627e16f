"""Properties of apply_all over generated workloads, with every mutator of the default policy.

For any coherent input: the patch applies with jsonpatch, the output is schema-valid with
nothing duplicated, a second pass changes nothing, every value the author set survives at the
same place, and a request never exceeds its limit.
"""

from __future__ import annotations

from typing import Any

import jsonpatch
import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mutators import apply_all, make_patch
from policies.model import (
    GpuSchedulingSettings,
    MetricsAnnotationsSettings,
    ModelConfigSettings,
    MutateSpec,
    Policy,
    ResourceDefaultsSettings,
    SecurityContextSettings,
)
from policies.podspec import find_pod_templates, iter_containers
from policies.quantity import parse_quantity
from tests.k8s_schema import validate_k8s
from tests.mutators.invariants import find_duplicates

POLICY = Policy(
    name="model-defaults",
    mutate=MutateSpec(
        model_config=ModelConfigSettings(),
        resource_defaults=ResourceDefaultsSettings(),
        gpu_scheduling=GpuSchedulingSettings(),
        security_context=SecurityContextSettings(),
        metrics_annotations=MetricsAnnotationsSettings(),
    ),
)
# Every mutator overriding the author's values: they then write where they otherwise leave alone.
OVERRIDE_POLICY = Policy(
    name="model-overrides",
    mutate=MutateSpec(
        model_config=ModelConfigSettings(override=True),
        resource_defaults=ResourceDefaultsSettings(override=True),
        gpu_scheduling=GpuSchedulingSettings(
            override=True, runtime_class_name="nvidia", priority_class_name="gpu"
        ),
        security_context=SecurityContextSettings(
            override=True, run_as_group=3000, drop_capabilities=("ALL", "NET_RAW")
        ),
        metrics_annotations=MetricsAnnotationsSettings(override=True),
    ),
)
GPU = "nvidia.com/gpu"
CPU_AMOUNTS = ["100m", "250m", "0.5", "500m", "1", "1500m", "2", "4"]
MEMORY_AMOUNTS = ["128Mi", "512Mi", "1Gi", "1G", "2Gi", "3Gi", "8Gi"]
MOUNT_PATHS = ["/tmp", "/tmp/", "/etc/mlgate/model", "/models", "/var/cache"]
VOLUME_NAMES = ["data", "mlgate-writable-tmp", "mlgate-model-config", "cache"]
ENV_NAMES = ["MODEL_NAME", "MODEL_VERSION", "BATCH_SIZE", "MODEL_CONFIG_PATH", "LOG_LEVEL"]


@st.composite
def resource_pair(draw: st.DrawFn, amounts: list[str]) -> tuple[str | None, str | None]:
    """A request and a limit, the request never above the limit."""
    request = draw(st.none() | st.sampled_from(amounts))
    limit = draw(st.none() | st.sampled_from(amounts))
    if (
        request is not None
        and limit is not None
        and parse_quantity(request) > parse_quantity(limit)
    ):
        request, limit = limit, request
    return request, limit


@st.composite
def resources(draw: st.DrawFn) -> dict[str, Any]:
    requests: dict[str, Any] = {}
    limits: dict[str, Any] = {}
    for name, amounts in (("cpu", CPU_AMOUNTS), ("memory", MEMORY_AMOUNTS)):
        request, limit = draw(resource_pair(amounts))
        if request is not None:
            requests[name] = request
        if limit is not None:
            limits[name] = limit
    gpus = draw(st.sampled_from([None, "requests", "limits", "both"]))
    count = draw(st.sampled_from(["1", "2", 1]))
    if gpus in ("requests", "both"):
        requests[GPU] = count
    if gpus in ("limits", "both"):
        limits[GPU] = count
    out: dict[str, Any] = {}
    if requests:
        out["requests"] = requests
    if limits:
        out["limits"] = limits
    return out


@st.composite
def security_context(draw: st.DrawFn) -> dict[str, Any]:
    context: dict[str, Any] = {}
    for field, values in (
        ("runAsUser", [0, 1000, 1234]),
        ("privileged", [True, False]),
        ("allowPrivilegeEscalation", [True, False]),
        ("readOnlyRootFilesystem", [True, False]),
        ("runAsNonRoot", [True, False]),
    ):
        if draw(st.booleans()):
            context[field] = draw(st.sampled_from(values))
    if context.get("privileged") is True:
        context.pop("allowPrivilegeEscalation", None)  # the API server rejects the pair
    if draw(st.booleans()):
        context["capabilities"] = {"drop": draw(st.sampled_from([["ALL"], ["NET_RAW"]]))}
    return context


@st.composite
def containers(draw: st.DrawFn, prefix: str, volumes: list[str]) -> list[dict[str, Any]]:
    count = draw(st.integers(1, 2))
    out = []
    for index in range(count):
        item: dict[str, Any] = {"name": f"{prefix}{index}", "image": "registry.example.com/m:1"}
        if draw(st.booleans()):
            item["resources"] = draw(resources())
        names = draw(st.lists(st.sampled_from(ENV_NAMES), unique=True, max_size=3))
        if names:
            item["env"] = [{"name": name, "value": "author"} for name in names]
        if volumes:
            paths = draw(st.lists(st.sampled_from(MOUNT_PATHS), unique=True, max_size=2))
            paths = list({path.rstrip("/"): path for path in paths}.values())
            if paths:
                item["volumeMounts"] = [
                    {"name": draw(st.sampled_from(volumes)), "mountPath": path} for path in paths
                ]
        if prefix == "app" and draw(st.booleans()):
            item["ports"] = [
                {"name": name, "containerPort": 8000 + number}
                for number, name in enumerate(
                    draw(st.lists(st.sampled_from(["metrics", "http", "grpc"]), unique=True))
                )
            ]
        if draw(st.booleans()):
            item["securityContext"] = draw(security_context())
        out.append(item)
    return out


@st.composite
def pod_specs(draw: st.DrawFn) -> dict[str, Any]:
    volume_names = draw(st.lists(st.sampled_from(VOLUME_NAMES), unique=True, max_size=3))
    volumes = [
        {"name": name, "emptyDir": {}}
        if draw(st.booleans())
        else {"name": name, "configMap": {"name": "author-config"}}
        for name in volume_names
    ]
    spec: dict[str, Any] = {"containers": draw(containers("app", volume_names))}
    if draw(st.booleans()):
        spec["initContainers"] = draw(containers("init", volume_names))
    if volumes:
        spec["volumes"] = volumes
    if draw(st.booleans()):
        spec["tolerations"] = draw(
            st.lists(
                st.sampled_from(
                    [
                        {"operator": "Exists"},
                        {"key": GPU, "operator": "Exists"},
                        {"key": GPU, "operator": "Exists", "effect": "NoExecute"},
                        {"key": "spot", "operator": "Equal", "value": "yes"},
                    ]
                ),
                unique_by=repr,
                max_size=2,
            )
        )
    if draw(st.booleans()):
        spec["nodeSelector"] = {"accelerator": "nvidia-t4"}
    if draw(st.booleans()):
        spec["securityContext"] = {
            key: value
            for key, value in (("runAsUser", draw(st.sampled_from([0, 1000, 4242]))),)
            if draw(st.booleans())
        }
    return spec


@st.composite
def workloads(draw: st.DrawFn) -> dict[str, Any]:
    spec = draw(pod_specs())
    labels = draw(
        st.dictionaries(
            st.sampled_from(["app", "version", "app.kubernetes.io/name"]),
            st.sampled_from(["fraud", "1.0", "v2"]),
            max_size=3,
        )
    )
    annotations = draw(
        st.dictionaries(
            st.sampled_from(
                [
                    "mlgate.io/model-config",
                    "mlgate.io/model-secrets",
                    "mlgate.io/gpu",
                    "mlgate.io/gpu-type",
                    "prometheus.io/port",
                ]
            ),
            st.sampled_from(["fraud-config", "2", "nvidia-a100", "9000"]),
            max_size=3,
        )
    )
    metadata: dict[str, Any] = {"name": "model", "namespace": "ml"}
    if labels:
        metadata["labels"] = labels
    if annotations:
        metadata["annotations"] = annotations
    template = {"metadata": {"labels": {"app": "fraud"}}, "spec": spec}
    kind = draw(st.sampled_from(["Pod", "Deployment", "CronJob", "Rollout", "Job"]))
    if kind == "Pod":
        return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}
    if kind == "CronJob":
        spec.setdefault("restartPolicy", "OnFailure")
        return {
            "apiVersion": "batch/v1",
            "kind": "CronJob",
            "metadata": metadata,
            "spec": {"schedule": "0 2 * * *", "jobTemplate": {"spec": {"template": template}}},
        }
    if kind == "Job":
        spec.setdefault("restartPolicy", "Never")
        return {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": metadata,
            "spec": {"template": template},
        }
    api_version = "apps/v1" if kind == "Deployment" else "argoproj.io/v1alpha1"
    return {
        "apiVersion": api_version,
        "kind": kind,
        "metadata": metadata,
        "spec": {"selector": {"matchLabels": {"app": "fraud"}}, "template": template},
    }


def leaves(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[tuple[Any, ...], Any]]:
    """Every scalar of a JSON value with its path (list positions included)."""
    if isinstance(value, dict):
        return [leaf for key, item in value.items() for leaf in leaves(item, (*path, key))]
    if isinstance(value, list):
        return [leaf for index, item in enumerate(value) for leaf in leaves(item, (*path, index))]
    return [(path, value)]


def read(value: Any, path: tuple[Any, ...]) -> Any:
    for step in path:
        value = value[step]
    return value


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(obj=workloads())
def test_mutation_properties_hold_for_any_workload(obj: dict[str, Any]) -> None:
    validate_k8s(obj)  # the generator only makes inputs the API server would accept
    original = orjson.dumps(obj)
    outcome = apply_all(obj, [POLICY])
    mutated = outcome.obj
    assert orjson.dumps(obj) == original  # the working copy took every write

    patch = make_patch(obj, mutated)
    assert jsonpatch.apply_patch(obj, patch) == mutated
    assert bool(patch) == bool(outcome.changed_by)
    validate_k8s(mutated)
    assert find_duplicates(mutated) == []

    again = apply_all(mutated, [POLICY])
    assert make_patch(mutated, again.obj) == []

    for path, value in leaves(obj):  # no override: every author value stays where it was
        assert read(mutated, path) == value, path

    for template in find_pod_templates(mutated):
        for _, container in iter_containers(template.spec):
            requests = (container.get("resources") or {}).get("requests") or {}
            limits = (container.get("resources") or {}).get("limits") or {}
            for name in ("cpu", "memory"):
                if name in requests and name in limits:
                    assert parse_quantity(requests[name]) <= parse_quantity(limits[name])
            if GPU in requests or GPU in limits:
                assert parse_quantity(requests[GPU]) == parse_quantity(limits[GPU])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(obj=workloads())
def test_overriding_mutators_write_only_into_the_working_copy(obj: dict[str, Any]) -> None:
    """With ``override``, mutators replace author values in place: never in the input."""
    original = orjson.dumps(obj)
    outcome = apply_all(obj, [POLICY, OVERRIDE_POLICY])
    assert orjson.dumps(obj) == original
    patch = make_patch(obj, outcome.obj)
    assert jsonpatch.apply_patch(obj, patch) == outcome.obj
    validate_k8s(outcome.obj)
    assert find_duplicates(outcome.obj) == []
