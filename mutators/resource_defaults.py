"""Default requests and limits for every container (init containers too), as a LimitRange would.

Per resource named in the policy (cpu and memory by default), compared as quantities:

- neither request nor limit: both defaults (a default request above the default limit is
  capped at it);
- a limit only: request = min(limit, default request), so a request never exceeds its limit;
- a request only: limit = the default limit, or, when the request is above that default, the
  request itself.
  NOTE: a LimitRange would set the default limit below the request and the API server would
  then reject the pod; leaving the limit off would leave the container unbounded. Raising the
  limit to the request keeps it bounded and schedulable; the author is told with a warning.
- both: left alone (``override``: both replaced by the defaults, the request capped at the
  limit).

Quantities are written as the policy or the author spelled them, never reformatted. An author's
value that is not a quantity is left alone, with a warning.
"""

from __future__ import annotations

from typing import Any

from mutators.fields import container_label
from mutators.memo import once_per_settings
from mutators.result import MutatorResult
from policies.model import ResourceDefaultsSettings
from policies.podspec import PodTemplate, iter_containers
from policies.quantity import QuantityError, parse_quantity

JsonObject = dict[str, Any]
# Ephemeral containers may not have resources.
RESOURCE_CONTAINER_LISTS = ("initContainers", "containers")


def mutate_pod(
    template: PodTemplate, *, obj: JsonObject, settings: ResourceDefaultsSettings
) -> MutatorResult:
    """Fill in the default requests and limits of every container of ``template``."""
    del obj  # the rule needs nothing beyond the pod spec
    defaults, policy_warnings = _policy_defaults(settings)
    warnings = list(policy_warnings)
    changed = False
    for list_name, container in iter_containers(template.spec, RESOURCE_CONTAINER_LISTS):
        # NOTE: requests and limits are read once for all the resources, not once per resource.
        # Each resource reads and writes only its own key, so what is read here stays right for
        # the next one, even after _set_resource made a dict that was missing.
        requests, limits = _amounts(container.get("resources"))
        for name, default_request, default_limit in defaults:
            request = requests.get(name)
            limit = limits.get(name)
            # NOTE: a resource with both amounts set is left alone without the call (eight
            # keyword arguments) when they are quantities: most containers set both. A value
            # that is not one goes on to _default_resource, which warns.
            if (
                request is not None
                and limit is not None
                and not settings.override
                and _is_quantity(request)
                and _is_quantity(limit)
            ):
                continue
            changed |= _default_resource(
                container,
                name,
                request=request,
                limit=limit,
                default_request=default_request,
                default_limit=default_limit,
                override=settings.override,
                list_name=list_name,
                warnings=warnings,
            )
    return MutatorResult(changed=changed, warnings=tuple(warnings))


@once_per_settings
def _policy_defaults(
    settings: ResourceDefaultsSettings,
) -> tuple[tuple[tuple[str, str | None, str | None], ...], tuple[str, ...]]:
    """(resource name, default request, default limit) of each resource the policy names, the
    defaults that are not quantities left out, and a warning for each of those (the loader should
    have refused it; never raise here)."""
    default_requests = dict(settings.requests)
    default_limits = dict(settings.limits)
    warnings: list[str] = []
    for defaults in (default_requests, default_limits):
        for name, value in list(defaults.items()):
            if not _is_quantity(value):
                warnings.append(f"policy default {name}: {value!r} is not a quantity; ignored")
                del defaults[name]
    names = dict.fromkeys([*default_requests, *default_limits])
    return (
        tuple((name, default_requests.get(name), default_limits.get(name)) for name in names),
        tuple(warnings),
    )


def _amounts(resources: Any) -> tuple[JsonObject, JsonObject]:
    """``resources``' requests and limits to read from; empty when there are none."""
    if not isinstance(resources, dict):
        return {}, {}
    requests = resources.get("requests")
    limits = resources.get("limits")
    return (
        requests if isinstance(requests, dict) else {},
        limits if isinstance(limits, dict) else {},
    )


def _default_resource(
    container: JsonObject,
    name: str,
    *,
    request: Any,
    limit: Any,
    default_request: str | None,
    default_limit: str | None,
    override: bool,
    list_name: str,
    warnings: list[str],
) -> bool:
    for kind, value in (("request", request), ("limit", limit)):
        if value is not None and not _is_quantity(value):
            who = container_label(list_name, container)
            warnings.append(f"{who}: {name} {kind} {value!r} is not a quantity; left alone")
            return False

    new_request, new_limit = request, limit
    if override or (request is None and limit is None):
        new_request = default_request if default_request is not None else request
        new_limit = default_limit if default_limit is not None else limit
        if new_request is not None and new_limit is not None:
            new_request = _smaller(new_request, new_limit)
    elif request is None and default_request is not None:
        new_request = _smaller(limit, default_request)
    elif request is not None and limit is None and default_limit is not None:
        if parse_quantity(request) > parse_quantity(default_limit):
            new_limit = request
            who = container_label(list_name, container)
            warnings.append(
                f"{who}: {name} limit set to its request {request} "
                f"(above the default limit {default_limit})"
            )
        else:
            new_limit = default_limit

    changed = False
    if _differs(new_request, request):
        _set_resource(container, "requests", name=name, value=new_request)
        changed = True
    if _differs(new_limit, limit):
        _set_resource(container, "limits", name=name, value=new_limit)
        changed = True
    return changed


def _differs(new: Any, old: Any) -> bool:
    """Whether writing ``new`` over ``old`` changes the amount (``1`` over ``1000m`` does not)."""
    if new is None or new is old:
        return False
    return old is None or parse_quantity(new) != parse_quantity(old)


def _is_quantity(value: Any) -> bool:
    try:
        parse_quantity(value)
    except QuantityError:
        return False
    return True


def _smaller(left: Any, right: Any) -> Any:
    """The smaller of two quantities as written (``left`` when equal)."""
    return right if parse_quantity(right) < parse_quantity(left) else left


def _set_resource(container: JsonObject, kind: str, *, name: str, value: Any) -> None:
    resources = container.get("resources")
    if not isinstance(resources, dict):
        resources = container["resources"] = {}
    values = resources.get(kind)
    if not isinstance(values, dict):
        values = resources[kind] = {}
    values[name] = value
