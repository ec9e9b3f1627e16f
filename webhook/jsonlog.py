"""Log lines as JSON objects, one per line: every process of ``mlgate serve`` writes these."""

from __future__ import annotations

import datetime as dt
import json
import logging
from typing import Any

import orjson


class JsonLogFormatter(logging.Formatter):
    """One JSON object per line, as cluster log collectors expect."""

    def format(self, record: logging.LogRecord) -> str:
        when = dt.datetime.fromtimestamp(record.created, dt.UTC)
        line: dict[str, Any] = {
            "time": when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            line.update(fields)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        # NOTE: orjson: the decision line is written on every request, and stdlib json was
        # half its cost (bench/). It refuses integers beyond 64 bits; json takes those.
        try:
            return orjson.dumps(line, default=str, option=orjson.OPT_NON_STR_KEYS).decode()
        except orjson.JSONEncodeError:
            return json.dumps(line, default=str)
