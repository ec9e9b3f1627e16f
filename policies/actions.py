"""Which enforcement action a rule of a policy carries."""

from __future__ import annotations

from policies.model import Action, Policy


def resolve_action(policy: Policy, rule: str, default: Action) -> Action:
    """The policy's ``ruleActions`` override for ``rule``, else the check's ``default``."""
    for rule_id, action in policy.validate.rule_actions:
        if rule_id == rule:
            return action
    return default
