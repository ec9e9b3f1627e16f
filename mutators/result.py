"""What a mutator reports: whether it changed the object, and what a person should know."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MutatorResult:
    """The outcome of one mutator on one pod spec.

    ``warnings`` go back to the client (``kubectl`` prints them), e.g. an explicit
    ``runAsUser: 0`` the mutator left alone.
    """

    changed: bool = False
    warnings: tuple[str, ...] = ()
