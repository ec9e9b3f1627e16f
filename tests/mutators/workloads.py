"""Small builders of workloads for mutator tests, and a runner that checks every result."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jsonpatch
import orjson

from mutators.diff import make_patch
from mutators.result import MutatorResult
from mutators.working_copy import make_working_copy
from policies.podspec import find_pod_templates
from tests.k8s_schema import validate_k8s
from tests.mutators.invariants import find_duplicates

JsonObject = dict[str, Any]
IMAGE = "registry.example.com/ml/model:1.0"


def container(name: str = "server", **fields: Any) -> JsonObject:
    return {"name": name, "image": IMAGE, **fields}


def pod(
    *containers: JsonObject,
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    **spec: Any,
) -> JsonObject:
    """A Pod with ``containers`` (one default container if none) and extra pod spec fields."""
    metadata: JsonObject = {"name": "model", "namespace": "ml"}
    if labels:
        metadata["labels"] = labels
    if annotations:
        metadata["annotations"] = annotations
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": {"containers": list(containers) or [container()], **spec},
    }


def deployment(
    *containers: JsonObject,
    template_annotations: dict[str, str] | None = None,
    with_template_metadata: bool = True,
    **spec: Any,
) -> JsonObject:
    """A Deployment whose pod template holds ``containers`` and extra pod spec fields."""
    template: JsonObject = {"spec": {"containers": list(containers) or [container()], **spec}}
    if with_template_metadata:
        template["metadata"] = {"labels": {"app": "model"}}
        if template_annotations:
            template["metadata"]["annotations"] = template_annotations
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "model", "namespace": "ml"},
        "spec": {"selector": {"matchLabels": {"app": "model"}}, "template": template},
    }


def run_mutator(
    mutate_pod: Callable[..., MutatorResult], obj: JsonObject, settings: Any
) -> tuple[JsonObject, MutatorResult]:
    """Run one mutator on a working copy of ``obj``, as ``apply_all`` does, and check what
    every mutated object must satisfy.

    The input is left untouched (so the mutator wrote only where the working copy allows),
    ``changed`` matches whether the object changed, the patch turns the input into the result,
    and the result is schema-valid with nothing duplicated.
    """
    snapshot = orjson.dumps(obj)
    mutated, templates = make_working_copy(obj, find_pod_templates(obj))
    results = [mutate_pod(t, obj=mutated, settings=settings) for t in templates]
    assert len(results) == 1
    assert orjson.dumps(obj) == snapshot
    patch = make_patch(obj, mutated)
    assert results[0].changed == bool(patch)
    assert jsonpatch.apply_patch(obj, patch) == mutated
    validate_k8s(mutated)
    assert find_duplicates(mutated) == []
    return mutated, results[0]


def read_path(obj: Any, path: str) -> Any:
    """The value at a dotted path (``spec.containers.0.env``); None when missing."""
    for step in path.split("."):
        if isinstance(obj, list):
            index = int(step)
            obj = obj[index] if index < len(obj) else None
        elif isinstance(obj, dict):
            obj = obj.get(step)
        else:
            return None
    return obj


def check_warnings(result: MutatorResult, expected: list[str]) -> None:
    """One warning per expected substring, in order."""
    assert len(result.warnings) == len(expected), result.warnings
    for text, warning in zip(expected, result.warnings, strict=True):
        assert text in warning


def check_second_pass_changes_nothing(
    mutate_pod: Callable[..., MutatorResult], obj: JsonObject, settings: Any
) -> None:
    """Running the mutator on its own output changes nothing and says so."""
    once, _ = run_mutator(mutate_pod, obj, settings)
    twice, result = run_mutator(mutate_pod, once, settings)
    assert not result.changed
    assert twice == once
