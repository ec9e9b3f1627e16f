"""``fnmatch`` globs over names (namespaces), compiled once per tuple of patterns.

NOTE: every request tries the namespace globs of every loaded policy (matching, budgets,
exemptions); ``fnmatchcase`` one pattern at a time was most of the matching cost with 100
policies (bench/). A tuple of the policy model compiles to one set of names and one regular
expression, remembered.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from fnmatch import translate

GLOB_CHARACTERS = "*?["


@dataclass(frozen=True)
class GlobSet:
    """Names and ``fnmatch`` globs as one set: the names, and one regular expression."""

    names: frozenset[str]
    pattern: re.Pattern[str] | None

    def matches(self, value: str) -> bool:
        return value in self.names or (self.pattern is not None and bool(self.pattern.match(value)))


@functools.lru_cache(maxsize=4096)
def compile_globs(patterns: tuple[str, ...]) -> GlobSet:
    """A value matches when it equals a pattern or ``fnmatchcase``-matches one."""
    return _compile(patterns, names=frozenset(patterns))


@functools.lru_cache(maxsize=4096)
def compile_fnmatch(patterns: tuple[str, ...]) -> GlobSet:
    """A value matches exactly when ``fnmatchcase`` matches it with one of the patterns.

    (A pattern with glob characters is not also taken as a name: ``[ab]`` does not match
    ``[ab]``.)
    """
    names = frozenset(p for p in patterns if not _is_glob(p))
    return _compile(patterns, names=names)


def _compile(patterns: tuple[str, ...], *, names: frozenset[str]) -> GlobSet:
    globs = [p for p in patterns if _is_glob(p)]
    pattern = re.compile("|".join(f"(?:{translate(p)})" for p in globs)) if globs else None
    return GlobSet(names=names, pattern=pattern)


def _is_glob(pattern: str) -> bool:
    return any(c in pattern for c in GLOB_CHARACTERS)
