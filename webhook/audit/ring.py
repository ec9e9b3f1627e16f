"""Shared-memory rings from the workers to the audit writer: a send without a system call.

``mlgate serve``'s master makes one ``AuditRings`` (a memfd of ``slots`` rings) before it
forks anything. Each worker claims a ring of its own (``claim``: a lock on one byte of the
memfd, which the kernel lets go when the process ends, however it ends) and puts a request's
audit message there (``RingWriter.put``): two copies into shared memory under a thread lock,
no system call, the GIL held throughout. The writer process maps the same memfd (passed to it
as a file descriptor) and takes what every ring holds each time it polls (``RingReader``).

NOTE: the socket's ``send`` was ~18 us of a validating request's handler, and it let go of
the GIL, which the request thread then waited to get back behind the other three (bench/).

Nothing is lost on the way, as with the socket: a message is in shared memory before the
worker answers the API server, so it survives the worker (the master's mapping and the
memfd outlive it). The reader moves a ring's tail past its messages only once the writer has
stored them (``RingReader.release``), so a writer that dies mid-batch leaves them for the next
one (which skips what was already stored: the store's key is the request's time and uid).

A ring holds messages one after the other: a 16-byte header (the message's position as a
running byte count, its length, a CRC-32 of both and the payload), the payload, padding to 8
bytes. ``head`` (the end of the last message, written by the worker) and ``tail`` (the start
of the first one not yet stored, written by the reader) are running byte counts; a message
that would run past the end of the ring starts again at its beginning, after a wrap marker.
The reader checks each header's position and CRC, so it never takes a half-written message or
one from an earlier lap, even where the CPU lets another core see the head before the data
(ARM); it tries again at its next poll.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import mmap
import os
import struct
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger("mlgate.audit.ring")

MAGIC = b"mlgate-audit-rings-1\0\0\0\0"  # 24 bytes
FILE_HEADER = struct.Struct("<24sII")  # magic, slots, ring size
RING_HEADER = 64  # head (u64) at 0, tail (u64) at 8; the rest keeps them on their own line
COUNTER = struct.Struct("<Q")
MESSAGE_HEADER = struct.Struct("<QII")  # position, length, CRC-32 of the position, length, payload
WRAP = 0xFFFFFFFF  # the length of a wrap marker: the next message is at the ring's start
ALIGN = 8
# What a ring holds by default: ~1,000 validating requests' records, 20 s of a loaded worker's.
RING_SIZE = 1024 * 1024
# How long a message may look unfinished at the tail before the reader gives up on the ring's
# contents: a worker writes a message whole before it moves the head, so only memory that
# something other than mlgate wrote over can look like that for long.
STUCK_AFTER = 5.0


def _padded(length: int) -> int:
    return -(-length // ALIGN) * ALIGN


def _checksum(position: int, length: int, payload: bytes | memoryview) -> int:
    return zlib.crc32(payload, zlib.crc32(struct.pack("<QI", position, length)))


class RingError(Exception):
    """A memfd that is not a set of audit rings."""


@dataclass
class AuditRings:
    """``slots`` rings of ``size`` bytes each, in one shared memfd."""

    fd: int
    slots: int
    size: int
    memory: mmap.mmap
    # The slots this process holds, by process id: its own locks do not stop it locking again.
    _held: dict[int, set[int]] = field(default_factory=dict)

    @classmethod
    def create(cls, slots: int, *, size: int = RING_SIZE) -> AuditRings:
        """New, empty rings (in the master, before it forks or spawns anything)."""
        if slots < 1 or size < 4096 or size % ALIGN:
            raise ValueError("audit rings need a slot at least, each of 4 KiB or more (x8)")
        fd = os.memfd_create("mlgate-audit-rings", 0)
        os.ftruncate(fd, FILE_HEADER.size + slots * (RING_HEADER + size))
        rings = cls.open(fd, header=(slots, size))
        return rings

    @classmethod
    def open(cls, fd: int, *, header: tuple[int, int] | None = None) -> AuditRings:
        """The rings in ``fd`` (the writer process: the descriptor it was given)."""
        length = os.fstat(fd).st_size
        if length < FILE_HEADER.size:
            raise RingError(f"file descriptor {fd} holds no audit rings")
        memory = mmap.mmap(fd, length)
        if header is not None:
            FILE_HEADER.pack_into(memory, 0, MAGIC, *header)
        magic, slots, size = FILE_HEADER.unpack_from(memory, 0)
        if magic != MAGIC or length != FILE_HEADER.size + slots * (RING_HEADER + size):
            memory.close()
            raise RingError(f"file descriptor {fd} holds no audit rings")
        return cls(fd=fd, slots=slots, size=size, memory=memory)

    def claim(self) -> RingWriter | None:
        """A ring no live process holds, for this process until it ends; None if all are taken.

        NOTE: a POSIX record lock on the slot's byte of the memfd: it belongs to the process
        (a forked child does not inherit it) and goes when the process does, so a worker that
        was killed frees its ring for the one gunicorn starts in its place, which carries on
        where it stopped. The lock also goes if the process closes any descriptor of the memfd,
        which mlgate never does while it serves. A process does not conflict with its own
        locks, hence the slots it holds are remembered too.
        """
        held = self._held.setdefault(os.getpid(), set())
        for slot in range(self.slots):
            if slot in held:
                continue
            try:
                fcntl.lockf(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, slot)
            except OSError:
                continue
            held.add(slot)
            return RingWriter(self.memory, self._offset(slot), self.size)
        return None

    def readers(self, *, clock: Callable[[], float] = time.monotonic) -> list[RingReader]:
        return [
            RingReader(self.memory, self._offset(slot), self.size, clock=clock)
            for slot in range(self.slots)
        ]

    def close(self) -> None:
        """Unmap and close (the master, once every process that used them has ended)."""
        with contextlib.suppress(BufferError, ValueError):
            self.memory.close()
        with contextlib.suppress(OSError):
            os.close(self.fd)

    def _offset(self, slot: int) -> int:
        return FILE_HEADER.size + slot * (RING_HEADER + self.size)


class RingWriter:
    """A worker's ring: ``put`` is thread-safe; one process writes a ring at a time."""

    def __init__(self, memory: mmap.mmap, offset: int, size: int) -> None:
        self._memory = memory
        self._head_at = offset
        self._tail_at = offset + COUNTER.size
        self._data = offset + RING_HEADER
        self.size = size
        self._lock = threading.Lock()

    def put(self, payload: bytes) -> bool:
        """Append one message; False when the ring has no room for it now, or never will: a
        message over half the ring's size (it could wait for the whole ring to empty)."""
        length = len(payload)
        need = MESSAGE_HEADER.size + _padded(length)
        if need > self.size // 2:
            return False
        memory = self._memory
        with self._lock:
            (head,) = COUNTER.unpack_from(memory, self._head_at)
            (tail,) = COUNTER.unpack_from(memory, self._tail_at)
            position = head % self.size
            skip = self.size - position if position + need > self.size else 0
            if head + skip + need - tail > self.size:
                return False
            if skip >= MESSAGE_HEADER.size:
                MESSAGE_HEADER.pack_into(
                    memory, self._data + position, head, WRAP, _checksum(head, WRAP, b"")
                )
            start = head + skip
            at = self._data + start % self.size
            MESSAGE_HEADER.pack_into(memory, at, start, length, _checksum(start, length, payload))
            memory[at + MESSAGE_HEADER.size : at + MESSAGE_HEADER.size + length] = payload
            # The head moves last: the reader takes nothing up to it before this.
            COUNTER.pack_into(memory, self._head_at, start + need)
        return True


