"""One audit record: an admission that a rule denied, warned or audited."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class AuditRecord:
    time: dt.datetime  # UTC, when the decision was made
    uid: str  # request uid
    operation: str
    kind: str
    namespace: str
    name: str
    username: str
    groups: tuple[str, ...]
    dry_run: bool
    policy: str
    rule: str
    action: str  # deny | warn | audit
    message: str
    images: tuple[str, ...] = ()
    owner: str = ""  # the workload: "Deployment/recommendation-model"


class AuditSink(Protocol):
    """Where the webhook hands records; ``submit`` must not block on disk or network."""

    def submit(self, records: list[AuditRecord]) -> None: ...

    def close(self) -> None: ...
