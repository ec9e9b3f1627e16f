"""The admission pipeline: one straight path from a parsed request to a response.

``request -> lookups into an AdmissionContext -> select policies -> mutators.apply_all or
policies.engine.evaluate -> build_response -> audit records``. The server and ``mlgate policy
test`` both call ``Admitter.admit``, so what the offline test shows is what the cluster gets.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from mutators import apply_all
from mutators.diff import make_patch
from mutators.pipeline import enabled_mutators
from policies.context import AdmissionContext, LookupFailure, QuotaStatus, UserInfo
from policies.engine import Verdict, evaluate, summarize
from policies.matching import select_policies, subject_object
from policies.model import Policy, PolicySet
from policies.podspec import template_path
from policies.results import CheckResult
from policies.workload import Workload
from webhook.audit.record import AuditRecord, RequestFields
from webhook.review import AdmissionRequest, AdmissionReviewWire, build_response

log = logging.getLogger("mlgate.admission")

Webhook = Literal["mutate", "validate"]
INJECT_ANNOTATION = "mlgate.io/inject"
# A Pod's spec, and a Job's pod template, cannot change after creation: the API server rejects
# an UPDATE (even `kubectl label`) whose patch adds to them. Objects mlgate admitted already
# carry its defaults, so nothing is lost by leaving these updates alone.
IMMUTABLE_ON_UPDATE = frozenset({"Pod", "Job"})
# The webhook never acts in these, whatever the policies say: mlgate must always be able to
# restart itself, and the control plane's own namespace is not ours to block.
ALWAYS_EXEMPT_NAMESPACES = frozenset({"kube-system"})
SCALABLE_RESOURCES = frozenset({"deployments", "statefulsets", "replicasets", "rollouts"})


class ClusterLookups(Protocol):
    """What the pipeline reads from the cluster, from caches (``webhook.kube.ClusterView``)."""

    def namespace_labels(self, namespace: str) -> dict[str, str] | None: ...

    def resource_quotas(self, namespace: str) -> tuple[QuotaStatus, ...] | LookupFailure: ...

    def workload(
        self, *, group: str, resource: str, namespace: str, name: str
    ) -> dict[str, Any] | LookupFailure: ...


class PolicySource(Protocol):
    @property
    def current(self) -> PolicySet | None: ...


@dataclass(frozen=True, init=False)
class Outcome:
    """A decision, with what goes to the decision log, metrics and the audit store."""

    review: AdmissionReviewWire
    decision: str  # allow | patch | deny | skip
    policies: tuple[str, ...] = ()
    results: tuple[CheckResult, ...] = ()
    mutators: tuple[str, ...] = ()
    records: tuple[AuditRecord, ...] = ()
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    # NOTE: as policies.results.CheckResult: one per request, and the generated frozen
    # __init__ sets each field through object.__setattr__. Still frozen.
    def __init__(  # noqa: PLR0917 (the signature the dataclass would generate)
        self,
        review: AdmissionReviewWire,
        decision: str,
        policies: tuple[str, ...] = (),
        results: tuple[CheckResult, ...] = (),
        mutators: tuple[str, ...] = (),
        records: tuple[AuditRecord, ...] = (),
        note: str = "",
        extra: dict[str, Any] | None = None,
    ) -> None:
        fields = self.__dict__
        fields["review"] = review
        fields["decision"] = decision
        fields["policies"] = policies
        fields["results"] = results
        fields["mutators"] = mutators
        fields["records"] = records
        fields["note"] = note
        fields["extra"] = {} if extra is None else extra


class NotReadyError(Exception):
    """No policy set has ever loaded; the server answers 503 and /readyz says so."""


class Admitter:
    """Turns parsed admission requests into responses under the policy set in force."""

    def __init__(
        self,
        *,
        policies: PolicySource,
        cluster: ClusterLookups | None = None,
        own_namespace: str = "mlgate-system",
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self.policies = policies
        self.cluster = cluster
        self.exempt_namespaces = ALWAYS_EXEMPT_NAMESPACES | {own_namespace}
        self.clock = clock
        self._split: tuple[PolicySet, dict[Webhook, tuple[Policy, ...]]] | None = None

    def admit(self, webhook: Webhook, request: AdmissionRequest) -> Outcome:
        policy_set = self.policies.current
        if policy_set is None:
            raise NotReadyError("no valid policy set is loaded yet")
        skip = self._reason_to_skip(webhook, request)
        if skip:
            return Outcome(review=build_response(request.uid), decision="skip", note=skip)
        ctx = self._build_context(request, quotas_needed=webhook == "validate")
        selected = select_policies(ctx, self._policies_for(webhook, policy_set))
        if webhook == "mutate":
            return self._mutate(ctx, request, selected)
        return self._validate(ctx, request, selected)

    # --- steps ------------------------------------------------------------------------------

    def _policies_for(self, webhook: Webhook, policy_set: PolicySet) -> tuple[Policy, ...]:
        """The policies of the set that ``webhook`` acts on, worked out once per set."""
        split = self._split
        if split is None or split[0] is not policy_set:
            # NOTE: matching a policy costs more than this test, and most policies only mutate
            # or only check; a reload replaces the set, and with it this (bench/).
            split = self._split = (policy_set, split_by_webhook(policy_set.policies))
        return split[1][webhook]

    def _reason_to_skip(self, webhook: Webhook, request: AdmissionRequest) -> str:
        if request.operation in ("DELETE", "CONNECT"):
            return f"{request.operation} is always allowed"
        if request.namespace in self.exempt_namespaces:
            return f"namespace {request.namespace} is never acted on"
        if request.sub_resource:
            scale = request.sub_resource == "scale" and request.resource in SCALABLE_RESOURCES
            if webhook == "validate" and scale:
                return ""
            return f"subresource {request.sub_resource} is not checked"
        if template_path(request.kind) is None:
            return f"kind {request.kind} carries no pod spec"
        return ""

    def _build_context(self, request: AdmissionRequest, *, quotas_needed: bool) -> AdmissionContext:
        """The request as plain data, with the cluster lookups it needs done up front (from
        caches: ResourceQuotas only for validation, which alone checks them)."""
        cluster = self.cluster
        namespace_labels = None
        quotas: tuple[QuotaStatus, ...] | LookupFailure | None = None
        scale_target: dict[str, Any] | LookupFailure | None = None
        if cluster is not None:
            namespace_labels = cluster.namespace_labels(request.namespace)
            if quotas_needed:
                quotas = cluster.resource_quotas(request.namespace)
            if request.sub_resource == "scale":
                scale_target = cluster.workload(
                    group=request.resource_group,
                    resource=request.resource,
                    namespace=request.namespace,
                    name=request.name,
                )
        elif request.sub_resource == "scale":
            scale_target = LookupFailure(
                what=f"{request.resource}/{request.name}", reason="no cluster access configured"
            )
        return AdmissionContext(
            uid=request.uid,
            operation=request.operation,  # type: ignore[arg-type]
            kind=request.kind,
            group=request.group,
            version=request.version,
            resource=request.resource,
            sub_resource=request.sub_resource,
            namespace=request.namespace,
            name=request.name,
            obj=request.obj,
            old_obj=request.old_obj,
            user=UserInfo(username=request.username, groups=request.groups),
            dry_run=request.dry_run,
            now=self.clock(),
            namespace_labels=namespace_labels,
            quotas=quotas,
            scale_target=scale_target,
        )

    def _mutate(
        self, ctx: AdmissionContext, request: AdmissionRequest, selected: list[Policy]
    ) -> Outcome:
        obj = request.obj
        assert obj is not None  # CREATE and UPDATE carry an object (checked by parse_review)
        if not selected:
            return Outcome(build_response(request.uid), "allow", note="no mutating policy matches")
        if request.operation == "UPDATE" and request.kind in IMMUTABLE_ON_UPDATE:
            note = f"{request.kind} pod spec is immutable: UPDATE is not mutated"
            return Outcome(build_response(request.uid), "allow", note=note)
        outcome = apply_all(obj, selected)
        if outcome.opted_out:
            return Outcome(build_response(request.uid), "allow", note=f"{INJECT_ANNOTATION}: false")
        patch = make_patch(obj, outcome.obj) if outcome.changed_by else []
        review = build_response(
            request.uid,
            patch=list(patch),  # type: ignore[arg-type]
            warnings=outcome.warnings,
        )
        return Outcome(
            review=review,
            decision="patch" if patch else "allow",
            policies=outcome.changed_by,
            mutators=outcome.mutators,
            extra={"patch_ops": len(patch)},
        )

    def _validate(
        self, ctx: AdmissionContext, request: AdmissionRequest, selected: list[Policy]
    ) -> Outcome:
        if not selected:
            return Outcome(
                build_response(request.uid), "allow", note="no validating policy matches"
            )
        assert ctx.obj is not None  # CREATE and UPDATE carry an object (checked by parse_review)
        workload = Workload.of(ctx.obj, namespace=ctx.namespace)
        results = evaluate(ctx, selected, workload=workload)
        verdict = summarize(results)
        review = build_response(
            request.uid,
            allowed=verdict.allowed,
            message=denial_message(ctx, verdict),
            warnings=[f"[{r.policy}] {r.message}" for r in verdict.warnings],
        )
        acted = tuple(dict.fromkeys(r.policy for r in results if r.failed))
        return Outcome(
            review=review,
            decision="allow" if verdict.allowed else "deny",
            policies=acted,
            results=tuple(results),
            records=tuple(build_audit_records(ctx, verdict, workload=workload)),
        )


def split_by_webhook(policies: tuple[Policy, ...]) -> dict[Webhook, tuple[Policy, ...]]:
    """In set order: the policies that turn on a mutator, and those that turn on a check."""
    return {
        "mutate": tuple(p for p in policies if enabled_mutators(p.mutate)),
        "validate": tuple(p for p in policies if p.validate.checks),
    }


def denial_message(ctx: AdmissionContext, verdict: Verdict) -> str:
    """Every denying rule, one per line, each saying what to change."""
    if verdict.allowed:
        return ""
    what = f"{workload_kind_name(ctx).lower()} {ctx.namespace}/{ctx.name}"
    count = len(verdict.denials)
    lines = [f"mlgate denied {what}: {count} policy violation{'s' if count > 1 else ''}"]
    lines += [f"- [{r.policy}/{r.rule}] {r.message}" for r in verdict.denials]
    return "\n".join(lines)


def workload_kind_name(ctx: AdmissionContext) -> str:
    obj = subject_object(ctx)
    kind = obj.get("kind") if isinstance(obj, dict) else None
    return kind if isinstance(kind, str) else ctx.kind


def build_audit_records(
    ctx: AdmissionContext, verdict: Verdict, *, workload: Workload | None = None
) -> list[AuditRecord]:
    """One record per rule that denied, warned or audited.

    ``workload`` is the one the checks read, if any: its containers are the records' images
    when it is of the object the records are about (not for a ``scale`` request).
    """
    acted = (*verdict.denials, *verdict.warnings, *verdict.audits)
    if not acted:
        return []
    obj = subject_object(ctx) or {}
    if workload is None or workload.obj is not obj:
        workload = Workload.of(obj, namespace=ctx.namespace)
    images = workload.images()
    kind = workload_kind_name(ctx)
    request: RequestFields = {
        "time": ctx.now,
        "uid": ctx.uid,
        "operation": ctx.operation,
        "kind": kind,
        "namespace": ctx.namespace,
        "name": ctx.name,
        "username": ctx.user.username,
        "groups": ctx.user.groups,
        "dry_run": ctx.dry_run,
        "images": images,
        "owner": f"{kind}/{ctx.name}",
    }
    return [
        AuditRecord.of_rule(
            request, policy=r.policy, rule=r.rule, action=r.action, message=r.message
        )
        for r in acted
    ]


def elapsed_since(start: float) -> float:
    return time.perf_counter() - start
