"""The quota check: per-workload budgets from the policy and the namespace's live ResourceQuotas.

Rules (ids):
- ``quota.budget``: the first budget of the policy whose namespace globs match caps what one
  workload may take in total: replicas x the effective pod request (or limit), and pods.
- ``quota.resource-quota``: the workload must fit in ``hard - used`` of every live
  ResourceQuota of the namespace. On UPDATE only the increase over the old object counts (its
  pods are already in ``used``).

What one pod takes is what the scheduler counts: per resource, the larger of the sum of the app
containers (plus restartable init "sidecar" containers) and the largest init container (plus the
sidecars started before it), plus ``spec.overhead``. A container with a limit and no request
requests its limit (the API server defaults it so on the pod). A container with a request and no
limit counts its request as its limit (the least a LimitRange default or our resource-defaults
mutator gives it).

How many pods: ``spec.replicas`` (default 1) of Deployment, StatefulSet, ReplicaSet and Rollout;
``parallelism`` (default 1, at most ``completions``) of a Job and of a CronJob's job template
(one run of it at a time); 1 for a Pod. A DaemonSet runs one pod per node and the node count is
not ours to know: it counts as one pod, and its messages say "per node".

A ``scale`` request carries an ``autoscaling/v1 Scale``: the replicas come from it, the pod
template from ``ctx.scale_target`` (the workload as the cache holds it). When the cluster could
not be read (``LookupFailure``), ``failure_action`` decides: ``deny`` rejects, ``allow`` lets
the request through with a warning (or the rule's own ``audit``) that says the quota was not
checked. An object owned by a controller (a ReplicaSet of a Deployment, a Job's pods) is skipped:
its owner was checked when it was admitted, and the API server's own quota admission guards pods.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any, Literal, NamedTuple

from policies.actions import resolve_actions
from policies.context import AdmissionContext, LookupFailure, QuotaStatus
from policies.globs import compile_fnmatch
from policies.model import Action, Policy, QuotaSettings, ResourceBudget
from policies.podspec import PodTemplate, find_pod_templates
from policies.quantity import QuantityError, format_quantity, parse_quantity
from policies.results import CheckResult
from policies.workload import Workload, describe_workload, format_path

JsonObject = dict[str, Any]
Amounts = dict[str, Decimal]
Kind = Literal["requests", "limits", "pods"]

REPLICA_KINDS = frozenset({"Deployment", "StatefulSet", "ReplicaSet", "Rollout"})
BINARY_RESOURCES = ("memory", "ephemeral-storage", "storage", "hugepages-")
ZERO = Decimal(0)
BUDGET = "quota.budget"
RESOURCE_QUOTA = "quota.resource-quota"
RULES = (BUDGET, RESOURCE_QUOTA)


class ResourceReadError(ValueError):
    """A container's resources hold a value that is not a quantity."""

    def __init__(self, path: str, value: object) -> None:
        super().__init__(f"{path} is {value!r}, which is not a Kubernetes quantity")
        self.path = path
        self.value = value

    def inside(self, prefix: str) -> ResourceReadError:
        """The same error, its path under ``prefix`` (``spec.containers[0]``)."""
        return ResourceReadError(f"{prefix}.{self.path}", self.value)


# NOTE: PodResources and Demand are NamedTuples, not frozen dataclasses: every request makes
# them, and a frozen dataclass costs several times as much to build on Python 3.11.
class PodResources(NamedTuple):
    """What one pod of a workload takes, per resource name."""

    requests: Amounts
    limits: Amounts

    def amount(self, kind: Kind, resource: str) -> Decimal:
        if kind == "pods":
            return Decimal(1)
        return (self.requests if kind == "requests" else self.limits).get(resource, ZERO)


