"""What a mutator reports: whether it changed the object, and what a person should know."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, init=False)
class MutatorResult:
    """The outcome of one mutator on one pod spec.

    ``warnings`` go back to the client (``kubectl`` prints them), e.g. an explicit
    ``runAsUser: 0`` the mutator left alone.
    """

    changed: bool = False
    warnings: tuple[str, ...] = ()

    # NOTE: as policies.results.CheckResult: the generated __init__ of a frozen dataclass sets
    # each field through object.__setattr__, about three times what filling __dict__ costs;
    # every mutator returns one per request. Still frozen: __setattr__ refuses.
    def __init__(self, changed: bool = False, warnings: tuple[str, ...] = ()) -> None:
        fields = self.__dict__
        fields["changed"] = changed
        fields["warnings"] = warnings
