"""Reports over the audit store: what was rejected, when, from whom and why.

``build_report`` reads the database once; the ``format_*`` functions are pure and turn a report
into a terminal table, JSON, CSV, or one self-contained HTML page (inline CSS and SVG, no
script, every value escaped) that an admin can mail or attach.
"""

from __future__ import annotations

import csv
import datetime as dt
import html
import io
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypedDict

import orjson

from webhook.audit.database import AuditDatabase, AuditQuery, GroupCount
from webhook.audit.record import AuditRecord
from webhook.audit.wire import AuditRecordJson, dump_record, format_time

DURATION = re.compile(r"(?P<number>\d+(?:\.\d+)?)(?P<unit>[smhdw])")
UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
# At most this many days get a bar of their own in the HTML chart.
CHART_DAYS = 92


class ReportArgumentError(ValueError):
    """A window or filter given on the command line cannot be understood."""


def parse_duration(text: str) -> dt.timedelta:
    """``90s``, ``15m``, ``24h``, ``7d``, ``2w``, or a sum such as ``1d12h``."""
    position, total = 0, dt.timedelta()
    for match in DURATION.finditer(text):
        if match.start() != position:
            break
        total += dt.timedelta(**{UNITS[match["unit"]]: float(match["number"])})
        position = match.end()
    if position != len(text) or not text:
        raise ReportArgumentError(f"not a duration: {text!r} (examples: 30m, 24h, 7d, 1d12h)")
    return total