class RingReader:
    """The writer process's view of one ring: ``take`` what it holds, ``release`` it once
    stored."""

    def __init__(
        self,
        memory: mmap.mmap,
        offset: int,
        size: int,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._memory = memory
        self._head_at = offset
        self._tail_at = offset + COUNTER.size
        self._data = offset + RING_HEADER
        self.size = size
        self._clock = clock
        self._read = self.tail  # the end of what ``take`` has returned, not yet released
        self._stuck_since: float | None = None

    @property
    def tail(self) -> int:
        (tail,) = COUNTER.unpack_from(self._memory, self._tail_at)
        return int(tail)

    def take(self, limit: int) -> list[bytes]:
        """Up to ``limit`` messages after those taken before, in order."""
        memory = self._memory
        (head,) = COUNTER.unpack_from(memory, self._head_at)
        messages: list[bytes] = []
        read = self._read
        while read < head and len(messages) < limit:
            position = read % self.size
            if self.size - position < MESSAGE_HEADER.size:
                read += self.size - position
                continue
            at = self._data + position
            start, length, checksum = MESSAGE_HEADER.unpack_from(memory, at)
            if start != read:
                break
            if length == WRAP:
                if checksum != _checksum(start, WRAP, b""):
                    break
                read += self.size - position
                continue
            end = at + MESSAGE_HEADER.size + length
            if length > self.size - MESSAGE_HEADER.size - position:
                break
            payload = memory[at + MESSAGE_HEADER.size : end]
            if checksum != _checksum(start, length, payload):
                break
            messages.append(payload)
            read += MESSAGE_HEADER.size + _padded(length)
        self._read = read
        self._check_stuck(head, progressed=bool(messages))
        return messages

    def release(self) -> None:
        """Give the room of every message taken so far back to the worker (once stored)."""
        COUNTER.pack_into(self._memory, self._tail_at, self._read)

    def forget_taken(self) -> None:
        """Take again, from the tail, what was taken and not released (nothing was stored)."""
        self._read = self.tail

    def _check_stuck(self, head: int, *, progressed: bool) -> None:
        """Skip what has stayed unreadable at the tail for ``STUCK_AFTER`` seconds.

        NOTE: a message that stays unreadable would block the ring for good; only memory that
        something other than a worker wrote over can do that (a worker writes a message whole
        before it moves the head).
        """
        if progressed or self._read >= head:
            self._stuck_since = None
            return
        now = self._clock()
        if self._stuck_since is None:
            self._stuck_since = now
        elif now - self._stuck_since > STUCK_AFTER:
            log.error(
                "audit ring: %d bytes at position %d unreadable for %.0f s; skipped",
                head - self._read,
                self._read,
                STUCK_AFTER,
            )
            self._read = head
            self._stuck_since = None
