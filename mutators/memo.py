"""Values derived from a policy's frozen settings, worked out once per settings object.

NOTE: a request would otherwise derive them again (which mutators a policy enables, its
defaults checked and parsed...). Keyed by the identity of the settings object rather than its
value: hashing a frozen dataclass hashes every field, nested ones included, on every call. The
entry holds the settings object, so that its id is not reused while cached; a policy reload
brings new objects, and the cache is emptied when it grows past any real policy set.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import TypeVar

Settings = TypeVar("Settings")
Derived = TypeVar("Derived")
MAX_ENTRIES = 1024


def once_per_settings(derive: Callable[[Settings], Derived]) -> Callable[[Settings], Derived]:
    """``derive(settings)``, computed on the first call for each settings object only."""
    cache: dict[int, tuple[Settings, Derived]] = {}

    @wraps(derive)
    def cached(settings: Settings) -> Derived:
        entry = cache.get(id(settings))
        if entry is not None and entry[0] is settings:
            return entry[1]
        value = derive(settings)
        if len(cache) >= MAX_ENTRIES:
            cache.clear()
        cache[id(settings)] = (settings, value)
        return value

    return cached
