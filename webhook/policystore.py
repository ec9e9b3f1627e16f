"""The policy set in force, reloaded when the policy folder changes.

Every gunicorn worker holds its own ``PolicyStore`` with a watcher thread that polls the
folder's signature (names, resolved paths, sizes, modification times). Polling, rather than
inotify, sees the symlink swap a mounted ConfigMap does (``..data`` is re-pointed; no file the
folder lists is written) and works the same on every filesystem. A broken edit keeps the last
good set in force, is logged and counted.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from policies.loader import PolicyLoadError, list_policy_files, load_policy_dir
from policies.model import PolicySet

log = logging.getLogger("mlgate.policies")

Signature = tuple[tuple[str, str, int, int, int], ...] | str


@dataclass(frozen=True)
class PolicyState:
    """What the store holds: the set in force (None before the first good load) and the last
    error (None when the newest files loaded)."""

    policy_set: PolicySet | None
    error: str | None
    generation: int


def folder_signature(directory: Path) -> Signature:
    """What changes whenever a policy file of the folder is added, removed, replaced or edited."""
    try:
        files = list_policy_files(directory)
        entries = []
        for path in files:
            stat = path.stat()
            entries.append(
                (path.name, os.path.realpath(path), stat.st_mtime_ns, stat.st_size, stat.st_ino)
            )
        return tuple(entries)
    except OSError as exc:
        return f"unreadable: {exc}"


class PolicyStore:
    """The current policy set of one process, swapped atomically on reload."""

    def __init__(
        self,
        directory: Path,
        *,
        on_error: Callable[[PolicyLoadError | OSError], None] | None = None,
        on_load: Callable[[PolicySet], None] | None = None,
    ) -> None:
        self.directory = directory
        self._on_error = on_error
        self._on_load = on_load
        self._state = PolicyState(policy_set=None, error=None, generation=0)
        self._signature: Signature | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def state(self) -> PolicyState:
        return self._state

    @property
    def current(self) -> PolicySet | None:
        """The set in force, or None when no good set was ever loaded."""
        return self._state.policy_set

    def reload_if_changed(self) -> bool:
        """Load the folder if its signature changed; True when a new set came into force."""
        with self._lock:
            signature = folder_signature(self.directory)
            if signature == self._signature:
                return False
            self._signature = signature
            return self._load()

    def _load(self) -> bool:
        previous = self._state
        try:
            policy_set = load_policy_dir(self.directory)
        except (PolicyLoadError, OSError) as exc:
            kept = "keeping the last good policy set" if previous.policy_set else "no policy set"
            log.error(
                "policy files in %s are invalid (%s in force):\n%s", self.directory, kept, exc
            )
            self._state = PolicyState(previous.policy_set, str(exc), previous.generation)
            if self._on_error is not None:
                self._on_error(exc)
            return False
        if previous.policy_set is not None and (
            previous.policy_set.fingerprint == policy_set.fingerprint
        ):
            self._state = PolicyState(previous.policy_set, None, previous.generation)
            return False
        self._state = PolicyState(policy_set, None, previous.generation + 1)
        log.info(
            "loaded %d policies from %s: %s",
            len(policy_set.policies),
            self.directory,
            ", ".join(p.name for p in policy_set.policies),
        )
        if self._on_load is not None:
            self._on_load(policy_set)
        return True

    def start_watching(self, interval: float = 1.0) -> None:
        """Poll the folder every ``interval`` seconds in a daemon thread."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._watch, args=(interval,), name="mlgate-policy-watch", daemon=True
        )
        self._thread.start()

    def _watch(self, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                self.reload_if_changed()
            except Exception:  # NOTE: the watcher must outlive any surprise in one pass
                log.exception("policy watcher pass failed; retrying")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
