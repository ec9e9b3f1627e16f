"""``mlgate audit report`` and ``summary`` in every format, on both engines."""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import io
import json
from html.parser import HTMLParser
from pathlib import Path

import pytest

from tests.audit.records import NOW, make_record
from webhook.audit import cli
from webhook.audit.database import AuditQuery, open_audit_database
from webhook.audit.record import AuditRecord
from webhook.audit.report import (
    Report,
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

HOSTILE = "<script>alert('x')</script> & \"quoted\""
RECORDS = [
    make_record(0),
    make_record(1, namespace="research", username="bob", message=HOSTILE),
    make_record(2, policy="quota", rule="quota.budget", action="warn"),
    make_record(3, kind="StatefulSet", operation="UPDATE", dry_run=True),
    make_record(60 * 24, namespace="research"),  # the day before
    make_record(60 * 24 * 3, policy="quota", rule="quota.budget"),  # three days before
]


@pytest.fixture
def filled_target(audit_target: str) -> str:
    database = open_audit_database(audit_target)
    database.insert(RECORDS)
    database.close()
    return audit_target


def make_report(target: str, query: AuditQuery | None = None) -> Report:
    database = open_audit_database(target)
    try:
        return build_report(database, query or AuditQuery(), now=NOW)
    finally:
        database.close()


# --- windows --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90s", dt.timedelta(seconds=90)),
        ("15m", dt.timedelta(minutes=15)),
        ("24h", dt.timedelta(hours=24)),
        ("7d", dt.timedelta(days=7)),
        ("2w", dt.timedelta(weeks=2)),
        ("1d12h", dt.timedelta(days=1, hours=12)),
        ("1.5h", dt.timedelta(minutes=90)),
    ],
    ids=["seconds", "minutes", "hours", "days", "weeks", "sum", "fraction"],
)
def test_durations_are_read(text: str, expected: dt.timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    "text",
    ["", "24", "h", "24 h", "1y", "-1h", "24h "],
    ids=["empty", "no-unit", "no-number", "space", "years", "negative", "trailing-space"],
)
def test_bad_durations_are_refused(text: str) -> None:
    with pytest.raises(ReportArgumentError):
        parse_duration(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("24h", NOW - dt.timedelta(hours=24)),
        ("2026-11-20", dt.datetime(2026, 11, 20, tzinfo=dt.UTC)),
        ("2026-11-20T09:30:00Z", dt.datetime(2026, 11, 20, 9, 30, tzinfo=dt.UTC)),
        ("2026-11-20T09:30:00+01:00", dt.datetime(2026, 11, 20, 8, 30, tzinfo=dt.UTC)),
    ],
    ids=["duration-back-from-now", "date-is-utc-midnight", "utc-time", "offset-time"],
)
def test_window_bounds_are_read(text: str, expected: dt.datetime) -> None:
    assert parse_time(text, now=NOW) == expected


def test_a_bad_window_bound_says_what_is_accepted() -> None:
    with pytest.raises(ReportArgumentError, match="24h"):
        parse_time("yesterday", now=NOW)


# --- formats --------------------------------------------------------------------------------


def test_the_table_lists_every_record_newest_first_on_one_line_each(filled_target: str) -> None:
    text = format_table(make_report(filled_target), width=400)
    lines = text.splitlines()
    assert lines[0].startswith("6 audit records")
    assert lines[1].split() == [
        "TIME",
        "NAMESPACE",
        "OBJECT",
        "USER",
        "POLICY",
        "RULE",
        "ACTION",
        "MESSAGE",
    ]
    assert [line.split()[3] for line in lines[2:]] == [
        "Deployment/model-0",
        "Deployment/model-1",
        "Deployment/model-2",
        "StatefulSet/model-3",
        "Deployment/model-1440",
        "Deployment/model-4320",
    ]
    assert "deny (dry run)" in lines[5]


def test_the_table_cuts_long_messages_to_the_width(filled_target: str) -> None:
    text = format_table(make_report(filled_target), width=100)
    assert all(len(line) <= 160 for line in text.splitlines())
    assert "…" in text


def test_json_holds_the_records_and_the_totals(filled_target: str) -> None:
    document = json.loads(format_json(make_report(filled_target)))
    assert document["total"] == 6
    assert [r["uid"] for r in document["records"]] == [r.uid for r in RECORDS]
    assert document["records"][1]["message"] == HOSTILE
    assert document["byPolicy"] == [{"key": "images", "count": 4}, {"key": "quota", "count": 2}]
    assert document["byNamespace"] == [
        {"key": "ml-serving", "count": 4},
        {"key": "research", "count": 2},
    ]
    assert document["byDay"] == [
        {"key": "2026-11-25", "count": 1},
        {"key": "2026-11-27", "count": 1},
        {"key": "2026-11-28", "count": 4},
    ]