def parse_time(text: str, *, now: dt.datetime) -> dt.datetime:
    """A duration before ``now`` (``24h``), or an ISO 8601 date or time (UTC unless given)."""
    try:
        return now - parse_duration(text)
    except ReportArgumentError:
        pass
    try:
        parsed = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ReportArgumentError(
            f"not a time: {text!r} (a duration such as 24h, or 2026-11-28 or 2026-11-28T09:00:00Z)"
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


@dataclass(frozen=True)
class Report:
    query: AuditQuery
    generated: dt.datetime
    records: tuple[AuditRecord, ...]
    total: int  # records in the window, even when ``query.limit`` cut the list
    by_policy: tuple[GroupCount, ...]
    by_namespace: tuple[GroupCount, ...]
    by_day: tuple[GroupCount, ...]


@dataclass(frozen=True)
class Summary:
    query: AuditQuery
    generated: dt.datetime
    total: int
    by_policy: tuple[GroupCount, ...]
    by_rule: tuple[GroupCount, ...]  # key: (policy, rule)
    by_namespace: tuple[GroupCount, ...]


def build_report(database: AuditDatabase, query: AuditQuery, *, now: dt.datetime) -> Report:
    return Report(
        query=query,
        generated=now,
        records=tuple(database.query(query)),
        total=database.count(query),
        by_policy=tuple(database.count_by(["policy"], query)),
        by_namespace=tuple(database.count_by(["namespace"], query)),
        by_day=tuple(sorted(database.count_by(["day"], query), key=lambda g: g.key)),
    )


def build_summary(database: AuditDatabase, query: AuditQuery, *, now: dt.datetime) -> Summary:
    return Summary(
        query=query,
        generated=now,
        total=database.count(query),
        by_policy=tuple(database.count_by(["policy"], query)),
        by_rule=tuple(database.count_by(["policy", "rule"], query)),
        by_namespace=tuple(database.count_by(["namespace"], query)),
    )


# --- shared ---------------------------------------------------------------------------------


def describe_window(query: AuditQuery) -> str:
    since = format_time(query.since) if query.since else "the first record"
    until = format_time(query.until) if query.until else "now"
    return f"{since} to {until}"


def describe_filters(query: AuditQuery) -> str:
    filters = [
        f"{name}={value}"
        for name, value in (
            ("namespace", query.namespace),
            ("policy", query.policy),
            ("rule", query.rule),
            ("user", query.username),
            ("kind", query.kind),
            ("action", query.action),
        )
        if value is not None
    ]
    return ", ".join(filters) or "none"


def format_object(record: AuditRecord) -> str:
    return f"{record.kind}/{record.name}" if record.name else record.kind


def format_short_time(time: dt.datetime) -> str:
    return time.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


# --- terminal -------------------------------------------------------------------------------


def format_columns(header: Sequence[str], rows: Sequence[Sequence[str]], *, width: int) -> str:
    """An aligned text table; the last column is cut to fit ``width``."""
    widths = [len(h) for h in header]
    for row in rows:
        for index, cell in enumerate(row[:-1]):
            widths[index] = max(widths[index], len(cell))
    room = max(width - sum(widths[:-1]) - 2 * (len(header) - 1), 20)
    lines = []
    for row in [header, *rows]:
        cells = [cell.ljust(widths[i]) for i, cell in enumerate(row[:-1])]
        last = " ".join(row[-1].split())  # one line per record
        if len(last) > room:
            last = last[: room - 1] + "…"
        lines.append("  ".join([*cells, last]).rstrip())
    return "\n".join(lines) + "\n"


def format_table(report: Report, *, width: int | None = None) -> str:
    width = width or shutil.get_terminal_size((160, 24)).columns
    header = ("TIME", "NAMESPACE", "OBJECT", "USER", "POLICY", "RULE", "ACTION", "MESSAGE")
    rows = [
        (
            format_short_time(r.time),
            r.namespace,
            format_object(r),
            r.username,
            r.policy,
            r.rule,
            r.action + (" (dry run)" if r.dry_run else ""),
            r.message,
        )
        for r in report.records
    ]
    shown = (
        f"{len(report.records)} of {report.total}"
        if report.total > len(rows)
        else str(report.total)
    )
    title = f"{shown} audit records, {describe_window(report.query)}\n"
    if not rows:
        return title
    return title + format_columns(header, rows, width=width)


def format_summary_table(summary: Summary, *, width: int | None = None) -> str:
    width = width or shutil.get_terminal_size((160, 24)).columns
    parts = [f"{summary.total} audit records, {describe_window(summary.query)}\n"]
    for title, header, groups in (
        ("Per policy", ("COUNT", "POLICY"), summary.by_policy),
        ("Per rule", ("COUNT", "POLICY", "RULE"), summary.by_rule),
        ("Per namespace", ("COUNT", "NAMESPACE"), summary.by_namespace),
    ):
        rows = [(str(g.count), *g.key) for g in groups]
        parts.append(f"\n{title}\n" + format_columns(header, rows, width=width))
    return "".join(parts)


# --- JSON and CSV ---------------------------------------------------------------------------


class GroupCountJson(TypedDict):
    key: str
    count: int


class ReportJson(TypedDict):
    since: str | None
    until: str | None
    generated: str
    total: int
    byPolicy: list[GroupCountJson]
    byNamespace: list[GroupCountJson]
    byDay: list[GroupCountJson]
    records: list[AuditRecordJson]


class RuleCountJson(TypedDict):
    policy: str
    rule: str
    count: int


class SummaryJson(TypedDict):
    since: str | None
    until: str | None
    generated: str
    total: int
    byPolicy: list[GroupCountJson]
    byRule: list[RuleCountJson]
    byNamespace: list[GroupCountJson]


def dump_groups(groups: Sequence[GroupCount]) -> list[GroupCountJson]:
    return [{"key": g.key[0], "count": g.count} for g in groups]


def format_json(report: Report) -> str:
    document: ReportJson = {
        "since": format_time(report.query.since) if report.query.since else None,
        "until": format_time(report.query.until) if report.query.until else None,
        "generated": format_time(report.generated),
        "total": report.total,
        "byPolicy": dump_groups(report.by_policy),
        "byNamespace": dump_groups(report.by_namespace),
        "byDay": dump_groups(report.by_day),
        "records": [dump_record(r) for r in report.records],
    }
    return orjson.dumps(document, option=orjson.OPT_INDENT_2).decode() + "\n"


def format_summary_json(summary: Summary) -> str:
    document: SummaryJson = {
        "since": format_time(summary.query.since) if summary.query.since else None,
        "until": format_time(summary.query.until) if summary.query.until else None,
        "generated": format_time(summary.generated),
        "total": summary.total,
        "byPolicy": dump_groups(summary.by_policy),
        "byRule": [
            {"policy": g.key[0], "rule": g.key[1], "count": g.count} for g in summary.by_rule
        ],
        "byNamespace": dump_groups(summary.by_namespace),
    }
    return orjson.dumps(document, option=orjson.OPT_INDENT_2).decode() + "\n"


CSV_COLUMNS = (
    "time",
    "uid",
    "operation",
    "kind",
    "namespace",
    "name",
    "username",
    "groups",
    "dryRun",
    "policy",
    "rule",
    "action",
    "message",
    "images",
    "owner",
)


def format_csv(report: Report) -> str:
    """RFC 4180 CSV with a header; list fields joined with spaces."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for r in report.records:
        writer.writerow(
            (
                format_time(r.time),
                r.uid,
                r.operation,
                r.kind,
                r.namespace,
                r.name,
                r.username,
                " ".join(r.groups),
                str(r.dry_run).lower(),
                r.policy,
                r.rule,
                r.action,
                r.message,
                " ".join(r.images),
                r.owner,
            )
        )
    return buffer.getvalue()


def format_summary_csv(summary: Summary) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(("policy", "rule", "count"))
    for group in summary.by_rule:
        writer.writerow((*group.key, group.count))
    return buffer.getvalue()


# --- HTML -----------------------------------------------------------------------------------

STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222}
h1{font-size:1.4em}h2{font-size:1.1em;margin-top:2em}
table{border-collapse:collapse;margin:.5em 0}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left;vertical-align:top}
th{background:#f3f3f3}td.n{text-align:right}
.deny{color:#b00020}.warn{color:#9a6700}.audit{color:#555}
.totals{display:flex;gap:3em;flex-wrap:wrap}
svg text{font:11px system-ui,sans-serif}
"""


def escape(value: object) -> str:
    return html.escape(str(value), quote=True)


def render_counts(title: str, groups: Sequence[GroupCount], *, column: str, css_id: str) -> str:
    rows = "".join(
        f'<tr><td>{escape(g.key[0])}</td><td class="n">{g.count}</td></tr>' for g in groups
    )
    return (
        f'<section id="{css_id}"><h2>{escape(title)}</h2><table>'
        f"<thead><tr><th>{escape(column)}</th><th>Records</th></tr>"
        f"</thead><tbody>{rows}</tbody></table></section>"
    )


def fill_days(by_day: Sequence[GroupCount]) -> list[tuple[str, int]]:
    """Every day from the first to the last with records (zeros included), newest last."""
    if not by_day:
        return []
    counts = {g.key[0]: g.count for g in by_day}
    first = dt.date.fromisoformat(min(counts))
    last = dt.date.fromisoformat(max(counts))
    first = max(first, last - dt.timedelta(days=CHART_DAYS - 1))
    days = [first + dt.timedelta(days=n) for n in range((last - first).days + 1)]
    return [(day.isoformat(), counts.get(day.isoformat(), 0)) for day in days]


def render_day_chart(by_day: Sequence[GroupCount]) -> str:
    """A bar chart of records per day as inline SVG, with a text label on every bar."""
    days = fill_days(by_day)
    if not days:
        return "<p>No records in this window.</p>"
    bar, gap, height, top, bottom = 22, 6, 160, 18, 40
    peak = max(count for _, count in days) or 1
    width = len(days) * (bar + gap) + gap
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" width="{width}"'
        f' height="{height + top + bottom}" aria-label="records per day">'
    ]
    for index, (day, count) in enumerate(days):
        x = gap + index * (bar + gap)
        h = round(height * count / peak)
        y = top + height - h
        parts.append(
            f"<g><title>{escape(day)}: {count}</title>"
            f'<rect x="{x}" y="{y}" width="{bar}" height="{h}" fill="#b00020"/>'
            f'<text x="{x + bar / 2}" y="{y - 4}" text-anchor="middle">{count}</text>'
            f'<text x="{x + bar / 2}" y="{top + height + 14}" text-anchor="end"'
            f' transform="rotate(-45 {x + bar / 2} {top + height + 14})">'
            f"{escape(day[5:])}</text></g>"
        )
    parts.append("</svg>")
    return "".join(parts)


