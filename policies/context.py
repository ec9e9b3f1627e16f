"""What a decision is made on: the request as plain data, with every lookup done up front.

The webhook fills an ``AdmissionContext`` before deciding (namespace labels, live quota usage,
the workload behind a ``scale`` request); checks and mutators only read it.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Literal

JsonObject = dict[str, Any]
Operation = Literal["CREATE", "UPDATE", "DELETE", "CONNECT"]


@dataclass(init=False, unsafe_hash=True)
class UserInfo:
    username: str = ""
    groups: tuple[str, ...] = ()

    # NOTE: as AdmissionContext's, one per request.
    def __init__(self, username: str = "", groups: tuple[str, ...] = ()) -> None:
        self.username = username
        self.groups = groups


NO_USER = UserInfo()  # a request that names no user


@dataclass(frozen=True)
class QuotaStatus:
    """One live ResourceQuota of the namespace: ``hard`` and ``used`` as quantity strings."""

    name: str
    hard: tuple[tuple[str, str], ...] = ()
    used: tuple[tuple[str, str], ...] = ()

    @classmethod
    def from_object(cls, obj: JsonObject) -> QuotaStatus:
        """A ResourceQuota object as ``hard`` (enforced, from status; else spec) and ``used``."""
        status = obj.get("status") or {}
        spec = obj.get("spec") or {}
        hard = status.get("hard") or spec.get("hard") or {}
        used = status.get("used") or {}
        return cls(
            name=str((obj.get("metadata") or {}).get("name", "")),
            hard=tuple(sorted((str(k), str(v)) for k, v in hard.items())),
            used=tuple(sorted((str(k), str(v)) for k, v in used.items())),
        )


@dataclass(frozen=True)
class LookupFailure:
    """A lookup that could not be done; the policy's failure action decides what it means."""

    what: str
    reason: str


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(init=False)
class AdmissionContext:
    """Everything a mutator or check may look at for one admission request."""

    uid: str
    operation: Operation
    kind: str  # request.kind.kind, e.g. "Deployment" or "Scale"
    group: str
    version: str
    resource: str  # request.resource.resource, e.g. "deployments"
    sub_resource: str  # "" or e.g. "scale"
    namespace: str
    name: str
    obj: JsonObject | None
    old_obj: JsonObject | None
    user: UserInfo = NO_USER
    dry_run: bool = False
    now: dt.datetime = field(default_factory=_utc_now)
    # Labels of the namespace; None when unknown (no cluster access).
    namespace_labels: dict[str, str] | None = None
    # Live ResourceQuotas of the namespace, or why they could not be read; None: not looked up.
    quotas: tuple[QuotaStatus, ...] | LookupFailure | None = None
    # For a scale subresource: the workload as the cache holds it, or why it could not be had.
    scale_target: JsonObject | LookupFailure | None = None

    # NOTE: as policies.results.CheckResult: not frozen, since a frozen dataclass sets each of
    # the seventeen fields through object.__setattr__; one context is made per request
    # (callgrind, Admitter._build_context: 47,200 -> 26,600 instructions). Read only by use.
    def __init__(  # noqa: PLR0917 (the signature the dataclass would generate)
        self,
        uid: str,
        operation: Operation,
        kind: str,
        group: str,
        version: str,
        resource: str,
        sub_resource: str,
        namespace: str,
        name: str,
        obj: JsonObject | None,
        old_obj: JsonObject | None,
        user: UserInfo = NO_USER,
        dry_run: bool = False,
        now: dt.datetime | None = None,  # None: now
        namespace_labels: dict[str, str] | None = None,
        quotas: tuple[QuotaStatus, ...] | LookupFailure | None = None,
        scale_target: JsonObject | LookupFailure | None = None,
    ) -> None:
        self.uid = uid
        self.operation = operation
        self.kind = kind
        self.group = group
        self.version = version
        self.resource = resource
        self.sub_resource = sub_resource
        self.namespace = namespace
        self.name = name
        self.obj = obj
        self.old_obj = old_obj
        self.user = user
        self.dry_run = dry_run
        self.now = _utc_now() if now is None else now
        self.namespace_labels = namespace_labels
        self.quotas = quotas
        self.scale_target = scale_target
