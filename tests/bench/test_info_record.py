"""``InfoRecord`` is a drop-in for the record ``logger.info(msg, extra=...)`` makes."""

from __future__ import annotations

import logging

import orjson
import pytest

from webhook.decisions import log_decision
from webhook.jsonlog import JsonLogFormatter
from webhook.logrecord import InfoRecord

FIELDS = {"webhook": "validate", "uid": "u-1", "decision": "deny", "policies": ["p"]}


def standard_record(msg: str = "admission", **extra: object) -> logging.LogRecord:
    logger = logging.getLogger("mlgate.decisions")
    return logger.makeRecord(logger.name, logging.INFO, "", 0, msg, (), None, extra=extra)


def test_has_every_attribute_of_a_standard_record() -> None:
    ours = InfoRecord("mlgate.decisions", "admission", fields=FIELDS)
    assert set(vars(ours)) == set(vars(standard_record(fields=FIELDS)))
    assert set(vars(InfoRecord("mlgate.audit.trail", "{}"))) == set(vars(standard_record("{}")))


def test_a_message_without_extra_formats_as_the_standard_record_does() -> None:
    line = '{"policy":"p","message":"50% of the \\"budget\\""}'
    ours, theirs = InfoRecord("mlgate.decisions", line), standard_record(line)
    assert logging.Formatter("%(message)s").format(ours) == line
    assert logging.Formatter("%(levelname)s %(message)s").format(theirs) == f"INFO {line}"
    assert logging.Formatter("%(levelname)s %(message)s").format(ours) == f"INFO {line}"


def test_formats_as_the_standard_record_does() -> None:
    ours = InfoRecord("mlgate.decisions", "admission", fields=FIELDS)
    theirs = standard_record(fields=FIELDS)
    ours.created, ours.msecs = theirs.created, theirs.msecs

    assert JsonLogFormatter().format(ours) == JsonLogFormatter().format(theirs)
    line = orjson.loads(JsonLogFormatter().format(ours))
    assert (line["level"], line["msg"], line["uid"]) == ("info", "admission", "u-1")
    # Any format string a cluster admin configures still works.
    every_attribute = " ".join(f"%({name})s" for name in sorted(vars(theirs)) if name != "fields")
    text = logging.Formatter(every_attribute + " %(asctime)s %(message)s").format(ours)
    assert "admission" in text


def test_log_decision_goes_through_handlers_and_levels(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="mlgate.decisions"):
        log_decision(FIELDS)
    assert [(r.name, r.levelname, r.getMessage()) for r in caplog.records] == [
        ("mlgate.decisions", "INFO", "admission")
    ]
    assert vars(caplog.records[0])["fields"] == FIELDS

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="mlgate.decisions"):
        log_decision(FIELDS)
    assert caplog.records == []
