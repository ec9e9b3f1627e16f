"""The audit record as JSON: one line on stdout for the log pipeline, and the JSON report."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any, TypedDict

import orjson

from webhook.audit.record import AuditRecord, request_values


class AuditRecordJson(TypedDict):
    time: str  # RFC 3339, UTC, microseconds: "2026-11-28T09:15:02.123456Z"
    uid: str
    operation: str
    kind: str
    namespace: str
    name: str
    username: str
    groups: list[str]
    dryRun: bool
    policy: str
    rule: str
    action: str
    message: str
    images: list[str]
    owner: str


def format_time(time: dt.datetime) -> str:
    """``2026-11-28T09:15:02.123456Z``: ``isoformat`` is twice as fast as ``strftime`` (bench/)."""
    return time.astimezone(dt.UTC).isoformat(timespec="microseconds").removesuffix("+00:00") + "Z"


def dump_record(record: AuditRecord) -> AuditRecordJson:
    return {
        "time": format_time(record.time),
        "uid": record.uid,
        "operation": record.operation,
        "kind": record.kind,
        "namespace": record.namespace,
        "name": record.name,
        "username": record.username,
        "groups": list(record.groups),
        "dryRun": record.dry_run,
        "policy": record.policy,
        "rule": record.rule,
        "action": record.action,
        "message": record.message,
        "images": list(record.images),
        "owner": record.owner,
    }


def format_json_line(record: AuditRecord) -> str:
    """One line (newlines in messages are escaped), tagged with the logger for the log pipeline."""
    return orjson.dumps({"logger": "mlgate.audit", **dump_record(record)}).decode()


def format_json_lines(records: Iterable[AuditRecord]) -> str:
    """``format_json_line`` of each record, joined by newlines.

    NOTE: a line is built from three pieces of orjson's compact output (no spaces, keys in
    order): the request's fields before the rule's (``{...,"dryRun":false,``), the rule's own
    (``"policy":...,"message":...``, cut out of their object), and the request's fields after
    (``,"images":[...],"owner":"..."}``). The first and last are made once per request (a
    request has ~4 records), found by their values; the lines are byte for byte what
    ``format_json_line`` gives, for a little over half the cost (callgrind, the validate bench
    bodies: 129k -> 72k instructions per request).
    """
    requests: dict[tuple[Any, ...], tuple[bytes, bytes]] = {}
    lines = []
    for record in records:
        key = request_values(record)
        request = requests.get(key)
        if request is None:
            request = requests[key] = _encode_request(record)
        own = orjson.dumps(
            {
                "policy": record.policy,
                "rule": record.rule,
                "action": record.action,
                "message": record.message,
            }
        )
        lines.append(request[0] + own[1:-1] + request[1])
    return b"\n".join(lines).decode()


def _encode_request(record: AuditRecord) -> tuple[bytes, bytes]:
    """The pieces of a line before and after the rule's own fields (see ``format_json_lines``)."""
    before = orjson.dumps(
        {
            "logger": "mlgate.audit",
            "time": format_time(record.time),
            "uid": record.uid,
            "operation": record.operation,
            "kind": record.kind,
            "namespace": record.namespace,
            "name": record.name,
            "username": record.username,
            "groups": list(record.groups),
            "dryRun": record.dry_run,
        }
    )
    after = orjson.dumps({"images": list(record.images), "owner": record.owner})
    return before[:-1] + b",", b"," + after[1:]
