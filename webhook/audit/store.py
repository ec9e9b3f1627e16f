"""The audit store: an ``AuditSink`` that logs and stores records off the caller's path.

``submit()`` only puts a request's records on an in-memory queue, as one item; a writer thread
takes them in batches, logs each record as one JSON line (logger ``mlgate.audit.trail``; the
line itself says ``"logger":"mlgate.audit"``), and inserts the batch into the database,
retrying while it is busy. ``close()`` drains the queue; ``atexit`` calls it too.

``mlgate serve`` runs one store, in the audit writer process (``webhook.audit.writer``), which
the workers send their records to; tests and tools may run one in their own process.

NOTE: the writer thread and its connection belong to one process: the writer starts lazily in
whichever process first submits, and a forked child starts its own.
"""

from __future__ import annotations

import atexit
import datetime as dt
import logging
import os
import queue
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from webhook import metrics
from webhook.audit.database import (
    DEFAULT_RETENTION,
    AuditBusyError,
    AuditDatabase,
    AuditDatabaseError,
    EncodedRequest,
    Pause,
    Retention,
    encode_requests,
    open_audit_database,
    paced,
)
from webhook.audit.record import AuditRecord, AuditSink
from webhook.audit.wire import format_request_lines
from webhook.logrecord import InfoRecord
from webhook.logwriter import PIPE_BUF, QueuePoller, pack_lines

# NOTE: the JSON lines have a logger of their own, not ``mlgate.audit``: it does not propagate
# (its lines are bare JSON, not log records), and the other ``mlgate.audit.*`` loggers must.
audit_log = logging.getLogger("mlgate.audit.trail")
log = logging.getLogger("mlgate.audit.store")


@dataclass(frozen=True)
class WriterSettings:
    """How a writer batches and retries, the store's thread or the audit writer process
    (``queue_size`` and ``close_timeout``: the store's only); the defaults suit an admission
    webhook."""

    # Submissions (one per request, holding its records) the queue takes before it drops them:
    # generous, ~100 MB of records at worst, never reached in practice.
    queue_size: int = 100_000
    batch_size: int = 500  # records; the writer stops taking submissions once it has this many
    retries: int = 8  # after the busy timeout of the connection itself
    retry_delay: float = 0.05  # doubles on each retry, up to 2 s
    close_timeout: float = 30.0  # gunicorn's default graceful timeout
    # How long the writer lets records gather after the first one before writing them;
    # records reach the database this late. NOTE: a transaction costs ~45 system calls
    # (a header and a page written for each of ~15 pages, locks, file checks) whatever it
    # holds: in process, two writers storing 170 requests/s each spent ~510 us of CPU per
    # request at 10 ms, ~300 at 50 ms; at 750 requests/s each, ~220 -> ~160; the writer
    # process at 10 ms used ~35-65% more CPU per request than at 50 (bench/).
    linger: float = 0.05
    # After this long without a submission the writer stops polling and blocks until the next.
    idle_after: float = 1.0


_STOP = object()


def configure_audit_log(stream: TextIO | None = None) -> None:
    """Send ``mlgate.audit.trail`` to stdout as bare JSON lines (idempotent).

    The store calls it when its writer starts, which is after a process's logging setup
    (gunicorn's ``logconfig_dict`` clears the handlers of ``mlgate.audit.trail``).
    """
    if any(getattr(h, "mlgate_audit", False) for h in audit_log.handlers):
        return
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler.mlgate_audit = True  # type: ignore[attr-defined]
    audit_log.addHandler(handler)
    audit_log.setLevel(logging.INFO)
    audit_log.propagate = False


class BatchWriter:
    """Logs and stores batches of records, on whatever thread calls it: the store's writer
    thread, or the audit writer process's loop (which passes a ``pause`` that yields the CPU
    now and then: called between log writes and before each row inserted).

    Each batch: one JSON line per record (if ``json_log`` and ``mlgate.audit.trail`` is on),
    then one transaction, retried while the database is busy; a batch that cannot be stored
    is dropped, counted and logged in full. Prunes by the retention on the first batch, every
    ``check_every``, and on ``close``.
    """

    def __init__(
        self,
        connect: Callable[[], AuditDatabase],
        *,
        retention: Retention = DEFAULT_RETENTION,
        settings: WriterSettings = WriterSettings(),
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
        pause: Pause | None = None,
    ) -> None:
        self._connect = connect
        self.retention = retention
        self.settings = settings
        self._clock = clock
        self._pause = pause
        self._database: AuditDatabase | None = None
        self._next_prune = 0.0

    def write(self, requests: list[EncodedRequest]) -> None:
        self._write(requests)
        if self._database is not None and time.monotonic() >= self._next_prune:
            self._prune()

    def close(self) -> None:
        """Prune once more and close the connection."""
        if self._database is not None:
            self._prune()
            self._database.close()
            self._database = None

    def _write(self, requests: list[EncodedRequest]) -> None:
        if not requests:
            return
        if audit_log.isEnabledFor(logging.INFO):
            # One call for several lines: the same lines, without the logging machinery's
            # per-call cost for every record (bench/); whole lines, at most PIPE_BUF bytes a
            # call, so that no other process's write lands inside one (``pack_lines``).
            lines = [line.decode() + "\n" for line in format_request_lines(requests)]
            for chunk in paced(pack_lines(lines, limit=PIPE_BUF - 1), self._pause):
                # the handler adds the last newline
                audit_log.handle(InfoRecord(audit_log.name, chunk[:-1]))
        delay = self.settings.retry_delay
        for attempt in range(self.settings.retries + 1):
            try:
                if self._database is None:
                    self._database = self._connect()
                self._database.insert_requests(requests, pause=self._pause)
                return
            except AuditBusyError as error:
                if attempt == self.settings.retries:
                    drop_requests(requests, reason=str(error))
                    return
                time.sleep(delay)
                delay = min(delay * 2, 2.0)
            except AuditDatabaseError as error:
                drop_requests(requests, reason=str(error))
                if self._database is not None:
                    self._database.close()
                    self._database = None  # reconnect next time
                return

    def _prune(self) -> None:
        assert self._database is not None
        self._next_prune = time.monotonic() + self.retention.check_every.total_seconds()
        try:
            deleted = self._database.prune(self.retention, now=self._clock())
        except AuditDatabaseError as error:
            log.warning("audit retention failed, will retry: %s", error)
            return
        if deleted:
            log.info("audit retention deleted %d records", deleted)


