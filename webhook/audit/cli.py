"""``mlgate audit``: reports over the audit store, safe to run while the server writes to it.

``register(subparsers)`` adds the command group to the ``mlgate`` parser. The database is
``--audit-db`` (or ``MLGATE_AUDIT_DB``), else ``audit.db`` in the state folder, as for
``mlgate serve``. ``add_retention_arguments`` and ``build_retention`` give ``serve`` the same
retention flags as ``mlgate audit prune``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from webhook.audit.database import (
    DEFAULT_RETENTION,
    AuditDatabase,
    AuditDatabaseError,
    AuditQuery,
    Retention,
    open_audit_database,
)
from webhook.audit.report import (
    ReportArgumentError,
    build_report,
    build_summary,
    format_csv,
    format_html,
    format_json,
    format_summary_csv,
    format_summary_json,
    format_summary_table,
    format_table,
    parse_duration,
    parse_time,
)

REPORT_FORMATS: dict[str, Callable[[Any], str]] = {
    "table": format_table,
    "json": format_json,
    "csv": format_csv,
    "html": format_html,
}
SUMMARY_FORMATS: dict[str, Callable[[Any], str]] = {
    "table": format_summary_table,
    "json": format_summary_json,
    "csv": format_summary_csv,
}


def register(subparsers: Any) -> None:
    """Add ``audit report``, ``audit summary`` and ``audit prune`` to ``mlgate``."""
    audit = subparsers.add_parser("audit", help="reports of what mlgate denied, warned, audited")
    commands = audit.add_subparsers(dest="audit_command", required=True)

    report = commands.add_parser(
        "report",
        help="the audit records of a window, newest first",
        description="The audit records of a window, newest first, as a terminal table, JSON, "
        "CSV, or one self-contained HTML page with totals per policy, namespace and day.",
    )
    add_database_arguments(report)
    add_query_arguments(report)
    report.add_argument("--format", choices=sorted(REPORT_FORMATS), default="table")
    report.add_argument("--limit", type=int, help="list at most this many (totals count all)")
    report.add_argument("--output", "-o", type=Path, help="write here instead of stdout")
    report.set_defaults(func=run_report)

    summary = commands.add_parser(
        "summary", help="counts per policy, rule and namespace over a window"
    )
    add_database_arguments(summary)
    add_query_arguments(summary)
    summary.add_argument("--format", choices=sorted(SUMMARY_FORMATS), default="table")
    summary.add_argument("--output", "-o", type=Path, help="write here instead of stdout")
    summary.set_defaults(func=run_summary)

    prune = commands.add_parser(
        "prune", help="delete records past the retention limits now (the server also does)"
    )
    add_database_arguments(prune)
    add_retention_arguments(prune)
    prune.set_defaults(func=run_prune)


def add_database_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--audit-db",
        default=os.environ.get("MLGATE_AUDIT_DB"),
        help="SQLite path or postgresql:// URL (default: STATE_DIR/audit.db)",
    )
    parser.add_argument(
        "--state-dir", type=Path, default=Path(os.environ.get("MLGATE_STATE_DIR", ".mlgate"))
    )


def add_query_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--since", default="24h", help="start: a duration back from now (24h, 7d) or a date/time"
    )
    parser.add_argument("--until", help="end (exclusive): a duration back from now or a time")
    parser.add_argument("--namespace")
    parser.add_argument("--policy")
    parser.add_argument("--rule")
    parser.add_argument("--user", help="the requesting user name")
    parser.add_argument("--kind", help="e.g. Deployment")
    parser.add_argument("--action", choices=["deny", "warn", "audit"])


def add_retention_arguments(parser: argparse.ArgumentParser) -> None:
    default_age = DEFAULT_RETENTION.max_age
    parser.add_argument(
        "--audit-max-age",
        default=os.environ.get(
            "MLGATE_AUDIT_MAX_AGE", f"{default_age.days}d" if default_age else "none"
        ),
        help="keep records this long (e.g. 90d, or none)",
    )
    parser.add_argument(
        "--audit-max-rows",
        default=os.environ.get("MLGATE_AUDIT_MAX_ROWS", str(DEFAULT_RETENTION.max_rows)),
        help="keep at most this many records (or none)",
    )
    parser.add_argument(
        "--audit-max-bytes",
        default=os.environ.get("MLGATE_AUDIT_MAX_BYTES", "none"),
        help="keep the records under this many bytes (or none)",
    )


def build_retention(args: argparse.Namespace) -> Retention:
    """The retention from ``add_retention_arguments``; raises ReportArgumentError."""

    def number(text: str, flag: str) -> int | None:
        if text.lower() == "none":
            return None
        try:
            return int(text)
        except ValueError:
            raise ReportArgumentError(f"{flag}: not a number: {text!r}") from None

    age = args.audit_max_age
    return Retention(
        max_age=None if age.lower() == "none" else parse_duration(age),
        max_rows=number(args.audit_max_rows, "--audit-max-rows"),
        max_bytes=number(args.audit_max_bytes, "--audit-max-bytes"),
    )


def build_query(args: argparse.Namespace, *, now: dt.datetime) -> AuditQuery:
    return AuditQuery(
        since=parse_time(args.since, now=now) if args.since else None,
        until=parse_time(args.until, now=now) if args.until else None,
        namespace=args.namespace,
        policy=args.policy,
        rule=args.rule,
        username=args.user,
        kind=args.kind,
        action=args.action,
        limit=getattr(args, "limit", None),
    )


def open_database(args: argparse.Namespace) -> AuditDatabase:
    target = args.audit_db or str(args.state_dir / "audit.db")
    return open_audit_database(target, create=False)


def write_output(text: str, output: Path | None) -> None:
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text, encoding="utf-8")


def run_report(args: argparse.Namespace) -> int:
    return run_reading(
        args,
        lambda database, query, now: REPORT_FORMATS[args.format](
            build_report(database, query, now=now)
        ),
    )


def run_summary(args: argparse.Namespace) -> int:
    return run_reading(
        args,
        lambda database, query, now: SUMMARY_FORMATS[args.format](
            build_summary(database, query, now=now)
        ),
    )


def run_reading(
    args: argparse.Namespace,
    render: Callable[[AuditDatabase, AuditQuery, dt.datetime], str],
) -> int:
    now = dt.datetime.now(dt.UTC)
    try:
        query = build_query(args, now=now)
        database = open_database(args)
    except (ReportArgumentError, AuditDatabaseError) as error:
        print(f"mlgate audit: {error}", file=sys.stderr)
        return 2
    try:
        text = render(database, query, now)
    except AuditDatabaseError as error:
        print(f"mlgate audit: {error}", file=sys.stderr)
        return 1
    finally:
        database.close()
    write_output(text, args.output)
    return 0


def run_prune(args: argparse.Namespace) -> int:
    try:
        retention = build_retention(args)
        database = open_database(args)
    except (ReportArgumentError, AuditDatabaseError) as error:
        print(f"mlgate audit: {error}", file=sys.stderr)
        return 2
    try:
        deleted = database.prune(retention, now=dt.datetime.now(dt.UTC))
    except AuditDatabaseError as error:
        print(f"mlgate audit: {error}", file=sys.stderr)
        return 1
    finally:
        database.close()
    print(f"mlgate audit: deleted {deleted} records")
    return 0