class Demand(NamedTuple):
    """A workload's pods: how many, what each takes, and what the old object had (UPDATE)."""

    workload: str  # "deployment ml-prod/recommender"
    replicas: int
    pod: PodResources
    path: str  # the field the result is about
    per_node: bool = False  # a DaemonSet: one pod per node
    old_replicas: int | None = None  # None: nothing was there before (CREATE)
    old_pod: PodResources | None = None

    def total(self, kind: Kind, resource: str) -> Decimal:
        return self.replicas * self.pod.amount(kind, resource)

    def old_total(self, kind: Kind, resource: str) -> Decimal:
        if self.old_replicas is None or self.old_pod is None:
            return ZERO
        return self.old_replicas * self.old_pod.amount(kind, resource)

    def describe(self, kind: Kind, resource: str, *, change: bool = True) -> str:
        """``deployment ml-prod/x asks for 3 x 2 nvidia.com/gpu = 6`` (with ``change``, on
        UPDATE: how much more than the old object that is)."""
        label = quota_label(kind, resource)
        pods = "pod per node" if self.per_node else ("pod" if self.replicas == 1 else "pods")
        if kind == "pods":
            text = f"{self.workload} asks for {self.replicas} {pods}"
        else:
            per_pod = format_amount(resource, self.pod.amount(kind, resource))
            total = format_amount(resource, self.total(kind, resource))
            text = f"{self.workload} asks for {self.replicas} x {per_pod} {label} = {total}"
            if self.per_node:
                text += " per node"
        if change and self.old_replicas is not None:
            more = format_amount(
                resource, self.total(kind, resource) - self.old_total(kind, resource)
            )
            old = format_amount(resource, self.old_total(kind, resource))
            unit = "" if kind == "pods" else f" {label}"
            text += f", {more}{unit} more than the {old} it has now"
        return text


def check_quota(
    ctx: AdmissionContext, workload: Workload, *, policy: Policy, settings: QuotaSettings
) -> list[CheckResult]:
    """The budget and live ResourceQuota rules of ``settings`` on the request's object."""
    budget = find_budget(settings.budgets, ctx.namespace)
    rules = ([BUDGET] if budget is not None else []) + (
        [RESOURCE_QUOTA] if settings.resource_quota else []
    )
    actions = resolve_actions(policy, RULES, settings.action)

    def skip_all(message: str) -> list[CheckResult]:
        return [CheckResult(policy.name, r, "skip", message, actions[r]) for r in rules]

    if not rules:
        return []
    owner = workload.controller
    if owner is not None:
        return skip_all(
            f"{workload.description} is managed by {owner}; "
            "its quota was checked when that was admitted"
        )
    try:
        demand = find_demand(ctx, workload)
    except ResourceReadError as error:
        return [
            CheckResult(policy.name, r, "error", str(error), actions[r], error.path) for r in rules
        ]
    if isinstance(demand, LookupFailure):
        return [
            lookup_failure_result(
                demand,
                policy=policy,
                rule=r,
                action=actions[r],
                settings=settings,
                subject=f"{ctx.resource}/scale of {ctx.namespace}/{ctx.name}",
            )
            for r in rules
        ]
    if demand is None:
        return skip_all(f"{workload.description} carries no pod spec")
    results: list[CheckResult] = []
    if budget is not None:
        results += check_budget(
            demand, budget, policy=policy, action=actions[BUDGET], namespace=ctx.namespace
        )
    if settings.resource_quota:
        results += check_resource_quotas(
            demand,
            ctx.quotas,
            policy=policy,
            action=actions[RESOURCE_QUOTA],
            settings=settings,
            namespace=ctx.namespace,
        )
    return results


def find_budget(budgets: Iterable[ResourceBudget], namespace: str) -> ResourceBudget | None:
    """The first budget whose namespace globs match ``namespace``."""
    for budget in budgets:
        if compile_fnmatch(budget.namespaces).matches(namespace):
            return budget
    return None


def find_demand(ctx: AdmissionContext, workload: Workload) -> Demand | LookupFailure | None:
    """What the request asks for; None when its object carries no pod spec."""
    obj = workload.obj
    if ctx.sub_resource == "scale":
        return find_scale_demand(ctx, obj)
    if not workload.templates:
        return None
    replicas, pod, path = read_template(obj, workload.templates[0])
    demand = Demand(
        workload=workload.description,
        replicas=replicas,
        pod=pod,
        path=path,
        per_node=obj.get("kind") == "DaemonSet",
    )
    if ctx.operation == "UPDATE" and ctx.old_obj is not None:
        old = read_workload(ctx.old_obj, namespace=ctx.namespace)
        if old is not None:
            return demand._replace(old_replicas=old[0], old_pod=old[1])
    return demand


