"""Which enforcement action a rule of a policy carries."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from types import MappingProxyType

from policies.model import Action, Policy

RuleActions = tuple[tuple[str, Action], ...]


def resolve_action(policy: Policy, rule: str, default: Action) -> Action:
    """The policy's ``ruleActions`` override for ``rule``, else the check's ``default``."""
    return _override(policy.validate.rule_actions, rule, default)


def resolve_actions(
    policy: Policy, rules: tuple[str, ...], default: Action
) -> Mapping[str, Action]:
    """``resolve_action`` of each of ``rules``, by rule id.

    Remembered: a check asks this of the same policy on every request.
    """
    return _resolve_actions(policy.validate.rule_actions, rules, default)


@functools.lru_cache(maxsize=1024)
def _resolve_actions(
    overrides: RuleActions, rules: tuple[str, ...], default: Action
) -> Mapping[str, Action]:
    return MappingProxyType({rule: _override(overrides, rule, default) for rule in rules})


def _override(overrides: RuleActions, rule: str, default: Action) -> Action:
    for rule_id, action in overrides:
        if rule_id == rule:
            return action
    return default
