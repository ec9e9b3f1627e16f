"""Settings of a running webhook: one frozen value built by the CLI from flags and environment."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from policies.loader import default_policy_dir

# The API server's own limit on a request body (3 MiB); larger bodies never come from it.
DEFAULT_MAX_BODY_BYTES = 3 * 1024 * 1024


@dataclass(frozen=True)
class Settings:
    policies_dir: Path = field(default_factory=default_policy_dir)
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    own_namespace: str = "mlgate-system"
    # How often each worker looks for policy changes, in seconds; 0: never.
    watch_interval: float = 1.0
    # How long a new worker may wait for its cluster caches before /readyz says ready anyway
    # (its quota checks then follow each policy's failureAction until the caches sync).
    cluster_sync_grace: float = 30.0
    cert_file: Path | None = None
    key_file: Path | None = None