def find_scale_demand(ctx: AdmissionContext, scale: JsonObject) -> Demand | LookupFailure | None:
    """A ``scale`` request: replicas from the Scale objects, the pod from the cached workload."""
    target = ctx.scale_target
    if target is None:
        target = LookupFailure(
            what=f"{ctx.resource} {ctx.namespace}/{ctx.name}", reason="no cluster view to read it"
        )
    if isinstance(target, LookupFailure):
        return target
    templates = find_pod_templates(target)
    if not templates:
        return None
    pod = read_pod_resources(templates[0].spec, path=format_path((*templates[0].path, "spec")))
    old_replicas = scale_replicas(ctx.old_obj) if ctx.old_obj is not None else None
    return Demand(
        workload=describe_workload(target, namespace=ctx.namespace),
        replicas=scale_replicas(scale),
        pod=pod,
        path="spec.replicas",
        per_node=target.get("kind") == "DaemonSet",
        old_replicas=old_replicas,
        old_pod=pod if old_replicas is not None else None,
    )


def scale_replicas(scale: JsonObject) -> int:
    """``spec.replicas`` of an ``autoscaling/v1 Scale`` (0 when omitted, as it serialises)."""
    spec = scale.get("spec")
    replicas = spec.get("replicas") if isinstance(spec, dict) else None
    return replicas if isinstance(replicas, int) and not isinstance(replicas, bool) else 0


def read_workload(obj: JsonObject, *, namespace: str) -> tuple[int, PodResources, str] | None:
    """(pod count, one pod's resources, pod spec path) of a workload; None without a pod spec."""
    templates = find_pod_templates(obj)
    return read_template(obj, templates[0]) if templates else None


def read_template(obj: JsonObject, template: PodTemplate) -> tuple[int, PodResources, str]:
    """(pod count, one pod's resources, pod spec path) of a workload and its pod template."""
    path = format_path((*template.path, "spec"))
    return count_pods(obj), read_pod_resources(template.spec, path=path), path


def count_pods(obj: JsonObject) -> int:
    """How many pods of the workload run at once (see the module docstring)."""
    kind = obj.get("kind")
    spec = _dict_at(obj, "spec")
    if kind in REPLICA_KINDS:
        return _int_field(spec, "replicas", 1)
    if kind == "CronJob":
        spec = _dict_at(_dict_at(spec, "jobTemplate"), "spec")
        kind = "Job"
    if kind == "Job":
        parallelism = _int_field(spec, "parallelism", 1)
        return min(parallelism, _int_field(spec, "completions", parallelism))
    return 1


def read_pod_resources(spec: JsonObject, *, path: str) -> PodResources:
    """What one pod takes, as the scheduler counts it; raises ResourceReadError on bad values."""
    # NOTE: one pass reads each container's values once, and one more sums both kinds
    # (requests, limits); a container without resources is left out, as it adds nothing.
    init = _read_containers(spec, "initContainers", path)
    app = _read_containers(spec, "containers", path)
    overhead = spec.get("overhead")
    extra: Amounts = {}
    if isinstance(overhead, dict):
        try:
            extra = _parse_amounts(overhead)
        except ResourceReadError as error:
            raise error.inside(f"{path}.overhead") from None
    pod = PodResources({}, {})
    for kind, total in enumerate(pod):  # requests, then limits
        _sum_effective(total, kind, init, app, extra)
    return pod


# What one container counts for, ((requests, limits), whether it is a restartable init
# "sidecar"). NOTE: plain tuples, not a NamedTuple: one is made per container on every request,
# and a NamedTuple cost ~3,000 instructions more each (callgrind).
Counted = tuple[tuple[Amounts, Amounts], bool]


