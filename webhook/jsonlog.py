"""Log lines as JSON objects, one per line: every process of ``mlgate serve`` writes these."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import orjson


class JsonLogFormatter(logging.Formatter):
    """One JSON object per line, as cluster log collectors expect."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._second: tuple[int, str] = (-1, "")  # a second and its text, the last one used

    def format_time(self, record: logging.LogRecord) -> str:
        """RFC 3339 in UTC to the millisecond: ``2026-12-06T03:08:20.362Z``."""
        return self._time(record.created, record.msecs)

    def _time(self, created: float, msecs: float) -> str:
        # NOTE: the text of the second is worked out once per second: a datetime made and
        # formatted for every line was a third of the formatting of a decision line (bench/).
        second = int(created)
        known, text = self._second
        if second != known:
            text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = (second, text)
        return f"{text}.{int(msecs):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": self.format_time(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            line.update(fields)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return _dumps(line)

    def format_info(self, logger: str, msg: str, fields: dict[str, Any], created: float) -> str:
        """The line ``format`` makes of an INFO record of ``logger`` with message ``msg`` and
        ``fields``, made at ``created`` (``time.time()``), without the record."""
        line: dict[str, Any] = {
            "time": self._time(created, (created - int(created)) * 1000),
            "level": "info",
            "logger": logger,
            "msg": msg,
        }
        line.update(fields)
        return _dumps(line)


def _dumps(line: dict[str, Any]) -> str:
    # NOTE: orjson: the decision line is written on every request, and stdlib json was half its
    # cost (bench/). Keys that are not strings (OPT_NON_STR_KEYS costs a third more on every
    # line) and integers beyond 64 bits (which only json takes) go the slower ways.
    try:
        return orjson.dumps(line, default=str).decode()
    except orjson.JSONEncodeError:
        pass
    try:
        return orjson.dumps(line, default=str, option=orjson.OPT_NON_STR_KEYS).decode()
    except orjson.JSONEncodeError:
        return json.dumps(line, default=str)
