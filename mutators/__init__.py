"""Mutators: pure edits of a copy of a workload, one module per mutation.

The webhook calls ``apply_all`` and derives the JSONPatch with ``make_patch``.
"""

from mutators.diff import make_patch
from mutators.pipeline import MutationOutcome, apply_all

__all__ = ["MutationOutcome", "apply_all", "make_patch"]
