"""The server's gunicorn logger writes access lines only when ``gunicorn.access`` takes them."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator
from types import SimpleNamespace

import pytest
from gunicorn.config import Config

from webhook.server import WebhookLogger


class ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def access_lines() -> Iterator[ListHandler]:
    """Lines of ``gunicorn.access``, once the test attaches the handler (gunicorn's setup
    replaces the logger's handlers)."""
    access = logging.getLogger("gunicorn.access")
    handlers, level, propagate = list(access.handlers), access.level, access.propagate
    yield ListHandler()
    access.handlers = handlers
    access.setLevel(level)
    access.propagate = propagate


@pytest.mark.parametrize(
    ("level", "expected"),
    [
        pytest.param(logging.WARNING, [], id="access-logger-at-warning-logs-nothing"),
        pytest.param(logging.INFO, ["POST /validate?timeout=10s HTTP/1.1 200"],
                     id="access-logger-at-info-logs-the-request"),
    ],
)  # fmt: skip
def test_access_line_is_built_only_when_the_access_logger_takes_it(
    level: int, expected: list[str], access_lines: ListHandler
) -> None:
    config = Config()
    config.set("logconfig_dict", {"version": 1, "disable_existing_loggers": False})
    config.set("access_log_format", "%(r)s %(s)s")
    logger = WebhookLogger(config)
    logger.access_log.setLevel(level)
    logger.access_log.addHandler(access_lines)
    response = SimpleNamespace(status="200 OK", sent=10, headers=[])
    request = SimpleNamespace(headers=[])
    environ = {
        "REQUEST_METHOD": "POST",
        "RAW_URI": "/validate?timeout=10s",
        "SERVER_PROTOCOL": "HTTP/1.1",
    }
    logger.access(response, request, environ, dt.timedelta(milliseconds=1))
    assert access_lines.lines == expected
