"""What a mutator reports: whether it changed the object, and what a person should know."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(init=False, unsafe_hash=True)
class MutatorResult:
    """The outcome of one mutator on one pod spec.

    ``warnings`` go back to the client (``kubectl`` prints them), e.g. an explicit
    ``runAsUser: 0`` the mutator left alone.
    """

    changed: bool = False
    warnings: tuple[str, ...] = ()

    # NOTE: not frozen, as policies.results.CheckResult; every mutator returns one per
    # request. Read only by use: nothing assigns after __init__.
    def __init__(self, changed: bool = False, warnings: tuple[str, ...] = ()) -> None:
        self.changed = changed
        self.warnings = warnings
