"""``JsonLogFormatter``: one JSON object per line, whatever a record carries."""

from __future__ import annotations

import datetime as dt
import logging
import sys

import orjson
import pytest

from webhook.jsonlog import JsonLogFormatter


def record_at(created: float, msg: str = "admission", **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("mlgate.decisions", logging.INFO, "", 0, msg, (), None)
    record.created = created
    record.msecs = int((created - int(created)) * 1000) + 0.0
    record.__dict__.update(extra)
    return record


@pytest.mark.parametrize(
    "created",
    [
        1796527700.0,  # 2026-12-06T03:28:20Z
        1796527700.362,
        1796527700.9995,
        1796527759.001,
        946684799.999,  # the last millisecond of 1999
        0.5,
    ],
)
def test_the_time_is_utc_to_the_millisecond(created: float) -> None:
    line = orjson.loads(JsonLogFormatter().format(record_at(created)))

    second = dt.datetime.fromtimestamp(int(created), dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    assert line["time"] == f"{second}.{int((created - int(created)) * 1000):03d}Z"


def test_one_formatter_follows_the_seconds_as_they_pass() -> None:
    formatter = JsonLogFormatter()
    times = [orjson.loads(formatter.format(record_at(t)))["time"] for t in (59.5, 60.25, 59.75)]

    assert times == [
        "1970-01-01T00:00:59.500Z",
        "1970-01-01T00:01:00.250Z",
        "1970-01-01T00:00:59.750Z",
    ]


def test_fields_join_the_line_after_the_standard_keys() -> None:
    record = record_at(60.0, fields={"uid": "u-1", "policies": ["p"], "dry_run": False})

    line = orjson.loads(JsonLogFormatter().format(record))

    assert list(line) == ["time", "level", "logger", "msg", "uid", "policies", "dry_run"]
    assert (line["level"], line["logger"], line["msg"]) == ("info", "mlgate.decisions", "admission")


def test_keys_that_are_not_strings_large_integers_and_odd_values_still_make_a_line() -> None:
    fields = {1: "one", "big": 2**70, "path": dt.date(2026, 12, 6), "set": {"x"}}

    line = orjson.loads(JsonLogFormatter().format(record_at(60.0, fields=fields)))

    assert line["1"] == "one"
    assert line["big"] == 2**70
    assert line["path"] == "2026-12-06"
    assert line["set"] == "{'x'}"


def test_an_exception_is_part_of_its_line() -> None:
    try:
        raise ValueError("bad quantity")
    except ValueError:
        record = logging.LogRecord(
            "mlgate.admission",
            logging.ERROR,
            "",
            0,
            "failed",
            (),
            exc_info=sys.exc_info(),
        )

    line = orjson.loads(JsonLogFormatter().format(record))

    assert line["level"] == "error"
    assert "ValueError: bad quantity" in line["exception"]
