"""The decision line as the server writes it: made from the fields without a record, and the
very line the record would have given; anything configured that could change it gets the
record instead."""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import pytest

from webhook import decisions
from webhook.decisions import log_decision
from webhook.jsonlog import JsonLogFormatter
from webhook.logrecord import InfoRecord
from webhook.logwriter import BackgroundHandler

FIELDS = {"webhook": "validate", "uid": "u-1", "decision": "deny", "policies": ["p"]}


@pytest.fixture
def records_made(monkeypatch: pytest.MonkeyPatch) -> list[InfoRecord]:
    """Every record ``log_decision`` makes."""
    made: list[InfoRecord] = []

    def make(*args: Any, **kwargs: Any) -> InfoRecord:
        made.append(InfoRecord(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(decisions, "InfoRecord", make)
    return made


@pytest.fixture
def decision_target(
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[tuple[logging.StreamHandler[io.StringIO], BackgroundHandler]]:
    """``mlgate.decisions`` as the server configures it: JSON lines on a stream, written by a
    ``BackgroundHandler`` (here over a StringIO). A logger of its own, outside the hierarchy
    that pytest's capture handlers are added to."""
    stream = io.StringIO()
    target = logging.StreamHandler(stream)
    target.setFormatter(JsonLogFormatter())
    handler = BackgroundHandler(target)
    logger = logging.Logger("mlgate.decisions", logging.INFO)
    logger.addHandler(handler)
    logger.propagate = False  # as the server configures it
    monkeypatch.setattr(decisions, "decision_log", logger)
    yield target, handler
    handler.close()


def test_format_info_gives_the_line_format_gives_the_record() -> None:
    record = InfoRecord("mlgate.decisions", "admission", fields=FIELDS)
    formatter = JsonLogFormatter()

    line = formatter.format_info("mlgate.decisions", "admission", FIELDS, record.created)

    assert line == formatter.format(record)


def test_the_servers_handler_gets_the_line_without_a_record(
    decision_target: tuple[logging.StreamHandler[io.StringIO], BackgroundHandler],
    records_made: list[InfoRecord],
) -> None:
    target, handler = decision_target

    log_decision(FIELDS)
    log_decision({**FIELDS, "uid": "u-2"})
    handler.flush()

    lines = [orjson.loads(line) for line in target.stream.getvalue().splitlines()]
    times = [line.pop("time") for line in lines]
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", t) for t in times), times
    assert lines == [
        {"level": "info", "logger": "mlgate.decisions", "msg": "admission", **FIELDS},
        {"level": "info", "logger": "mlgate.decisions", "msg": "admission", **FIELDS, "uid": "u-2"},
    ]
    assert records_made == []


def _drop_all(target: logging.Handler, handler: BackgroundHandler) -> None:
    target.addFilter(lambda _record: False)


def _quiet_target(target: logging.Handler, handler: BackgroundHandler) -> None:
    target.setLevel(logging.WARNING)


def _quiet_handler(target: logging.Handler, handler: BackgroundHandler) -> None:
    handler.setLevel(logging.WARNING)


def _message_only(target: logging.Handler, handler: BackgroundHandler) -> None:
    target.setFormatter(logging.Formatter("%(levelname)s %(message)s"))


def test_a_logger_that_propagates_gives_its_record_to_the_root_too(
    decision_target: tuple[logging.StreamHandler[io.StringIO], BackgroundHandler],
    records_made: list[InfoRecord],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    target, handler = decision_target
    root = logging.Logger("root", logging.INFO)
    seen: list[logging.LogRecord] = []
    root_handler = logging.Handler()
    root_handler.emit = seen.append  # type: ignore[method-assign]
    root.addHandler(root_handler)
    monkeypatch.setattr(decisions.decision_log, "parent", root)
    monkeypatch.setattr(decisions.decision_log, "propagate", True)

    log_decision(FIELDS)
    handler.flush()

    assert len(records_made) == 1
    assert seen == records_made
    assert orjson.loads(target.stream.getvalue())["uid"] == "u-1"


@pytest.mark.parametrize(
    ("configure", "written"),
    [
        pytest.param(_drop_all, "", id="a-filter-on-the-stream"),
        pytest.param(_quiet_target, "", id="the-stream-at-warning"),
        pytest.param(_quiet_handler, "", id="the-background-handler-at-warning"),
        pytest.param(_message_only, "INFO admission\n", id="another-formatter"),
    ],
)
def test_anything_that_could_change_the_line_gets_the_record(
    decision_target: tuple[logging.StreamHandler[io.StringIO], BackgroundHandler],
    records_made: list[InfoRecord],
    configure: Callable[[logging.Handler, BackgroundHandler], None],
    written: str,
) -> None:
    target, handler = decision_target
    configure(target, handler)

    log_decision(FIELDS)
    handler.flush()

    assert target.stream.getvalue() == written
    assert len(records_made) == 1  # made, and handled as any record
