"""Audit records for the tests, made to order."""

from __future__ import annotations

import datetime as dt

from webhook.audit.record import AuditRecord

NOW = dt.datetime(2026, 11, 28, 12, 0, 0, tzinfo=dt.UTC)


def make_record(number: int = 0, **changes: object) -> AuditRecord:
    fields: dict[str, object] = {
        "time": NOW - dt.timedelta(minutes=number),
        "uid": f"uid-{number:06d}",
        "operation": "CREATE",
        "kind": "Deployment",
        "namespace": "ml-serving",
        "name": f"model-{number}",
        "username": "alice@example.com",
        "groups": ("ml-team", "system:authenticated"),
        "dry_run": False,
        "policy": "images",
        "rule": "images.no-latest",
        "action": "deny",
        "message": f"container 'model' uses image 'model:latest' (#{number})",
        "images": ("registry.example.com/model:latest",),
        "owner": f"Deployment/model-{number}",
    }
    fields.update(changes)
    return AuditRecord(**fields)  # type: ignore[arg-type]


class RecordingSink:
    """An in-memory audit sink: keeps what the webhook submits, for the assertions."""

    def __init__(self) -> None:
        self.records: list[AuditRecord] = []

    def submit(self, records: list[AuditRecord]) -> None:
        self.records.extend(records)

    def close(self) -> None:
        pass
