"""GPU scheduling: GPUs in both requests and limits, the GPU toleration and node selector.

A pod needs GPUs when a container (init or app) asks for the GPU resource in its requests or
limits, or when the workload is annotated ``mlgate.io/gpu: "<count>"``. Such a pod gets:

- the GPU count in both requests and limits of each container that asks (the API server rejects
  an extended resource in requests alone, or with a request different from the limit);
- for the annotation, when no app container asks yet: the count on the main app container, the
  one named by ``kubectl.kubernetes.io/default-container``, else the first. NOTE: the count is
  not given to every app container: a model server with a sidecar needs N GPUs, not N per
  container;
- the policy's tolerations (unless an existing toleration already covers one), its node
  selector, ``accelerator: <type>`` when annotated ``mlgate.io/gpu-type``, and the optional
  runtime class and priority class.

Pods without GPUs get none of this.
"""

from __future__ import annotations

import re
from typing import Any

from mutators.fields import (
    LABEL_VALUE,
    container_label,
    ensure_list,
    fill_field,
    read_field,
)
from mutators.result import MutatorResult
from policies.model import GpuSchedulingSettings, Toleration
from policies.podspec import PodTemplate, app_containers, iter_containers
from policies.quantity import QuantityError, parse_quantity

JsonObject = dict[str, Any]
_COUNT = re.compile(r"[0-9]{1,4}")
DEFAULT_CONTAINER_ANNOTATION = "kubectl.kubernetes.io/default-container"
RESOURCE_CONTAINER_LISTS = ("initContainers", "containers")


def mutate_pod(
    template: PodTemplate, *, obj: JsonObject, settings: GpuSchedulingSettings
) -> MutatorResult:
    """Make the pod spec of ``template`` schedulable on GPU nodes if it needs GPUs."""
    del obj  # the workload's annotations come with the template
    annotations = template.workload_annotations
    spec = template.spec
    gpu = settings.resource_name
    warnings: list[str] = []
    changed = False

    count = _annotated_count(
        annotations.get(settings.count_annotation), settings=settings, warnings=warnings
    )
    containers = iter_containers(spec, RESOURCE_CONTAINER_LISTS)
    if count and not any(_asks_for_gpu(c, gpu) for name, c in containers if name == "containers"):
        target = _main_container(spec, annotations)
        if target is not None:
            _set_gpu(target, "limits", gpu=gpu, value=str(count))
            _set_gpu(target, "requests", gpu=gpu, value=str(count))
            changed = True

    needs_gpu = False
    for list_name, container in containers:
        if not _asks_for_gpu(container, gpu):
            continue
        needs_gpu = True
        changed |= _pair_gpu_amounts(
            container,
            gpu,
            override=settings.override,
            who=container_label(list_name, container),
            warnings=warnings,
        )
    if not needs_gpu:
        return MutatorResult(changed=changed, warnings=tuple(warnings))

    for toleration in settings.tolerations:
        changed |= _add_toleration(spec, toleration)

    selector = list(settings.node_selector)
    gpu_type = annotations.get(settings.type_annotation)
    if gpu_type:
        if LABEL_VALUE.fullmatch(gpu_type):
            selector.append((settings.type_node_label, gpu_type))
        else:
            warnings.append(
                f"annotation {settings.type_annotation}: {gpu_type!r} is not a valid label "
                "value; ignored"
            )
    for key, value in selector:
        fill = fill_field(spec, ("nodeSelector", key), value=value, override=settings.override)
        changed |= fill in ("added", "replaced")
        if fill == "kept":
            warnings.append(
                f"nodeSelector {key}: {spec['nodeSelector'][key]!r} left alone "
                f"(the policy wants {value!r})"
            )

    if settings.runtime_class_name is not None:
        fill = fill_field(
            spec,
            ("runtimeClassName",),
            value=settings.runtime_class_name,
            override=settings.override,
        )
        changed |= fill in ("added", "replaced")
    if settings.priority_class_name is not None:
        if spec.get("priority") is not None and spec.get("priorityClassName") is None:
            # The Priority admission plugin already resolved this Pod's priority; a class name
            # added now would contradict it and the API server would reject the Pod.
            warnings.append("pod priority already set; priorityClassName not added")
        else:
            fill = fill_field(
                spec,
                ("priorityClassName",),
                value=settings.priority_class_name,
                override=settings.override,
            )
            changed |= fill in ("added", "replaced")
    return MutatorResult(changed=changed, warnings=tuple(warnings))


