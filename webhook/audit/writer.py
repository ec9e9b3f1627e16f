"""The audit writer process: one for all the workers of ``mlgate serve``.

The master starts it before it forks the workers (``AuditWriterProcess.start``, from
gunicorn's ``when_ready``); each worker sends its records over the socket pair the master
made (``webhook.audit.channel``), and the process logs them as JSON lines and stores them
(``BatchWriter``: batched, retried while the database is busy, pruned by the retention).

Why a process: writing the trail costs more CPU than deciding (~80 us per validating request
for the insert alone); done on a thread of each worker it competed with the requests for the
worker's GIL, and two workers' writers alternating on one SQLite file made each transaction
reread what the other wrote. Out of the workers, `/validate`'s one-connection p99 went from
5.0-6.8 ms to 3.9-5.4 (bench/, README "Performance").

Nothing is lost on the way. The master keeps the receiving end open, so what a writer that
died had not read waits in the socket for the next one, which the master starts after 1 s
(doubling up to 30 s); only what the dead one had read and not yet stored, one poll's worth
at most, is gone. When the server stops, the master closes its sending end after the workers
have sent everything and exited, and the writer stores what is left and ends at the end of
the stream.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from webhook.audit.channel import (
    AuditChannel,
    MessageError,
    RequestAssembler,
    largest_message,
    make_socket_pair,
)
from webhook.audit.database import (
    DEFAULT_RETENTION,
    EncodedRequest,
    Retention,
    open_audit_database,
)
from webhook.audit.store import BatchWriter, WriterSettings, configure_audit_log

log = logging.getLogger("mlgate.audit.writer")

RESTART_DELAY = 1.0
RESTART_DELAY_MAX = 30.0
DEFAULT_SETTINGS = WriterSettings()
# NOTE: the writer runs at the workers' priority, giving way to them with its yields
# (``CpuYielder``) rather than with a nice value: at nice 5 or 10 it fell behind at 16
# connections (workers' backlogs ~150 MB, records dropped); at nice 0 it kept up (0.4 s
# behind after 10 s) and the one-connection p99 was the same (bench/).
# A writer that ran this long before it died is restarted after RESTART_DELAY again.
HEALTHY_AFTER = 60.0
# How long the writer works before it lets whatever else is runnable have the CPU.
YIELD_EVERY = 0.0002
# NOTE: a plain int: ``flags & socket.MSG_TRUNC`` goes through the IntFlag's Python-level
# ``__rand__`` (~0.6 us, for every message read) where an int's ``&`` takes ~15 ns.
TRUNCATED = int(socket.MSG_TRUNC)


class CpuYielder:
    """A ``pause`` for the writer's loops: gives the CPU up (``sched_yield``) once ``interval``
    seconds have passed since the last time, unless ``keeping_up`` is false.

    NOTE: a lower priority alone did not keep the writer out of the requests' way. A batch is
    ~4 ms of work at 1,700 validating requests/s, and a worker thread woken meanwhile on the
    writer's CPU waited for it, nice 10 or not (the kernel's EEVDF scheduler lets the running
    task finish its slice): one-connection `/validate` p99 3.3-3.7 ms with the writer, 1.5
    with it stopped, ~1.8 yielding every 8 requests (bench/). A yield costs ~1 us and returns
    at once when nothing else waits. But a writer that yields whenever a worker is runnable
    starves while the workers are saturated: at 16 connections it fell behind, the workers'
    backlogs grew to ~150 MB and records were dropped. So ``receive_records`` sets
    ``keeping_up`` false while it is behind (its last read filled a batch), and the writer
    then takes its fair share.
    """

    def __init__(
        self,
        interval: float = YIELD_EVERY,
        *,
        clock: Callable[[], float] = time.perf_counter,
        give_up_cpu: Callable[[], None] = os.sched_yield,
    ) -> None:
        self.interval = interval
        self._clock = clock
        self._give_up_cpu = give_up_cpu
        self._next = clock() + interval
        self.keeping_up = True

    def __call__(self) -> None:
        if self.keeping_up and self._clock() >= self._next:
            self._give_up_cpu()
            self._next = self._clock() + self.interval


class AuditWriterProcess:
    """The master's handle on the writer process: start, watch and restart it, stop it.

    Connects to the database once here, in the master, so that a wrong path or URL fails at
    start-up with a clear message rather than in a process of its own.
    """

    def __init__(
        self,
        target: str,
        *,
        retention: Retention = DEFAULT_RETENTION,
        log_level: str = "info",
        stop_timeout: float = 20.0,
    ) -> None:
        open_audit_database(target).close()
        self.target = target
        self.retention = retention
        self.log_level = log_level
        self.stop_timeout = stop_timeout
        self._receiver, self._sender = make_socket_pair()
        self._buffer = largest_message(self._sender)
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._process: subprocess.Popen[bytes] | None = None
        self._watcher: threading.Thread | None = None

    @property
    def pid(self) -> int | None:
        process = self._process
        return None if process is None else process.pid

    def channel(self) -> AuditChannel:
        """The sink for a worker (call it after the fork, in the worker)."""
        return AuditChannel(self._sender)

    def start(self) -> None:
        with self._lock:
            if self._process is not None or self._stopping.is_set():
                return
            self._process = self._spawn()
            self._watcher = threading.Thread(
                target=self._watch, name="mlgate-audit-watcher", daemon=True
            )
            self._watcher.start()

    def stop(self) -> None:
        """Let the writer store everything sent, then end: call it once the workers have
        exited (gunicorn's ``on_exit``). Safe to call twice."""
        with self._lock:
            if self._stopping.is_set():
                return
            self._stopping.set()
            self._sender.close()
            process = self._process
            if process is not None and process.poll() is not None:
                process = self._process = self._spawn()  # to store what the socket holds
        if process is None:
            return
        try:
            process.wait(self.stop_timeout)
        except subprocess.TimeoutExpired:
            log.error(
                "audit writer (pid %d) still writing after %ss; leaving it to finish",
                process.pid,
                self.stop_timeout,
            )
            return
        if process.returncode:
            log.error("audit writer (pid %d) exited with %s", process.pid, process.returncode)
        self._receiver.close()

    def _spawn(self) -> subprocess.Popen[bytes]:
        fd = self._receiver.fileno()
        config = {
            "fd": fd,
            "buffer": self._buffer,
            "target": self.target,
            "retention": dump_retention(self.retention),
            "log_level": self.log_level,
        }
        # NOTE: a process group of its own, so that a Ctrl-C in a terminal reaches the master
        # only: the writer ends when every sender has closed the socket, not on a signal. Not a
        # session of its own: where the kernel groups processes by session for scheduling
        # (autogroup: a process in the root cgroup, as outside a container), its yields would
        # count only against itself (a nice 10 did, and its bursts of work held the workers
        # back as if it ran at their priority, bench/). The settings (a PostgreSQL
        # URL may hold a password) go through stdin, not the command line.
        process = subprocess.Popen(
            [sys.executable, "-m", "webhook.audit.writer"],
            stdin=subprocess.PIPE,
            pass_fds=(fd,),
            process_group=0,
        )
        assert process.stdin is not None
        process.stdin.write(json.dumps(config).encode())
        process.stdin.close()
        log.info("audit writer started (pid %d)", process.pid)
        return process

    def _watch(self) -> None:
        delay = RESTART_DELAY
        while True:
            process = self._process
            assert process is not None
            started = time.monotonic()
            # NOTE: gunicorn's master reaps every child it sees exit; when it reaps this one
            # first, wait() returns 0 without the real status.
            returncode = process.wait()
            if self._stopping.is_set():
                return
            if time.monotonic() - started > HEALTHY_AFTER:
                delay = RESTART_DELAY
            log.error(
                "audit writer (pid %d) ended (exit status %s, 0 when gunicorn's master reaped it"
                " first); restarting it in %.0f s",
                process.pid,
                returncode,
                delay,
            )
            if self._stopping.wait(delay):
                return
            delay = min(delay * 2, RESTART_DELAY_MAX)
            with self._lock:
                if self._stopping.is_set():
                    return
                self._process = self._spawn()


def dump_retention(retention: Retention) -> dict[str, Any]:
    return {
        "max_age": None if retention.max_age is None else retention.max_age.total_seconds(),
        "max_rows": retention.max_rows,
        "max_bytes": retention.max_bytes,
        "check_every": retention.check_every.total_seconds(),
    }


def load_retention(data: dict[str, Any]) -> Retention:
    max_age = data["max_age"]
    return Retention(
        max_age=None if max_age is None else dt.timedelta(seconds=max_age),
        max_rows=data["max_rows"],
        max_bytes=data["max_bytes"],
        check_every=dt.timedelta(seconds=data["check_every"]),
    )


def receive_records(
    receiver: socket.socket,
    write: Callable[[list[EncodedRequest]], None],
    *,
    buffer_size: int,
    settings: WriterSettings = DEFAULT_SETTINGS,
    yielder: CpuYielder | None = None,
) -> int:
    """Read requests from ``receiver`` and ``write`` them in batches, until the end of the
    stream (every sending end closed); the number of messages read.

    NOTE: while messages keep coming, the reader sleeps ``linger`` and then takes everything
    the socket holds, rather than waiting on the socket: a send that finds the reader waiting
    wakes it: woken for every request, the writer spent ~160-220 us of CPU per validating
    request, polling ~120, and a sender that wakes a process pays ~30 us more for its send
    on this 2-core VM (bench/). After ``idle_after`` without a message it waits on the socket
    until the next. ``yielder`` is called before each message is decoded, and told whether
    the writer keeps up before each batch is written.
    """
    assembler = RequestAssembler()
    buffer = bytearray(buffer_size)
    view = memoryview(buffer)
    count = 0
    quiet = 0.0
    full = False
    ended = False
    while not ended:
        if quiet >= settings.idle_after:
            wait = 0  # idle: block until the next message
        else:
            if not full:
                time.sleep(settings.linger)
            wait = socket.MSG_DONTWAIT
        batch: list[EncodedRequest] = []
        records = 0
        while records < settings.batch_size:
            try:
                size, _, flags, _ = receiver.recvmsg_into([buffer], 0, wait)
            except BlockingIOError:
                break
            wait = socket.MSG_DONTWAIT  # then take what is there, without waiting
            if size == 0:
                ended = True
                break
            if yielder is not None:
                yielder()
            count += 1
            if flags & TRUNCATED:
                log.error("audit message of more than %d bytes cut short; skipped", buffer_size)
                continue
            try:
                requests = assembler.add(view[:size])
            except MessageError as error:
                log.error("%s", error)
                continue
            batch += requests
            records += sum(len(request.results) for request in requests)
        full = records >= settings.batch_size
        if yielder is not None:
            yielder.keeping_up = not full
        if batch:
            write(batch)
            quiet = 0.0
        else:
            quiet += settings.linger
    unfinished = assembler.take_unfinished()
    if unfinished:
        write(unfinished)
    return count


def main(argv: Sequence[str] | None = None) -> int:
    """The writer process: settings on stdin (see ``AuditWriterProcess._spawn``)."""
    del argv
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    config = json.loads(sys.stdin.read())
    from webhook.jsonlog import JsonLogFormatter

    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonLogFormatter())
    logging.basicConfig(level=config["log_level"].upper(), handlers=[handler])
    target = config["target"]
    yielder = CpuYielder()
    writer = BatchWriter(
        lambda: open_audit_database(target),
        retention=load_retention(config["retention"]),
        pause=yielder,
    )
    configure_audit_log()
    receiver = socket.socket(fileno=config["fd"])
    count = receive_records(receiver, writer.write, buffer_size=config["buffer"], yielder=yielder)
    writer.close()
    log.info("audit writer done: %d messages", count)
    return 0


if __name__ == "__main__":
    sys.exit(main())