def _sum_effective(
    total: Amounts, kind: int, init: list[Counted], app: list[Counted], overhead: Amounts
) -> None:
    """Add into ``total`` what the pod takes of ``kind`` (0: requests, 1: limits)."""
    init_peak: Amounts = {}
    for amounts_by_kind, sidecar in init:
        amounts = amounts_by_kind[kind]
        if sidecar:  # it keeps running: it counts from here on, and the total starts with it
            _add(total, amounts)
            _raise_to(init_peak, total)
        else:
            running = dict(total)
            _add(running, amounts)
            _raise_to(init_peak, running)
    for amounts_by_kind, _ in app:
        _add(total, amounts_by_kind[kind])
    if init_peak:
        _raise_to(total, init_peak)
    if overhead:
        _add(total, overhead)


def _read_containers(spec: JsonObject, list_name: str, path: str) -> list[Counted]:
    containers = spec.get(list_name)
    if not isinstance(containers, list):
        return []
    read: list[Counted] = []
    for index, container in enumerate(containers):
        if not isinstance(container, dict):
            continue
        resources = container.get("resources")
        if not resources or not isinstance(resources, dict):
            continue
        try:
            requests = _parse_amounts(resources.get("requests"), field="resources.requests")
            limits = _parse_amounts(resources.get("limits"), field="resources.limits")
        except ResourceReadError as error:
            raise error.inside(f"{path}.{list_name}[{index}]") from None
        # A limit without a request requests the limit; a request without a limit counts as the
        # limit too (at least the request).
        amounts_by_kind = ({**limits, **requests}, {**requests, **limits})
        read.append((amounts_by_kind, container.get("restartPolicy") == "Always"))
    return read


def _parse_amounts(raw: object, *, field: str = "") -> Amounts:
    """Quantities by resource name; ResourceReadError's path is ``field.name``."""
    if not isinstance(raw, dict):
        return {}
    amounts: Amounts = {}
    for name, value in raw.items():
        try:
            amounts[str(name)] = parse_quantity(value)
        except QuantityError:
            raise ResourceReadError(f"{field}.{name}" if field else str(name), value) from None
    return amounts


def _add(into: Amounts, amounts: Mapping[str, Decimal]) -> None:
    for name, amount in amounts.items():
        into[name] = into.get(name, ZERO) + amount


def _raise_to(into: Amounts, floor: Mapping[str, Decimal]) -> None:
    for name, amount in floor.items():
        if amount > into.get(name, ZERO):
            into[name] = amount


def _dict_at(node: JsonObject, key: str) -> JsonObject:
    value = node.get(key)
    return value if isinstance(value, dict) else {}


def _int_field(spec: JsonObject, key: str, default: int) -> int:
    value = spec.get(key)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return default


# --- rules --------------------------------------------------------------------------------------


def check_budget(
    demand: Demand, budget: ResourceBudget, *, policy: Policy, action: Action, namespace: str
) -> list[CheckResult]:
    """``quota.budget``: the workload's totals (not only an UPDATE's increase) against caps."""
    results: list[CheckResult] = []
    for kind, resource, cap in budget_caps(budget.requests, budget.limits, budget.pods):
        total = demand.replicas if kind == "pods" else demand.total(kind, resource)
        if total > cap:
            message = (
                f"{demand.describe(kind, resource, change=False)}; one workload in namespace "
                f"{namespace} may take at most {format_amount(resource, cap)} "
                f"(budget of policy {policy.name}); "
                "lower the replicas or the per-pod amount"
            )
            path = "spec.replicas" if kind == "pods" else demand.path
            results.append(CheckResult(policy.name, BUDGET, "fail", message, action, path))
    if not results:
        message = f"{demand.workload} fits the per-workload budget of policy {policy.name}"
        results.append(CheckResult(policy.name, BUDGET, "pass", message, action))
    return results


@functools.lru_cache(maxsize=1024)
def budget_caps(
    requests: tuple[tuple[str, str], ...], limits: tuple[tuple[str, str], ...], pods: int | None
) -> tuple[tuple[Kind, str, Decimal], ...]:
    """A budget's caps as (kind, resource, amount), parsed once per budget of the policy set."""
    caps: list[tuple[Kind, str, Decimal]] = [
        ("requests", name, parse_quantity(value)) for name, value in requests
    ]
    caps += [("limits", name, parse_quantity(value)) for name, value in limits]
    if pods is not None:
        caps.append(("pods", "pods", Decimal(pods)))
    return tuple(caps)