def _annotated_count(
    value: str | None, *, settings: GpuSchedulingSettings, warnings: list[str]
) -> int:
    if value is None:
        return 0
    if _COUNT.fullmatch(value) is None:
        warnings.append(
            f"annotation {settings.count_annotation}: {value!r} is not a GPU count; ignored"
        )
        return 0
    return int(value)


def _asks_for_gpu(container: JsonObject, gpu: str) -> bool:
    # NOTE: resources read once for both kinds, not walked down to by read_field for each:
    # every container of every pod is asked.
    resources = container.get("resources")
    if not isinstance(resources, dict):
        return False
    for kind in ("requests", "limits"):
        amounts = resources.get(kind)
        value = amounts.get(gpu) if isinstance(amounts, dict) else None
        if value is None:
            continue
        try:
            if parse_quantity(value) > 0:
                return True
        except QuantityError:
            return True  # the author meant GPUs; the API server will name the bad value
    return False


def _pair_gpu_amounts(
    container: JsonObject, gpu: str, *, override: bool, who: str, warnings: list[str]
) -> bool:
    """Put the GPU count in both requests and limits; the limit wins an override."""
    request = read_field(container, "resources", "requests", gpu)
    limit = read_field(container, "resources", "limits", gpu)
    if limit is None:
        _set_gpu(container, "limits", gpu=gpu, value=request)
        return True
    if request is None:
        _set_gpu(container, "requests", gpu=gpu, value=limit)
        return True
    try:
        equal = parse_quantity(request) == parse_quantity(limit)
    except QuantityError:
        return False
    if equal:
        return False
    if override:
        _set_gpu(container, "requests", gpu=gpu, value=limit)
        return True
    warnings.append(
        f"{who}: {gpu} request {request} differs from limit {limit}; left alone "
        "(the API server requires them equal)"
    )
    return False


def _set_gpu(container: JsonObject, kind: str, *, gpu: str, value: Any) -> None:
    fill_field(container, ("resources", kind, gpu), value=value, override=True)


def _main_container(spec: JsonObject, annotations: dict[str, str]) -> JsonObject | None:
    containers = app_containers(spec)
    wanted = annotations.get(DEFAULT_CONTAINER_ANNOTATION)
    for container in containers:
        if wanted is not None and container.get("name") == wanted:
            return container
    return containers[0] if containers else None


def _toleration_dict(toleration: Toleration) -> JsonObject:
    item: JsonObject = {"key": toleration.key, "operator": toleration.operator}
    if toleration.value is not None and toleration.operator == "Equal":
        item["value"] = toleration.value
    if toleration.effect is not None:
        item["effect"] = toleration.effect
    return item


def _covers(existing: Any, wanted: JsonObject) -> bool:
    """Whether an existing toleration tolerates at least what ``wanted`` does."""
    if not isinstance(existing, dict):
        return False
    key = existing.get("key") or ""
    operator = existing.get("operator") or "Equal"
    effect = existing.get("effect") or ""
    if key == "" and operator == "Exists":
        key_ok = True  # an empty key with Exists tolerates every taint
    else:
        key_ok = key == wanted["key"] and (
            operator == "Exists"
            or (wanted["operator"] == "Equal" and existing.get("value") == wanted.get("value"))
        )
    return key_ok and effect in ("", wanted.get("effect", ""))


def _add_toleration(spec: JsonObject, toleration: Toleration) -> bool:
    wanted = _toleration_dict(toleration)
    existing = spec.get("tolerations")
    if isinstance(existing, list) and any(_covers(item, wanted) for item in existing):
        return False
    ensure_list(spec, "tolerations").append(wanted)
    return True
