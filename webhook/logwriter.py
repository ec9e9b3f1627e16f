"""A logging handler that formats and writes on a thread of its own, off the request path.

Every admission writes a decision line. Written from the request threads themselves, the
stream handler's lock, held across the write and flush, made the threads of a loaded worker
queue behind each other (bench/: a sixth of the samples of a loaded worker were in
``Handler.release``). With ``BackgroundHandler`` a request thread only puts the record on a
queue; one thread per process formats it and writes it through the wrapped handler, in
batches, so that most records find it asleep rather than waking it.

Records must not change after they are logged: the decision log builds a fresh dict of
fields for each line, which nothing touches afterwards.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time

FLUSH_TIMEOUT = 5.0
# How long the writer lets records gather after the first; lines appear at most this late.
# Long enough that most records find the writer asleep, short enough that a batch is small.
LINGER = 0.01


class BackgroundHandler(logging.Handler):
    """Hands records to a writer thread, started in whichever process logs first.

    gunicorn configures logging in the master and forks workers, which inherit this handler
    but not its thread; each process starts its own on its first record.
    """

    def __init__(self, target: logging.Handler) -> None:
        super().__init__()
        self.target = target
        self._queue: queue.SimpleQueue[logging.LogRecord | threading.Event | None] = (
            queue.SimpleQueue()
        )
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
        while True:
            item = self._queue.get()
            if isinstance(item, logging.LogRecord):
                # NOTE: let records gather before writing them: a put that wakes this thread
                # costs the request thread a GIL hand-over, one that finds it asleep does not.
                time.sleep(LINGER)
            while True:
                if item is None:
                    return
                if isinstance(item, threading.Event):
                    self.target.flush()
                    item.set()
                else:
                    self.target.handle(item)
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