def render_record_rows(records: Sequence[AuditRecord]) -> str:
    rows = []
    for r in records:
        action = escape(r.action) + (" (dry run)" if r.dry_run else "")
        rows.append(
            "<tr>"
            f"<td>{escape(format_short_time(r.time))}</td>"
            f"<td>{escape(r.namespace)}</td>"
            f"<td>{escape(format_object(r))}</td>"
            f"<td>{escape(r.operation)}</td>"
            f"<td>{escape(r.username)}</td>"
            f"<td>{escape(r.policy)}</td>"
            f"<td>{escape(r.rule)}</td>"
            f'<td class="{escape(r.action)}">{action}</td>'
            f"<td>{escape(r.message)}</td>"
            f"<td>{escape(' '.join(r.images))}</td>"
            "</tr>"
        )
    return "".join(rows)


def format_html(report: Report) -> str:
    """One self-contained page: totals per policy, namespace and day (chart), then the list."""
    window = describe_window(report.query)
    listed = (
        f"{len(report.records)} newest of {report.total}"
        if report.total > len(report.records)
        else str(report.total)
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>mlgate audit report: {escape(window)}</title>"
        f"<style>{STYLE}</style></head><body>"
        "<h1>mlgate audit report</h1>"
        f"<p>Window: {escape(window)}. Filters: {escape(describe_filters(report.query))}."
        f" Generated {escape(format_time(report.generated))}.</p>"
        f'<p id="total">Total records: <strong>{report.total}</strong></p>'
        '<div class="totals">'
        + render_counts(
            "Records per policy", report.by_policy, column="Policy", css_id="per-policy"
        )
        + render_counts(
            "Records per namespace", report.by_namespace, column="Namespace", css_id="per-namespace"
        )
        + render_counts("Records per day", report.by_day, column="Day (UTC)", css_id="per-day")
        + "</div>"
        f'<section id="chart"><h2>Records per day (UTC)</h2>{render_day_chart(report.by_day)}'
        "</section>"
        f'<section id="records"><h2>Records ({escape(listed)}, newest first)</h2><table>'
        "<thead><tr><th>Time (UTC)</th><th>Namespace</th><th>Object</th><th>Operation</th>"
        "<th>User</th><th>Policy</th><th>Rule</th><th>Action</th><th>Message</th>"
        "<th>Images</th></tr></thead>"
        f"<tbody>{render_record_rows(report.records)}</tbody></table></section>"
        "</body></html>\n"
    )