def test_csv_round_trips_every_field(filled_target: str) -> None:
    rows = list(csv.DictReader(io.StringIO(format_csv(make_report(filled_target)))))
    assert [r["uid"] for r in rows] == [r.uid for r in RECORDS]
    assert rows[1]["message"] == HOSTILE
    assert rows[3]["dryRun"] == "true"
    assert rows[0]["groups"] == "ml-team system:authenticated"
    assert rows[0]["time"] == "2026-11-28T12:00:00.000000Z"


class PageReader(HTMLParser):
    """What a browser would see: text per section and table, tags, and attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.section = ""
        self.tables: dict[str, list[list[str]]] = {}
        self.tags: list[str] = []
        self.attributes: list[tuple[str, str | None]] = []
        self.row: list[str] | None = None
        self.cell: list[str] | None = None
        self.texts: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attributes.extend(attrs)
        if tag == "section":
            self.section = dict(attrs).get("id") or ""
        elif tag == "tr":
            self.row = []
        elif tag in ("td", "th"):
            self.cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self.row is not None and self.cell is not None:
            self.row.append("".join(self.cell).strip())
            self.cell = None
        elif tag == "tr" and self.row is not None:
            self.tables.setdefault(self.section, []).append(self.row)
            self.row = None

    def handle_data(self, data: str) -> None:
        self.texts.append(data)
        if self.cell is not None:
            self.cell.append(data)


def read_page(text: str) -> PageReader:
    reader = PageReader()
    reader.feed(text)
    reader.close()
    return reader


def test_html_is_one_self_contained_page_with_the_totals(filled_target: str) -> None:
    page = read_page(format_html(make_report(filled_target)))
    assert page.tables["per-policy"] == [["Policy", "Records"], ["images", "4"], ["quota", "2"]]
    assert page.tables["per-namespace"] == [
        ["Namespace", "Records"],
        ["ml-serving", "4"],
        ["research", "2"],
    ]
    assert page.tables["per-day"] == [
        ["Day (UTC)", "Records"],
        ["2026-11-25", "1"],
        ["2026-11-27", "1"],
        ["2026-11-28", "4"],
    ]
    records = page.tables["records"]
    assert len(records) == 1 + len(RECORDS)
    assert [row[2] for row in records[1:]] == [f"{r.kind}/{r.name}" for r in RECORDS]
    assert "Total records: 6" in "".join(page.texts)
    # Self-contained: nothing fetched, nothing run.
    assert "script" not in page.tags
    assert "link" not in page.tags
    assert not [value for name, value in page.attributes if name in ("src", "href")]


def test_html_shows_hostile_values_as_text(filled_target: str) -> None:
    text = format_html(make_report(filled_target))
    page = read_page(text)
    assert "script" not in page.tags
    assert [row[8] for row in page.tables["records"][1:]].count(HOSTILE) == 1
    assert "<script>" not in text


def test_html_charts_every_day_of_the_span_with_zeros(filled_target: str) -> None:
    page = read_page(format_html(make_report(filled_target)))
    bars = [title for title in page.texts if title.startswith("2026-11-")]
    chart_titles = [t for t in bars if ": " in t]
    assert chart_titles == ["2026-11-25: 1", "2026-11-26: 0", "2026-11-27: 1", "2026-11-28: 4"]
    assert page.tags.count("rect") == 4
    assert "svg" in page.tags


def test_a_window_and_filters_narrow_every_part_of_the_report(filled_target: str) -> None:
    query = AuditQuery(since=NOW - dt.timedelta(hours=1), namespace="ml-serving", limit=2)
    report = make_report(filled_target, query)
    assert [r.uid for r in report.records] == ["uid-000000", "uid-000002"]
    assert report.total == 3
    assert [(g.key[0], g.count) for g in report.by_policy] == [("images", 2), ("quota", 1)]
    page = read_page(format_html(report))
    assert "2 newest of 3" in "".join(page.texts)


def test_an_empty_window_gives_an_empty_report_in_every_format(audit_target: str) -> None:
    open_audit_database(audit_target).close()
    report = make_report(audit_target)
    assert format_table(report).startswith("0 audit records")
    assert json.loads(format_json(report))["records"] == []
    assert format_csv(report).splitlines()[1:] == []
    assert "No records in this window." in format_html(report)


def test_the_summary_counts_per_policy_rule_and_namespace(filled_target: str) -> None:
    database = open_audit_database(filled_target)
    summary = build_summary(database, AuditQuery(), now=NOW)
    database.close()
    document = json.loads(format_summary_json(summary))
    assert document["total"] == 6
    assert document["byRule"] == [
        {"policy": "images", "rule": "images.no-latest", "count": 4},
        {"policy": "quota", "rule": "quota.budget", "count": 2},
    ]
    assert document["byNamespace"] == [
        {"key": "ml-serving", "count": 4},
        {"key": "research", "count": 2},
    ]
    table = format_summary_table(summary, width=120)
    assert "Per policy" in table
    assert "Per namespace" in table
    assert list(csv.reader(io.StringIO(format_summary_csv(summary)))) == [
        ["policy", "rule", "count"],
        ["images", "images.no-latest", "4"],
        ["quota", "quota.budget", "2"],
    ]


# --- the command ----------------------------------------------------------------------------


def run_command(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="mlgate")
    cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


def insert_recent(target: str, records: list[AuditRecord]) -> None:
    """The command's window is relative to the real clock: move the records to now."""
    shift = dt.datetime.now(dt.UTC) - NOW
    database = open_audit_database(target)
    database.insert([AuditRecord(**{**r.__dict__, "time": r.time + shift}) for r in records])
    database.close()


