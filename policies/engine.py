"""The validating engine: run every enabled check of the selected policies, apply exemptions.

``evaluate`` returns every result (pass, fail, skip, error); ``summarize`` turns them into a
verdict. Only the webhook turns a verdict into ``allowed``, ``status`` and ``warnings``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

from policies.actions import resolve_action
from policies.context import AdmissionContext
from policies.exemptions import ExemptionHit, find_exemption
from policies.images import check_images
from policies.model import Policy
from policies.podspec import workload_labels
from policies.quota import check_quota
from policies.results import CheckResult
from policies.validation_labels import check_validation_labels
from policies.workload import Workload


@dataclass(init=False)
class Verdict:
    """What the results add up to: a denial lists every failing rule whose action is deny."""

    allowed: bool
    denials: list[CheckResult]
    warnings: list[CheckResult]
    audits: list[CheckResult]

    # NOTE: not frozen, as CheckResult; one Verdict per request. Read only by use.
    def __init__(
        self,
        *,
        allowed: bool,
        denials: list[CheckResult],
        warnings: list[CheckResult],
        audits: list[CheckResult],
    ) -> None:
        self.allowed = allowed
        self.denials = denials
        self.warnings = warnings
        self.audits = audits


def evaluate(
    ctx: AdmissionContext, policies: Sequence[Policy], *, workload: Workload | None = None
) -> list[CheckResult]:
    """Every result of every enabled check of ``policies`` (already selected) on the request.

    Nothing is checked when there is no object (DELETE, CONNECT). A rule a policy exempts the
    request from gives ``skip`` results that name the exemption (and what it would have said).
    ``workload`` is ``Workload.of`` the request's object, when the caller has it already.
    """
    obj = ctx.obj
    if obj is None:
        return []
    if workload is None or workload.obj is not obj:
        workload = Workload.of(obj, namespace=ctx.namespace)
    labels: Mapping[str, str] | None = None  # the workload's, read for the first exemption
    results: list[CheckResult] = []
    for policy in policies:
        if not policy.validate.checks:  # only mutates (the webhook already leaves these out)
            continue
        checked = run_checks(ctx, workload, policy=policy)
        if not policy.exemptions:
            results += checked
            continue
        if labels is None:
            labels = exemption_labels(ctx, workload)
        for result in checked:
            hit = find_exemption(ctx, policy=policy, rule=result.rule, labels=labels)
            results.append(result if hit is None else exempt_result(result, hit))
    return results


def exemption_labels(ctx: AdmissionContext, workload: Workload) -> Mapping[str, str]:
    """The labels exemptions select on: the workload's, or for a ``scale`` request the scaled
    workload's (none when it could not be read)."""
    if ctx.sub_resource != "scale":
        return workload.labels
    target = ctx.scale_target
    return workload_labels(target) if isinstance(target, dict) else {}


# Each check by the ValidateSpec field that turns it on and holds its settings.
Check = Callable[..., list[CheckResult]]
CHECKS: Mapping[str, Check] = {
    "quota": check_quota,
    "images": check_images,
    "labels": check_validation_labels,
}


def run_checks(ctx: AdmissionContext, workload: Workload, *, policy: Policy) -> list[CheckResult]:
    """The results of each check the policy turns on, in a fixed order: quota, images, labels."""
    results: list[CheckResult] = []
    for name, settings in policy.validate.checks:
        try:
            results += CHECKS[name](ctx, workload, policy=policy, settings=settings)
        except Exception as error:
            # NOTE: a check that raises is a bug of ours; the request gets the check's action
            # and a message naming it, rather than a 500 that the API server's failurePolicy
            # would turn into a blanket decision for every workload.
            rule = f"{name}.internal-error"
            message = f"the {name} check of policy {policy.name} failed: {error!r}"
            action = resolve_action(policy, rule, settings.action)
            results.append(CheckResult(policy.name, rule, "error", message, action))
    return results


def exempt_result(result: CheckResult, hit: ExemptionHit) -> CheckResult:
    """``result`` turned into a ``skip`` that names the exemption and what it would have said."""
    would = f"; would have {result.status}ed: {result.message}" if result.failed else ""
    message = f"{result.rule} exempted by {hit.describe()}{would}"
    return replace(result, status="skip", message=message)


def summarize(results: Sequence[CheckResult]) -> Verdict:
    """Sort the failing results by action; any ``deny`` among them rejects the request."""
    failing: dict[str, list[CheckResult]] = {"deny": [], "warn": [], "audit": []}
    for result in results:
        if result.failed and result.action in failing:
            failing[result.action].append(result)
    denials = failing["deny"]
    return Verdict(
        allowed=not denials, denials=denials, warnings=failing["warn"], audits=failing["audit"]
    )
