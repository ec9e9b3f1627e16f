"""The entry point the webhook calls: every selected policy's mutators on one copy of the object.

The object is copied once (only the parts a mutator may write: ``mutators.working_copy``), each
policy's enabled mutators run on the copy in a fixed order (model config, resource defaults, GPU
scheduling, security context, metrics annotations), and ``mlgate.io/mutated-by`` records which
policies changed it. The JSONPatch is derived afterwards, at the edge, with
``mutators.diff.make_patch(original, outcome.obj)``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Any

from mutators import (
    gpu_scheduling,
    metrics_annotations,
    model_config,
    resource_defaults,
    security_context,
)
from mutators.memo import once_per_settings
from mutators.result import MutatorResult
from mutators.working_copy import make_working_copy
from policies.model import MutateSpec, Policy
from policies.podspec import find_pod_templates

JsonObject = dict[str, Any]

INJECT_ANNOTATION = "mlgate.io/inject"
MUTATED_BY_ANNOTATION = "mlgate.io/mutated-by"

Mutator = Callable[..., MutatorResult]

# (name for metrics and warnings, the settings it reads from MutateSpec, the rule), in run order.
MUTATORS: tuple[tuple[str, Callable[[MutateSpec], Any], Mutator], ...] = (
    ("model-config", lambda spec: spec.model_config, model_config.mutate_pod),
    ("resource-defaults", lambda spec: spec.resource_defaults, resource_defaults.mutate_pod),
    ("gpu-scheduling", lambda spec: spec.gpu_scheduling, gpu_scheduling.mutate_pod),
    ("security-context", lambda spec: spec.security_context, security_context.mutate_pod),
    ("metrics-annotations", lambda spec: spec.metrics_annotations, metrics_annotations.mutate_pod),
)


@dataclass(init=False)
class MutationOutcome:
    """What the mutators did to one object.

    ``obj`` is the mutated copy, or the input itself when there was nothing to do (opted out,
    no pod spec, no policy); the input is never modified either way. The copy shares what the
    mutators left alone with the input (``mutators.working_copy``): modify neither afterwards.
    """

    obj: JsonObject
    changed_by: tuple[str, ...] = ()  # names of policies that changed something, in order
    mutators: tuple[str, ...] = ()  # names of mutators that changed something (for metrics)
    warnings: tuple[str, ...] = ()
    opted_out: bool = False  # the workload says mlgate.io/inject: "false"

    # NOTE: not frozen, as mutators.result.MutatorResult. Read only by use.
    def __init__(
        self,
        obj: JsonObject,
        changed_by: tuple[str, ...] = (),
        mutators: tuple[str, ...] = (),
        warnings: tuple[str, ...] = (),
        opted_out: bool = False,
    ) -> None:
        self.obj = obj
        self.changed_by = changed_by
        self.mutators = mutators
        self.warnings = warnings
        self.opted_out = opted_out

    @property
    def changed(self) -> bool:
        return bool(self.changed_by)


def apply_all(obj: JsonObject, policies: Sequence[Policy]) -> MutationOutcome:
    """Run the mutators of ``policies`` (already selected, in order) on a copy of ``obj``."""
    found = find_pod_templates(obj)
    # Opted out: ``mlgate.io/inject: "false"`` on the workload or its pod template.
    if found and found[0].workload_annotations.get(INJECT_ANNOTATION) == "false":
        return MutationOutcome(obj=obj, opted_out=True)
    # The policies that mutate at all, with their mutators (the webhook passes only those,
    # webhook.admission.split_by_webhook; other callers may pass any).
    runs = [
        (policy, mutators) for policy in policies if (mutators := enabled_mutators(policy.mutate))
    ]
    if not found or not runs:
        return MutationOutcome(obj=obj)
    mutated, templates = make_working_copy(obj, found)
    changed_by: list[str] = []
    mutator_names: list[str] = []
    warnings: list[str] = []
    for policy, mutators in runs:
        policy_changed = False
        for name, mutate_pod, settings in mutators:
            for template in templates:
                result = mutate_pod(template, obj=mutated, settings=settings)
                if result.warnings:
                    warnings += [f"{policy.name}/{name}: {text}" for text in result.warnings]
                if result.changed:
                    policy_changed = True
                    if name not in mutator_names:
                        mutator_names.append(name)
        if policy_changed:
            changed_by.append(policy.name)
    if changed_by:
        _record_mutated_by(mutated, changed_by)
    return MutationOutcome(
        obj=mutated if changed_by else obj,
        changed_by=tuple(changed_by),
        mutators=tuple(mutator_names),
        warnings=tuple(dict.fromkeys(warnings)),
    )


@once_per_settings
def enabled_mutators(spec: MutateSpec) -> tuple[tuple[str, Mutator, Any], ...]:
    """(name, rule, settings) of each mutator ``spec`` enables, in run order."""
    enabled = []
    for name, settings_of, mutate_pod in MUTATORS:
        settings = settings_of(spec)
        if settings is not None and settings.enabled:
            enabled.append((name, mutate_pod, settings))
    return tuple(enabled)


def _record_mutated_by(obj: JsonObject, names: list[str]) -> None:
    """Merge ``names`` into the object's ``mlgate.io/mutated-by``, keeping earlier names first."""
    metadata = obj.get("metadata")
    if not isinstance(metadata, dict):
        metadata = obj["metadata"] = {}
    annotations = metadata.get("annotations")
    if not isinstance(annotations, dict):
        annotations = metadata["annotations"] = {}
    existing = str(annotations.get(MUTATED_BY_ANNOTATION, "")).split(",")
    # NOTE: iterators (map, chain, filter) rather than a comprehension and a generator: two
    # calls fewer on every request that mutates.
    merged = dict.fromkeys(filter(None, chain(map(str.strip, existing), names)))
    annotations[MUTATED_BY_ANNOTATION] = ",".join(merged)
