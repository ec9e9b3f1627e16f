"""A logging handler that formats and writes on a thread of its own, off the request path.

Every admission writes a decision line. Written from the request threads themselves, the
stream handler's lock, held across the write and flush, made the threads of a loaded worker
queue behind each other (bench/: a sixth of the samples of a loaded worker were in
``Handler.release``). With ``BackgroundHandler`` a request thread only puts the record on a
queue; one thread per process formats it and writes it through the wrapped handler, in
batches, so that most records find it asleep rather than waking it. The decision line skips the
record altogether (``BackgroundHandler.write_info``): the request thread queues the finished
line.

Records must not change after they are logged: the decision log builds a fresh dict of
fields for each line, which nothing touches afterwards.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import select
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeGuard, TypeVar

from webhook.jsonlog import JsonLogFormatter

FLUSH_TIMEOUT = 5.0
# How long the writer lets records gather; lines appear at most this late. NOTE: each wake-up
# of a writer costs far more than its system calls on a virtual machine (timer, context switch,
# the GIL handed over): a writer fed 170 records/s spent ~270 us of CPU per record polling
# every 10 ms, ~170 every 50 ms; at 750 records/s, ~100 -> ~75 (bench/).
LINGER = 0.05
# Lines formatted in one go before they are written (~10 us each): the write lets the request
# threads have the GIL, so a writer never holds it for more than ~0.3 ms.
SLICE = 32
# After this long without a record the writer stops polling and blocks until the next one.
IDLE_AFTER = 1.0
# NOTE: the most a write to a pipe may hold and still never be interleaved with another
# process's write (POSIX PIPE_BUF; 4096 on Linux). Every process of ``mlgate serve`` writes
# JSON lines to the same stdout, which in a pod is a pipe to the container runtime: a longer
# write could be cut by another process's lines, and a log collector would drop both lines.
PIPE_BUF = select.PIPE_BUF


def pack_lines(lines: Iterable[str], *, limit: int = PIPE_BUF) -> Iterator[str]:
    """``lines`` (each ending in a newline) joined into chunks of at most ``limit`` bytes, in
    order; a line longer than that is a chunk of its own."""
    chunk: list[str] = []
    size = 0
    for line in lines:
        length = len(line) if line.isascii() else len(line.encode())
        if chunk and size + length > limit:
            yield "".join(chunk)
            chunk = []
            size = 0
        chunk.append(line)
        size += length
    if chunk:
        yield "".join(chunk)


Item = TypeVar("Item")


class QueuePoller:
    """How a writer thread waits for the next item of its queue: polling while busy.

    NOTE: while items keep coming, poll every ``linger``: a put that wakes a thread blocked on
    the queue makes a system call with the GIL held, and the woken writer often takes the
    request thread's core (bench/: 5% of a loaded worker's GIL time was in the log queue's
    put(), 4% in the audit store's); a put that finds the writer asleep here costs nothing.
    After ``idle_after`` without an item, block until the next one instead.
    """

    def __init__(self, *, linger: float, idle_after: float) -> None:
        self.linger = linger
        self.idle_after = idle_after
        self.quiet = 0.0  # seconds polled in a row without finding anything

    def wait(
        self,
        items: queue.SimpleQueue[Item] | queue.Queue[Item],
        *,
        gather: Callable[[Item], bool] = lambda _item: True,
    ) -> Item:
        """The next item; if it woke the writer from blocking and ``gather(item)``, first wait
        ``linger`` so that the items which follow it are taken in the same batch."""
        while self.quiet < self.idle_after:
            time.sleep(self.linger)
            try:
                item = items.get_nowait()
            except queue.Empty:
                self.quiet += self.linger
                continue
            self.quiet = 0.0
            return item
        item = items.get()  # idle: the next put wakes the writer
        if gather(item):
            time.sleep(self.linger)
        self.quiet = 0.0
        return item


class BackgroundHandler(logging.Handler):
    """Hands records to a writer thread, started in whichever process logs first.

    gunicorn configures logging in the master and forks workers, which inherit this handler
    but not its thread; each process starts its own on its first record.
    """

    def __init__(self, target: logging.Handler) -> None:
        super().__init__()
        self.target = target
        self._queue: queue.SimpleQueue[Queued] = queue.SimpleQueue()
        self._start_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pid = 0

    def createLock(self) -> None:
        # NOTE: no handler lock: emit() only puts on a thread-safe queue, and taking a lock on
        # every record is the contention this handler exists to remove.
        self.lock = None

    def emit(self, record: logging.LogRecord) -> None:
        if self._pid != os.getpid():
            self._start()
        self._queue.put(record)

    def write_info(self, logger: str, msg: str, fields: dict[str, Any]) -> bool:
        """Queue the line an INFO record of ``logger`` with ``msg`` and ``fields`` would be
        written as, without making the record; False (nothing queued) unless the target is a
        plain stream formatted by ``JsonLogFormatter`` and no level or filter of either
        handler could change what an INFO record gives: then make the record.

        NOTE: the decision line, on every request. Its record (a LogRecord's two dozen
        attributes), the logger's and handlers' dispatch, and its formatting on the writer
        thread ~50 ms later cost a loaded server ~4% of its requests/s (with no decision line
        at all `/validate` served 1.043x); the line made here from the fields served 1.012-
        1.042x side by side, faster in 27 of 32 rounds (bench/README.md).
        """
        target = self.target
        formatter = target.formatter
        if (
            not isinstance(formatter, JsonLogFormatter)
            or not _writes_plain_stream(target)
            or self.filters
            or target.filters
            or max(self.level, target.level) > logging.INFO
        ):
            return False
        line = formatter.format_info(logger, msg, fields, time.time())
        if self._pid != os.getpid():
            self._start()
        self._queue.put(line + target.terminator)
        return True

    def flush(self) -> None:
        """Wait until every record queued so far is written (at most ``FLUSH_TIMEOUT``)."""
        if self._pid == os.getpid() and self._thread is not None and self._thread.is_alive():
            written = threading.Event()
            self._queue.put(written)
            written.wait(FLUSH_TIMEOUT)

    def close(self) -> None:
        self.flush()
        if self._pid == os.getpid() and self._thread is not None:
            self._queue.put(None)
            self._thread.join(FLUSH_TIMEOUT)
            self._thread = None
            self._pid = 0
        self.target.close()
        super().close()

    def _start(self) -> None:
        with self._start_lock:
            if self._pid == os.getpid():
                return
            # Whatever a parent left queued is the parent's to write.
            self._queue = queue.SimpleQueue()
            self._thread = threading.Thread(
                target=self._write_records, name="mlgate-log-writer", daemon=True
            )
            self._thread.start()
            self._pid = os.getpid()

    def _write_records(self) -> None:
        poller = QueuePoller(linger=LINGER, idle_after=IDLE_AFTER)
        while True:
            item = poller.wait(self._queue, gather=lambda i: isinstance(i, str | logging.LogRecord))
            if not self._write_queued(item):
                return

    def _write_queued(self, item: Queued) -> bool:
        """Write ``item`` and whatever else is queued; False once told to stop."""
        batch: list[logging.LogRecord | str] = []
        while True:
            if isinstance(item, str | logging.LogRecord):
                batch.append(item)
            else:
                self._write_batch(batch)
                batch = []
                if item is None:
                    return False
                self.target.flush()
                item.set()
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
        self._write_batch(batch)
        return True

    def _write_batch(self, batch: list[logging.LogRecord | str]) -> None:
        """Write ``batch`` (records, and lines queued by ``write_info``) through the target; a
        stream gets them in one write and one flush.

        NOTE: ``StreamHandler.emit`` writes and flushes every record on its own: a system call
        per decision line, where a batch needs one. A subclass with an emit of its own
        (``FileHandler`` opens its file there) still goes record by record, as does any other
        handler (``write_info`` queues lines only for a plain stream).
        """
        target = self.target
        if _writes_plain_stream(target):
            _write_to_stream(target, batch)
            return
        for record in batch:
            # NOTE: a logger checks each handler's level before handing it a record; the
            # target's is checked here, as the logger saw only this handler's.
            if isinstance(record, logging.LogRecord) and record.levelno >= target.level:
                target.handle(record)


# What the writer thread takes from the queue: a record, a line ``write_info`` made, an event
# to set once everything before it is written, or None: stop.
Queued = logging.LogRecord | str | threading.Event | None


def _writes_plain_stream(
    target: logging.Handler,
) -> TypeGuard[logging.StreamHandler]:  # type: ignore[type-arg]
    """Whether ``target`` is a ``StreamHandler`` with its own emit and an open stream: the
    writer may then write its lines in batches."""
    return (
        isinstance(target, logging.StreamHandler)
        and type(target).emit is logging.StreamHandler.emit
        and target.stream is not None
    )


def _write_to_stream(
    target: logging.StreamHandler,  # type: ignore[type-arg]
    batch: list[logging.LogRecord | str],
) -> None:
    """Format ``batch`` a ``SLICE`` at a time (its lines are formatted already) and write it,
    a write and a flush per ``PIPE_BUF`` bytes of whole lines."""
    for start in range(0, len(batch), SLICE):
        part = batch[start : start + SLICE]
        lines = []
        for record in part:
            if isinstance(record, str):
                lines.append(record)
                continue
            if record.levelno < target.level or not target.filter(record):
                continue
            try:
                lines.append(target.format(record) + target.terminator)
            except Exception:
                target.handleError(record)
        if not lines:
            continue
        with target.lock or contextlib.nullcontext():
            try:
                for chunk in pack_lines(lines):
                    target.stream.write(chunk)
                    target.stream.flush()
            except Exception:
                last = part[-1]
                if isinstance(last, str):  # a line write_info made: a record that names it
                    last = logging.makeLogRecord({"msg": last.rstrip("\n")})
                target.handleError(last)
