"""The audit record as JSON: one line on stdout for the log pipeline, and the JSON report."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import TypedDict

import orjson

from webhook.audit.database import EncodedRequest, encode_requests, from_micros
from webhook.audit.record import AuditRecord


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
    """``format_json_line`` of each record, joined by newlines (grouped by request)."""
    return b"\n".join(format_request_lines(encode_requests(records))).decode()


def format_request_lines(requests: Iterable[EncodedRequest]) -> list[bytes]:
    """The JSON line of each result of each request: what ``format_json_line`` gives for the
    record of that result, byte for byte.

    NOTE: a line is built from three pieces of orjson's compact output (no spaces, keys in
    order): the request's fields before the rule's (``{...,"dryRun":false,``), the rule's own
    (``"policy":...,"message":...``, cut out of their object), and the request's fields after
    (``,"images":[...],"owner":"..."}``). The first and last are made once per request (a
    request has ~4 results); the groups and images are the row's JSON text as it is. The audit
    writer formats every record this way: about half what a line per record costs
    (callgrind).
    """
    lines = []
    for request in requests:
        row = request.row
        before = (
            orjson.dumps(
                {
                    "logger": "mlgate.audit",
                    "time": format_time(from_micros(row[0])),
                    "uid": row[1],
                    "operation": row[2],
                    "kind": row[3],
                    "namespace": row[4],
                    "name": row[5],
                    "username": row[6],
                    "groups": orjson.Fragment(row[7]),
                    "dryRun": bool(row[8]),
                }
            )[:-1]
            + b","
        )
        after = b"," + orjson.dumps({"images": orjson.Fragment(row[9]), "owner": row[10]})[1:]
        for policy, rule, action, message in request.results:
            own = orjson.dumps(
                {"policy": policy, "rule": rule, "action": action, "message": message}
            )
            lines.append(before + own[1:-1] + after)
    return lines