@pytest.mark.parametrize(
    ("argv", "uids"),
    [
        ([], ["uid-000000", "uid-000001", "uid-000002", "uid-000003"]),
        (["--since", "7d"], [r.uid for r in RECORDS]),
        (["--namespace", "research", "--since", "7d"], ["uid-000001", "uid-001440"]),
        (["--policy", "quota", "--since", "7d"], ["uid-000002", "uid-004320"]),
        (["--rule", "quota.budget", "--action", "warn"], ["uid-000002"]),
        (["--user", "bob"], ["uid-000001"]),
        (["--kind", "StatefulSet"], ["uid-000003"]),
        (["--since", "7d", "--until", "2d"], ["uid-004320"]),
        (["--since", "7d", "--limit", "1"], ["uid-000000"]),
    ],
    ids=[
        "default-last-24h",
        "last-week",
        "namespace",
        "policy",
        "rule-and-action",
        "user",
        "kind",
        "until",
        "limit",
    ],
)
def test_the_report_command_filters(
    audit_target: str, capsys: pytest.CaptureFixture[str], argv: list[str], uids: list[str]
) -> None:
    insert_recent(audit_target, RECORDS)
    code = run_command(["audit", "report", "--audit-db", audit_target, "--format", "json", *argv])
    assert code == 0
    assert [r["uid"] for r in json.loads(capsys.readouterr().out)["records"]] == uids


@pytest.mark.parametrize("fmt", ["table", "json", "csv", "html"])
def test_the_report_command_writes_each_format_to_a_file(tmp_path: Path, fmt: str) -> None:
    target = str(tmp_path / "audit.db")
    insert_recent(target, RECORDS)
    output = tmp_path / f"report.{fmt}"
    assert (
        run_command(
            [
                "audit",
                "report",
                "--audit-db",
                target,
                "--since",
                "7d",
                "--format",
                fmt,
                "-o",
                str(output),
            ]
        )
        == 0
    )
    text = output.read_text(encoding="utf-8")
    assert "uid-000001" in text or "model-1" in text
    if fmt == "html":
        assert read_page(text).tables["per-policy"][1:] == [["images", "4"], ["quota", "2"]]


def test_the_summary_command_prints_counts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = str(tmp_path / "audit.db")
    insert_recent(target, RECORDS)
    assert (
        run_command(["audit", "summary", "--audit-db", target, "--since", "7d", "--format", "json"])
        == 0
    )
    assert json.loads(capsys.readouterr().out)["byPolicy"] == [
        {"key": "images", "count": 4},
        {"key": "quota", "count": 2},
    ]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--since", "yesterday"], "not a time"),
        (["--audit-db", "/nonexistent/audit.db"], "no audit database"),
    ],
    ids=["bad-window", "missing-database"],
)
def test_the_report_command_explains_bad_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    code = run_command(["audit", "report", "--state-dir", str(tmp_path), *argv])
    assert code == 2
    assert message in capsys.readouterr().err


def test_the_prune_command_applies_the_retention_flags(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = str(tmp_path / "audit.db")
    insert_recent(target, RECORDS)
    assert (
        run_command(
            [
                "audit",
                "prune",
                "--audit-db",
                target,
                "--audit-max-age",
                "2d",
                "--audit-max-rows",
                "4",
            ]
        )
        == 0
    )
    assert "deleted 2 records" in capsys.readouterr().out
    database = open_audit_database(target)
    assert database.count(AuditQuery()) == 4
    database.close()