def drop_records(records: Sequence[AuditRecord], *, reason: str) -> None:
    """Give up on ``records``: counted in ``mlgate_audit_dropped_total``, logged in full."""
    drop_requests(encode_requests(records), reason=reason)


def drop_requests(requests: Sequence[EncodedRequest], *, reason: str) -> None:
    """``drop_records`` for the records of encoded requests."""
    lines = format_request_lines(requests)
    metrics.count_audit_dropped(len(lines))
    log.error("dropped %d audit records (%s): %s", len(lines), reason, b" ".join(lines).decode())


class AuditStore:
    """An ``AuditSink`` over a database, with a writer thread per process."""

    def __init__(
        self,
        connect: Callable[[], AuditDatabase],
        *,
        retention: Retention = DEFAULT_RETENTION,
        settings: WriterSettings = WriterSettings(),
        json_log: bool = False,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self._connect = connect
        self.json_log = json_log
        self.retention = retention
        self.settings = settings
        self._clock = clock
        self._lock = threading.Lock()
        self._pid = 0
        self._queue: queue.Queue[list[AuditRecord] | object] = queue.Queue(settings.queue_size)
        self._thread: threading.Thread | None = None
        self._closed = False
        self._poller = QueuePoller(linger=settings.linger, idle_after=settings.idle_after)

    # --- the request path -----------------------------------------------------------------

    def submit(self, records: list[AuditRecord]) -> None:
        """Queue records for the writer; never blocks. A full queue drops them, counted.

        NOTE: the records go on the queue as one item: a put and a get per record cost a
        validating request more than building its records (bench/).
        """
        if not records:
            return
        if self._pid != os.getpid():
            self._start_writer()
        if self._closed:
            drop_records(records, reason="audit store closed")
            return
        try:
            self._queue.put_nowait(records)
        except queue.Full:
            drop_records(records, reason="audit queue full")

    # --- lifecycle ------------------------------------------------------------------------

    def close(self) -> None:
        """Write every queued record, then stop the writer; safe to call twice."""
        with self._lock:
            thread = self._thread if self._pid == os.getpid() else None
            self._thread = None
            self._closed = True
        if thread is None:
            return
        self._queue.put(_STOP)
        thread.join(self.settings.close_timeout)
        if thread.is_alive():
            log.error("audit writer did not finish within %ss", self.settings.close_timeout)

    def _start_writer(self) -> None:
        with self._lock:
            if self._pid == os.getpid():
                return
            # A forked child inherits the parent's queue object and maybe its items, but not
            # its thread: start afresh, leaving the parent's records to the parent.
            self._queue = queue.Queue(self.settings.queue_size)
            self._closed = False
            if self.json_log:
                # Here, in the worker, after gunicorn's logging setup replaced our handlers.
                configure_audit_log()
            self._thread = threading.Thread(
                target=self._run, name="mlgate-audit-writer", daemon=True
            )
            self._thread.start()
            self._pid = os.getpid()
            atexit.register(self.close)

    # --- the writer thread ----------------------------------------------------------------

    def _run(self) -> None:
        writer = BatchWriter(
            self._connect, retention=self.retention, settings=self.settings, clock=self._clock
        )
        stopping = False
        while not stopping:
            batch, stopping = self._take_batch()
            writer.write(encode_requests(batch))
        writer.close()

    def _take_batch(self) -> tuple[list[AuditRecord], bool]:
        """Wait for submissions (``QueuePoller``: polling while they keep coming), then take
        what is queued, up to a batch; True: stop after."""
        batch: list[AuditRecord] = []
        item = self._poller.wait(
            self._queue,
            gather=lambda i: i is not _STOP and self._queue.qsize() < self.settings.batch_size,
        )
        while True:
            if item is _STOP:
                return batch, True
            assert isinstance(item, list)
            batch += item
            if len(batch) >= self.settings.batch_size:
                return batch, False
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return batch, False


class SinkGroup:
    """Several sinks as one: the store, and the Kubernetes events, for example."""

    def __init__(self, sinks: Sequence[AuditSink]) -> None:
        self.sinks = tuple(sinks)

    def submit(self, records: list[AuditRecord]) -> None:
        for sink in self.sinks:
            sink.submit(records)

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()


def open_audit_store(
    target: str | Path,
    *,
    retention: Retention = DEFAULT_RETENTION,
    settings: WriterSettings = WriterSettings(),
    json_log: bool = True,
) -> AuditStore:
    """The store for ``--audit-db`` (a SQLite path or a ``postgresql://`` URL).

    Connects and migrates now, so a wrong path or URL fails at start-up rather than later in
    the writer thread; each writer thread opens its own connection.
    """
    open_audit_database(target).close()
    return AuditStore(
        lambda: open_audit_database(target),
        retention=retention,
        settings=settings,
        json_log=json_log,
    )
