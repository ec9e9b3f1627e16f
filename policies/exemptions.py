"""Exemptions: who or what a policy's rules skip, and until when.

An exemption holds when every part it gives holds (an exemption that gives only ``rules``
exempts every request from those rules), and only before its ``expires`` time. Namespaces are
globs (``fnmatch``); users and groups are exact names; service accounts are written
``namespace/name`` (or ``namespace/*``) and compared with the request's username
``system:serviceaccount:<namespace>:<name>``. A request by a service account is also matched by
``users`` entries spelled the long way.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass

from policies.context import AdmissionContext
from policies.globs import compile_fnmatch
from policies.model import Exemption, Policy
from policies.selector import describe_selector, matches_selector

SERVICE_ACCOUNT_PREFIX = "system:serviceaccount:"


@dataclass(frozen=True)
class ExemptionHit:
    """The exemption that applies to one rule, and its place in the policy (0-based)."""

    policy: str
    index: int
    exemption: Exemption

    def describe(self) -> str:
        """``exemption #2 of policy ml-prod (namespaces ml-sandbox; reason: ...)``."""
        ex = self.exemption
        parts: list[str] = []
        if ex.namespaces:
            parts.append("namespaces " + ", ".join(ex.namespaces))
        if ex.selector is not None:
            parts.append("labels " + describe_selector(ex.selector))
        if ex.users:
            parts.append("users " + ", ".join(ex.users))
        if ex.groups:
            parts.append("groups " + ", ".join(ex.groups))
        if ex.service_accounts:
            parts.append("service accounts " + ", ".join(ex.service_accounts))
        if ex.expires is not None:
            parts.append("until " + _as_utc(ex.expires).isoformat())
        if ex.reason:
            parts.append("reason: " + ex.reason)
        detail = f" ({'; '.join(parts)})" if parts else ""
        return f"exemption #{self.index + 1} of policy {self.policy}{detail}"


def find_exemption(
    ctx: AdmissionContext, *, policy: Policy, rule: str, labels: Mapping[str, str]
) -> ExemptionHit | None:
    """The first exemption of ``policy`` that exempts this request from ``rule``, if any.

    ``labels`` are the workload's (for a ``scale`` request: the scaled workload's).
    """
    for index, exemption in enumerate(policy.exemptions):
        if applies_exemption(exemption, ctx=ctx, rule=rule, labels=labels):
            return ExemptionHit(policy=policy.name, index=index, exemption=exemption)
    return None


def applies_exemption(
    exemption: Exemption, *, ctx: AdmissionContext, rule: str, labels: Mapping[str, str]
) -> bool:
    """Whether every part ``exemption`` gives holds for this request and rule, right now."""
    if exemption.expires is not None and _as_utc(ctx.now) >= _as_utc(exemption.expires):
        return False
    if exemption.rules and rule not in exemption.rules:
        return False
    if exemption.namespaces and not compile_fnmatch(exemption.namespaces).matches(ctx.namespace):
        return False
    if exemption.selector is not None and not matches_selector(exemption.selector, labels):
        return False
    if exemption.users and ctx.user.username not in exemption.users:
        return False
    if exemption.groups and not set(exemption.groups) & set(ctx.user.groups):
        return False
    return not exemption.service_accounts or matches_service_account(
        ctx.user.username, exemption.service_accounts
    )


def matches_service_account(username: str, service_accounts: tuple[str, ...]) -> bool:
    """Whether ``username`` is one of ``service_accounts`` (``ns/name`` or ``ns/*``)."""
    if not username.startswith(SERVICE_ACCOUNT_PREFIX):
        return False
    namespace, sep, name = username[len(SERVICE_ACCOUNT_PREFIX) :].partition(":")
    if not sep or not namespace or not name:
        return False
    for entry in service_accounts:
        want_ns, _, want_name = entry.partition("/")
        if want_ns == namespace and want_name in (name, "*"):
            return True
    return False


def _as_utc(moment: dt.datetime) -> dt.datetime:
    # NOTE: a naive time in a policy file means UTC (the model promises UTC), never local time.
    return moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment
