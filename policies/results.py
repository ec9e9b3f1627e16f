"""What checks return: results, never exceptions (Kyverno's ``RuleResponse`` is the model)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from policies.model import Action

Status = Literal["pass", "fail", "skip", "error"]
FAILED = ("fail", "error")  # the statuses enforced with the result's action


@dataclass(frozen=True, init=False)
class CheckResult:
    """The outcome of one rule of one policy on one object.

    ``rule`` is a stable id such as ``images.no-latest``; ``path`` the field it is about, such as
    ``spec.template.spec.containers[0].image``. A ``fail`` or ``error`` result is enforced with
    ``action``: ``deny`` rejects, ``warn`` allows with a warning, ``audit`` allows and records.
    """

    policy: str
    rule: str
    status: Status
    message: str
    action: Action = "deny"
    path: str = ""
    # Whether ``status`` is one enforced with ``action`` (fail or error); set by __init__.
    # NOTE: an attribute, not a property: the webhook asks it of every result, several times
    # per request, and a property call cost ~1,000 instructions each (callgrind).
    failed: bool = field(init=False, repr=False, compare=False)

    # NOTE: the __init__ a frozen dataclass generates sets each field through
    # object.__setattr__, about three times what filling __dict__ costs; a request makes a
    # result for every rule of every policy (bench/). Still frozen: __setattr__ refuses.
    def __init__(  # noqa: PLR0917 (the signature the dataclass would generate)
        self,
        policy: str,
        rule: str,
        status: Status,
        message: str,
        action: Action = "deny",
        path: str = "",
    ) -> None:
        fields = self.__dict__
        fields["policy"] = policy
        fields["rule"] = rule
        fields["status"] = status
        fields["message"] = message
        fields["action"] = action
        fields["path"] = path
        fields["failed"] = status in FAILED
