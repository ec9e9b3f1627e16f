"""A text stream for the tests of the log writers, which must write whole lines."""

from __future__ import annotations

import io


class WriteCounter(io.StringIO):
    """A stream that keeps each write apart."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[str] = []

    def write(self, text: str) -> int:
        self.writes.append(text)
        return super().write(text)
