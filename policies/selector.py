"""Kubernetes label selector semantics, for matching and exemptions alike."""

from __future__ import annotations

from collections.abc import Mapping

from policies.model import LabelRequirement, LabelSelector


def matches_selector(selector: LabelSelector, labels: Mapping[str, str]) -> bool:
    """Whether ``labels`` satisfy every part of ``selector``; the empty selector matches all."""
    for key, value in selector.match_labels:
        if labels.get(key) != value:
            return False
    return all(matches_requirement(r, labels) for r in selector.match_expressions)


def matches_requirement(requirement: LabelRequirement, labels: Mapping[str, str]) -> bool:
    """One ``matchExpressions`` entry: ``NotIn`` also holds when the key is absent."""
    present = requirement.key in labels
    if requirement.operator == "Exists":
        return present
    if requirement.operator == "DoesNotExist":
        return not present
    if requirement.operator == "In":
        return present and labels[requirement.key] in requirement.values
    return not present or labels[requirement.key] not in requirement.values


def describe_selector(selector: LabelSelector) -> str:
    """The selector in ``kubectl -l`` syntax, for messages."""
    parts = [f"{key}={value}" for key, value in selector.match_labels]
    for r in selector.match_expressions:
        if r.operator == "Exists":
            parts.append(r.key)
        elif r.operator == "DoesNotExist":
            parts.append(f"!{r.key}")
        else:
            op = "in" if r.operator == "In" else "notin"
            parts.append(f"{r.key} {op} ({','.join(r.values)})")
    return ",".join(parts) or "(everything)"
