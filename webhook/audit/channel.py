"""Audit records from the workers to the audit writer process, over one socket.

``mlgate serve`` runs one audit writer process for all its workers (``webhook.audit.writer``).
A worker's ``AuditChannel`` encodes a request's records as one message and sends it without
waiting; the writer decodes them (``RequestAssembler``) and stores them.

The socket is one end of a ``SOCK_SEQPACKET`` pair made by gunicorn's master before it forks:
every worker inherits the same sending end, the kernel keeps each message whole (no framing,
however many workers send at once), a full socket says so at once (``EAGAIN``) instead of
blocking, and the reader sees the end of the stream only once every process that could send
has closed its end.

A message is a JSON list of requests, each the request's row of ``audit_requests`` as the
database stores it (``encode_requests``: groups and images already JSON text), then its
``results`` (a list of ``[policy, rule, action, message]``), then ``more``. A request too
large for one message (``MAX_MESSAGE``) is sent in parts: every part but the last has ``more``
true, and the writer joins them.
"""

from __future__ import annotations

import collections
import logging
import select
import socket
import threading
from collections.abc import Iterable, Sequence
from typing import Any

import orjson

from webhook.audit.database import REQUEST_COLUMNS, EncodedRequest, encode_requests
from webhook.audit.record import AuditRecord
from webhook.audit.store import drop_records

log = logging.getLogger("mlgate.audit.channel")

# The size a message is kept under, when a request's records allow it: requests are ~1 KB.
MAX_MESSAGE = 64 * 1024
# What the kernel may hold for the writer: ~1,000 requests' records at the default limit, more
# where net.core.wmem_max allows (a worker keeps what does not fit, see ``AuditChannel``).
SOCKET_BUFFER = 4 * 1024 * 1024

Result = tuple[str, str, str, str]  # policy, rule, action, message


def make_socket_pair() -> tuple[socket.socket, socket.socket]:
    """(receiving end, sending end); the sending end's buffer as large as the host allows."""
    receiver, sender = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    sender.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER)
    return receiver, sender


def largest_message(sender: socket.socket) -> int:
    """The largest message the kernel takes on this socket (its send buffer, less overhead)."""
    return max(MAX_MESSAGE, sender.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF))


# --- encoding (in the worker) ---------------------------------------------------------------


def encode_submission(records: Iterable[AuditRecord]) -> list[bytes]:
    """The messages that carry ``records``: one, unless they exceed ``MAX_MESSAGE``.

    A request goes as the database will store it (``encode_requests``): its row, groups and
    images already JSON text, and its results, each once.
    """
    requests = encode_requests(records)
    data = orjson.dumps([[*request.row, list(request.results), False] for request in requests])
    if len(data) <= MAX_MESSAGE:
        return [data]
    messages = []
    for request in requests:
        messages += _encode_parts(list(request.row), list(request.results), more=False)
    return messages


def _encode_parts(fields: list[Any], results: Sequence[Result], *, more: bool) -> list[bytes]:
    """One request in as many messages as it takes: halves until each fits (or holds one
    result, which then goes as it is); ``more``: the last part is not the request's last."""
    data = orjson.dumps([[*fields, results, more]])
    if len(data) <= MAX_MESSAGE or len(results) == 1:
        return [data]
    middle = len(results) // 2
    return _encode_parts(fields, results[:middle], more=True) + _encode_parts(
        fields, results[middle:], more=more
    )


# --- decoding (in the writer) ---------------------------------------------------------------


class MessageError(ValueError):
    """A message that is not the list of requests this module sends."""


class RequestAssembler:
    """Turns messages into the requests to store, holding a request's parts until its last
    arrives."""

    def __init__(self) -> None:
        # (uid, time_us) -> the request's fields and the results of the parts so far
        self._parts: dict[tuple[str, int], tuple[list[Any], list[list[str]]]] = {}

    def add(self, message: bytes | bytearray | memoryview) -> list[EncodedRequest]:
        """The requests this message completes; raises ``MessageError``."""
        try:
            entries = orjson.loads(message)
            requests = []
            for entry in entries:
                *fields, results, more = entry
                key = (fields[1], fields[0])
                if more:
                    self._parts.setdefault(key, (fields, []))[1].extend(results)
                    continue
                earlier = self._parts.pop(key, None)
                if earlier is not None:
                    results = earlier[1] + results
                requests.append(_decode_request(fields, results))
            return requests
        except (TypeError, ValueError, KeyError, IndexError) as error:
            start = bytes(message[:200])
            raise MessageError(f"not an audit message ({error}): {start!r}") from None

    def take_unfinished(self) -> list[EncodedRequest]:
        """The requests whose last part never came (a worker died sending them)."""
        requests = []
        for (uid, _time_us), (fields, results) in self._parts.items():
            log.warning("audit request %s ended before its last part", uid)
            requests.append(_decode_request(fields, results))
        self._parts.clear()
        return requests


