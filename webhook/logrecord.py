"""``InfoRecord``: the record ``logger.info(msg, extra=...)`` makes, for lines logged often."""

from __future__ import annotations

import logging
import time
from typing import Any


class InfoRecord(logging.LogRecord):
    """An INFO record of logger ``name`` with message ``msg`` and the ``extra`` attributes, as
    ``logger.info(msg, extra=extra)`` makes; pass it to ``logger.handle``.

    NOTE: made for every admission (the decision line) and every chunk of audit JSON lines:
    ``LogRecord.__init__`` works out the caller's file (walking the stack), module, thread and
    process names, which no mlgate line shows, and ``Logger.info`` reaches it through four
    more calls; this costs a third of that (bench/, timeit). Every attribute a format string
    may name is still set, so any formatter can print the record.
    """

    def __init__(self, name: str, msg: str, **extra: Any) -> None:
        # No super().__init__(): it would work out what is set here anyway.
        created = time.time()
        attributes = self.__dict__
        attributes.update(_FIXED_ATTRIBUTES)
        attributes["name"] = name
        attributes["msg"] = msg
        attributes["created"] = created
        attributes["msecs"] = int((created - int(created)) * 1000) + 0.0
        attributes["relativeCreated"] = (created - _LOGGING_STARTED) * 1000
        attributes.update(extra)


_LOGGING_STARTED: float = logging._startTime  # type: ignore[attr-defined]  # relativeCreated's zero
_FIXED_ATTRIBUTES: dict[str, Any] = {
    "args": (),
    "levelname": "INFO",
    "levelno": logging.INFO,
    "pathname": "",
    "filename": "",
    "module": "",
    "lineno": 0,
    "funcName": None,
    "exc_info": None,
    "exc_text": None,
    "stack_info": None,
    "thread": None,
    "threadName": None,
    "processName": None,
    "process": None,
}
