"""The audit record as JSON lines."""

from __future__ import annotations

import datetime as dt

from tests.audit.records import make_record
from webhook.audit.wire import format_json_line, format_json_lines


def test_lines_of_a_batch_are_the_lines_of_each_record() -> None:
    # Records of one request (sharing their request fields), of others, and odd values.
    records = [
        make_record(1),
        make_record(1, rule="images.allowed-repository", message="ünïcode <b>&'\"\n\u2028"),
        make_record(1, action="warn", policy="quota", rule="quota.budget"),
        make_record(2, groups=(), images=(), owner="", dry_run=True),
        make_record(
            3, time=dt.datetime(2026, 11, 28, 14, tzinfo=dt.timezone(dt.timedelta(hours=2)))
        ),
        make_record(1),  # the same record again: one line, as one row in the database
    ]
    assert format_json_lines(records) == "\n".join(format_json_line(r) for r in records[:-1])
    assert format_json_lines([]) == ""