def _decode_request(row: list[Any], results: list[list[str]]) -> EncodedRequest:
    """The request as ``encode_requests`` made it in the worker, checked: the writer puts
    the groups and images into JSON lines as they are, so they must be JSON arrays."""
    if len(row) != len(REQUEST_COLUMNS) or not isinstance(row[0], int):
        raise TypeError("a request is its row of audit_requests, time first")
    if not all(isinstance(row[index], str) for index in (1, 2, 3, 4, 5, 6, 7, 9, 10)):
        raise TypeError("a request's text columns must be strings")
    if not isinstance(orjson.loads(row[7]), list) or not isinstance(orjson.loads(row[9]), list):
        raise TypeError("a request's groups and images must be JSON arrays")
    return EncodedRequest(
        (*row[:8], int(bool(row[8])), *row[9:]),
        {(str(p), str(r), str(a), str(m)): None for p, r, a, m in results},
    )


# --- sending (in the worker) ----------------------------------------------------------------


class _Submission:
    __slots__ = ("messages", "records")

    def __init__(self, messages: list[bytes], records: list[AuditRecord]) -> None:
        self.messages = messages
        self.records = records


class AuditChannel:
    """A worker's ``AuditSink``: each request's records go to the writer process at once.

    ``submit`` never waits: what the socket cannot take now (the writer is behind, or being
    restarted) is kept, up to ``backlog`` requests, and sent by a thread that runs only while
    something is kept; past that, records are dropped, counted in
    ``mlgate_audit_dropped_total`` and logged in full. ``close`` (gunicorn's ``worker_exit``)
    sends what is kept, for at most ``close_timeout`` seconds.
    """

    def __init__(
        self, sender: socket.socket, *, backlog: int = 10_000, close_timeout: float = 10.0
    ) -> None:
        self._socket = sender
        self.backlog = backlog
        self.close_timeout = close_timeout
        self._kept: collections.deque[_Submission] = collections.deque()
        self._lock = threading.Lock()
        self._sending_thread: threading.Thread | None = None
        self._closed = False

    def submit(self, records: list[AuditRecord]) -> None:
        if not records:
            return
        if self._closed:
            drop_records(records, reason="audit channel closed")
            return
        messages = encode_submission(records)
        if not self._kept:
            # NOTE: one system call, no lock and no thread on the request path; the GIL is
            # released for the call only.
            for index, message in enumerate(messages):
                try:
                    self._socket.send(message, socket.MSG_DONTWAIT)
                except BlockingIOError:
                    messages = messages[index:]
                    break
                except OSError as error:
                    drop_records(records, reason=f"cannot send to the audit writer: {error}")
                    return
            else:
                return
        self._keep(_Submission(messages, records))

    def close(self) -> None:
        """Send what is kept (at most ``close_timeout`` s); drop, logged, what still is not."""
        with self._lock:
            self._closed = True
            thread = self._sending_thread
        if thread is not None:
            thread.join(self.close_timeout)
        with self._lock:
            left = list(self._kept)
            self._kept.clear()
        for submission in left:
            drop_records(submission.records, reason="the audit writer did not take them in time")

    def _keep(self, submission: _Submission) -> None:
        with self._lock:
            if len(self._kept) >= self.backlog:
                full = True
            else:
                full = False
                self._kept.append(submission)
                if self._sending_thread is None:
                    self._sending_thread = threading.Thread(
                        target=self._send_kept, name="mlgate-audit-channel", daemon=True
                    )
                    self._sending_thread.start()
        if full:
            drop_records(submission.records, reason="audit channel backlog full")

    def _send_kept(self) -> None:
        """Send the kept submissions in order, waiting for room in the socket; then end."""
        while True:
            with self._lock:
                if not self._kept:
                    self._sending_thread = None
                    return
                submission = self._kept[0]
            try:
                self._socket.send(submission.messages[0], socket.MSG_DONTWAIT)
            except BlockingIOError:
                select.select([], [self._socket], [], 0.1)
                continue
            except OSError as error:
                with self._lock:
                    self._kept.popleft()
                drop_records(submission.records, reason=f"cannot send to the audit writer: {error}")
                continue
            del submission.messages[0]
            if not submission.messages:
                with self._lock:
                    self._kept.popleft()
