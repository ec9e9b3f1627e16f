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


@dataclass(frozen=True)
class UserInfo:
    username: str = ""
    groups: tuple[str, ...] = ()


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


@dataclass(frozen=True)
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
    user: UserInfo = UserInfo()
    dry_run: bool = False
    now: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))
    # Labels of the namespace; None when unknown (no cluster access).
    namespace_labels: dict[str, str] | None = None
    # Live ResourceQuotas of the namespace, or why they could not be read; None: not looked up.
    quotas: tuple[QuotaStatus, ...] | LookupFailure | None = None
    # For a scale subresource: the workload as the cache holds it, or why it could not be had.
    scale_target: JsonObject | LookupFailure | None = None
