"""One audit record: an admission that a rule denied, warned or audited."""

from __future__ import annotations

import datetime as dt
import operator
from dataclasses import dataclass
from typing import Protocol, TypedDict


class RequestFields(TypedDict):
    """The fields every record of one request holds alike."""

    time: dt.datetime
    uid: str
    operation: str
    kind: str
    namespace: str
    name: str
    username: str
    groups: tuple[str, ...]
    dry_run: bool
    images: tuple[str, ...]
    owner: str


@dataclass(frozen=True, init=False)
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

    # NOTE: as policies.results.CheckResult: the __init__ a frozen dataclass generates sets
    # each field through object.__setattr__, about three times what filling __dict__ costs; a
    # validating request makes a record for every rule that denied, warned or audited.
    def __init__(  # noqa: PLR0917 (the signature the dataclass would generate)
        self,
        time: dt.datetime,
        uid: str,
        operation: str,
        kind: str,
        namespace: str,
        name: str,
        username: str,
        groups: tuple[str, ...],
        dry_run: bool,
        policy: str,
        rule: str,
        action: str,
        message: str,
        images: tuple[str, ...] = (),
        owner: str = "",
    ) -> None:
        fields = self.__dict__
        fields["time"] = time
        fields["uid"] = uid
        fields["operation"] = operation
        fields["kind"] = kind
        fields["namespace"] = namespace
        fields["name"] = name
        fields["username"] = username
        fields["groups"] = groups
        fields["dry_run"] = dry_run
        fields["policy"] = policy
        fields["rule"] = rule
        fields["action"] = action
        fields["message"] = message
        fields["images"] = images
        fields["owner"] = owner

    @classmethod
    def of_rule(
        cls, request: RequestFields, *, policy: str, rule: str, action: str, message: str
    ) -> AuditRecord:
        """The record of one rule of a request: ``request``'s fields, copied in one step."""
        record = cls.__new__(cls)
        fields = record.__dict__
        fields.update(request)
        fields["policy"] = policy
        fields["rule"] = rule
        fields["action"] = action
        fields["message"] = message
        return record


# The values of a record's request fields, as a tuple in ``RequestFields`` order: records that
# hold equal ones share everything but the rule (the writer encodes that part once for them).
request_values = operator.attrgetter(*RequestFields.__annotations__)


class AuditSink(Protocol):
    """Where the webhook hands records; ``submit`` must not block on disk or network."""

    def submit(self, records: list[AuditRecord]) -> None: ...

    def close(self) -> None: ...