def check_resource_quotas(
    demand: Demand,
    quotas: tuple[QuotaStatus, ...] | LookupFailure | None,
    *,
    policy: Policy,
    action: Action,
    settings: QuotaSettings,
    namespace: str,
) -> list[CheckResult]:
    """``quota.resource-quota``: what the request adds must fit in what each quota has left."""
    rule = RESOURCE_QUOTA
    if quotas is None:
        message = f"the ResourceQuotas of {namespace} were not looked up (no cluster view)"
        return [CheckResult(policy.name, rule, "skip", message, action)]
    if isinstance(quotas, LookupFailure):
        return [
            lookup_failure_result(
                quotas,
                policy=policy,
                rule=rule,
                action=action,
                settings=settings,
                subject=demand.workload,
            )
        ]
    results: list[CheckResult] = []
    for quota in quotas:
        used = dict(quota.used)
        for key, hard_raw in quota.hard:
            tracked = parse_quota_key(key)
            if tracked is None:
                continue
            kind, resource = tracked
            try:
                hard = parse_quantity(hard_raw)
                left = hard - parse_quantity(used.get(key, "0"))
            except QuantityError:
                message = (
                    f"ResourceQuota {quota.name} has {key} hard={hard_raw!r} used={used.get(key)!r}"
                )
                results.append(CheckResult(policy.name, rule, "error", message, action))
                continue
            added = demand.total(kind, resource) - demand.old_total(kind, resource)
            if added <= 0 or added <= left:
                continue
            message = (
                f"{demand.describe(kind, resource)}; the namespace has "
                f"{format_amount(resource, max(left, ZERO))} left of "
                f"{format_amount(resource, hard)} (ResourceQuota {quota.name})"
            )
            path = "spec.replicas" if kind == "pods" else demand.path
            results.append(CheckResult(policy.name, rule, "fail", message, action, path))
    if not results:
        names = ", ".join(q.name for q in quotas)
        message = (
            f"{demand.workload} fits in ResourceQuota {names}"
            if quotas
            else f"namespace {namespace} has no ResourceQuota"
        )
        results.append(CheckResult(policy.name, rule, "pass", message, action))
    return results


def lookup_failure_result(
    failure: LookupFailure,
    *,
    policy: Policy,
    rule: str,
    action: Action,
    settings: QuotaSettings,
    subject: str,
) -> CheckResult:
    """The failure action's verdict on a rule that could not be checked, saying so."""
    cause = f"cannot read {failure.what}: {failure.reason}"
    if settings.failure_action == "deny":
        message = (
            f"{subject} was not admitted because its quota cannot be checked ({cause}); "
            "the policy's failureAction is deny: retry once the cluster can be read"
        )
        return CheckResult(policy.name, rule, "error", message, "deny")
    message = (
        f"{subject} was admitted without its quota being checked ({cause}); "
        "the policy's failureAction is allow"
    )
    # NOTE: allowed, but never silently: a rule that denies warns instead; warn/audit stay.
    return CheckResult(policy.name, rule, "error", message, "warn" if action == "deny" else action)


def parse_quota_key(key: str) -> tuple[Kind, str] | None:
    """What a ResourceQuota ``hard`` key tracks of pods: ``requests.cpu`` -> (requests, cpu)."""
    if key == "pods":
        return "pods", "pods"
    if key in ("cpu", "memory", "ephemeral-storage"):
        return "requests", key
    for prefix in ("requests.", "limits."):
        if key.startswith(prefix):
            kind: Kind = "requests" if prefix == "requests." else "limits"
            return kind, key[len(prefix) :]
    return None


def quota_label(kind: Kind, resource: str) -> str:
    """How messages name a resource: ``nvidia.com/gpu`` for requests, ``limits.cpu``."""
    return f"limits.{resource}" if kind == "limits" else resource


def format_amount(resource: str, amount: Decimal | int) -> str:
    """A quantity as people write it for ``resource`` (``1536Mi`` for memory, ``1500m`` cpu)."""
    binary = resource.startswith(BINARY_RESOURCES)
    return format_quantity(Decimal(amount), binary=binary)
