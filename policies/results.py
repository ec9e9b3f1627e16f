"""What checks return: results, never exceptions (Kyverno's ``RuleResponse`` is the model)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from policies.model import Action

Status = Literal["pass", "fail", "skip", "error"]
FAILED = ("fail", "error")  # the statuses enforced with the result's action
# The longest message a result keeps, in characters (a message is ~100-300).
# NOTE: messages quote what the user wrote (an annotation value may hold 256 KB, an image
# name more): cut to this, one result cannot swell the API server's response, the user's
# terminal, an audit record past what the audit socket takes in one message, or a log line.
MAX_MESSAGE = 2048


def shorten_message(message: str, limit: int = MAX_MESSAGE) -> str:
    """``message`` if it has at most ``limit`` characters, else its beginning and its end
    (where a message says what to fix) around a note of how much was cut."""
    if len(message) <= limit:
        return message
    keep = limit // 2
    cut = len(message) - 2 * keep
    return f"{message[:keep]} [... {cut} characters cut ...] {message[-keep:]}"


@dataclass(init=False, unsafe_hash=True)
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

    # NOTE: not frozen: the __init__ a frozen dataclass generates sets each field through
    # object.__setattr__, about three times what a plain assignment costs, and mypyc compiles a
    # plain class's fields to slots (README: the compiled build); a request makes a result for
    # every rule of every policy (bench/). Read only by use: nothing assigns after __init__.
    def __init__(  # noqa: PLR0917 (the signature the dataclass would generate)
        self,
        policy: str,
        rule: str,
        status: Status,
        message: str,
        action: Action = "deny",
        path: str = "",
    ) -> None:
        self.policy = policy
        self.rule = rule
        self.status = status
        self.message = message if len(message) <= MAX_MESSAGE else shorten_message(message)
        self.action = action
        self.path = path
        self.failed = status in FAILED
