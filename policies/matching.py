"""Which policies apply to a request: small predicates that must all hold.

Gatekeeper's ``match.Matches`` is the model: each predicate looks at one thing, and the first
that fails ends the search for that policy.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence

from policies.context import AdmissionContext
from policies.globs import compile_globs
from policies.model import Match, Policy
from policies.podspec import POD_BEARING_KINDS, JsonObject
from policies.selector import matches_selector

# The kind behind each resource whose pod template we read (the scale subresource's object is
# a Scale; the policy still matches on the workload's kind).
RESOURCE_KINDS = {
    "pods": "Pod",
    "deployments": "Deployment",
    "statefulsets": "StatefulSet",
    "replicasets": "ReplicaSet",
    "daemonsets": "DaemonSet",
    "jobs": "Job",
    "cronjobs": "CronJob",
    "rollouts": "Rollout",
}

Predicate = Callable[[Match, AdmissionContext, Mapping[str, str]], bool]


def matches_glob(value: str, patterns: Sequence[str]) -> bool:
    """True when ``value`` equals or fnmatch-matches one of the patterns."""
    return compile_globs(tuple(patterns)).matches(value)


def workload_kind(ctx: AdmissionContext) -> str:
    """The kind of the workload a request is about (``Deployment`` for deployments/scale)."""
    if ctx.sub_resource:
        return RESOURCE_KINDS.get(ctx.resource, ctx.kind)
    return ctx.kind


def subject_object(ctx: AdmissionContext) -> JsonObject | None:
    """The workload whose labels and pod template decisions look at.

    The request's object, or for a scale request the workload as the cache holds it.
    """
    if ctx.sub_resource == "scale":
        return ctx.scale_target if isinstance(ctx.scale_target, dict) else None
    return ctx.obj if ctx.obj is not None else ctx.old_obj


def object_labels(obj: JsonObject | None) -> dict[str, str]:
    metadata = obj.get("metadata") if isinstance(obj, dict) else None
    labels = metadata.get("labels") if isinstance(metadata, dict) else None
    if not isinstance(labels, dict):
        return {}
    return {k: v for k, v in labels.items() if isinstance(k, str) and isinstance(v, str)}


def _namespace(match: Match, ctx: AdmissionContext, _labels: Mapping[str, str]) -> bool:
    names = match.namespaces
    return namespace_selected(names.include, names.exclude, ctx.namespace)


@functools.lru_cache(maxsize=4096)
def namespace_selected(include: tuple[str, ...], exclude: tuple[str, ...], namespace: str) -> bool:
    """Whether ``namespace`` matches a glob of ``include`` and none of ``exclude``.

    Remembered: a cluster's requests come from a few namespaces, and every request asks this of
    every policy.
    """
    return compile_globs(include).matches(namespace) and not compile_globs(exclude).matches(
        namespace
    )


def _kind(match: Match, ctx: AdmissionContext, _labels: Mapping[str, str]) -> bool:
    kind = workload_kind(ctx)
    if match.kinds:
        return kind in match.kinds
    return kind in POD_BEARING_KINDS


def _namespace_labels(match: Match, ctx: AdmissionContext, _labels: Mapping[str, str]) -> bool:
    if match.namespace_selector is None:
        return True
    # NOTE: unknown namespace labels (no cluster access) match nothing: a policy that asks for
    # namespace labels is not applied on a guess.
    if ctx.namespace_labels is None:
        return False
    return matches_selector(match.namespace_selector, ctx.namespace_labels)


def _workload_labels(match: Match, _ctx: AdmissionContext, labels: Mapping[str, str]) -> bool:
    return match.selector is None or matches_selector(match.selector, labels)


PREDICATES: tuple[Predicate, ...] = (_namespace, _kind, _namespace_labels, _workload_labels)


def select_policies(ctx: AdmissionContext, policies: Sequence[Policy]) -> list[Policy]:
    """The policies whose ``spec.match`` holds for this request, in policy-set order."""
    labels = object_labels(subject_object(ctx))
    selected: list[Policy] = []
    for policy in policies:
        # NOTE: a loop rather than all() over a generator: this runs for every policy on every
        # request, and the generator cost as much as the predicates.
        for predicate in PREDICATES:
            if not predicate(policy.match, ctx, labels):
                break
        else:
            selected.append(policy)
    return selected
