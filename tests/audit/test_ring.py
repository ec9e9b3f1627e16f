"""The shared-memory rings between the workers and the audit writer: nothing lost, nothing
taken twice, nothing half-written taken."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator

import pytest

from tests.audit.records import make_record
from tests.audit.test_channel import CollectingSink, rules_of
from webhook.audit import ring as ring_module
from webhook.audit.channel import AuditChannel, encode_submission, largest_message, make_socket_pair
from webhook.audit.ring import MESSAGE_HEADER, AuditRings, RingError, RingReader, RingWriter
from webhook.audit.writer import receive_records


@pytest.fixture
def rings() -> Iterator[AuditRings]:
    rings = AuditRings.create(2, size=4096)
    yield rings
    rings.close()


def claimed(rings: AuditRings) -> tuple[RingWriter, RingReader]:
    writer = rings.claim()
    assert writer is not None
    return writer, rings.readers()[0]


def payload(number: int, size: int) -> bytes:
    return (b"%06d:" % number) + b"x" * (size - 7)


def test_messages_come_out_in_order_and_whole(rings: AuditRings) -> None:
    writer, reader = claimed(rings)
    sent = [payload(n, 1 + n * 13 % 200) for n in range(1, 12)]
    for message in sent:
        assert writer.put(message)
    assert reader.take(100) == sent
    assert reader.take(100) == []  # taken once


def test_many_laps_around_the_ring_with_every_size_lose_nothing(rings: AuditRings) -> None:
    writer, reader = claimed(rings)
    received: list[bytes] = []
    sent: list[bytes] = []
    sizes = [*range(1, 300, 7), 1000, 2048 - MESSAGE_HEADER.size] * 5
    for number, size in enumerate(sizes, start=1):
        message = payload(number, max(size, 7))
        while not writer.put(message):  # full: the reader stores and gives the room back
            taken = reader.take(1000)
            assert taken, "a full ring must hold something to take"
            received += taken
            reader.release()
        sent.append(message)
    received += reader.take(1000)
    assert received == sent


def test_a_full_ring_says_so_and_takes_again_once_released(rings: AuditRings) -> None:
    writer, reader = claimed(rings)
    message = b"m" * 1000
    count = 0
    while writer.put(message):
        count += 1
    assert count == 4  # 4096 bytes: four of 1,016
    assert not writer.put(b"small enough?" * 8)  # 120 bytes do not fit in the 32 left...
    assert reader.take(2) == [message, message]
    assert not writer.put(message)  # ...and taking is not storing: the room is still held
    reader.release()
    assert writer.put(message)
    assert not writer.put(b"x" * 2033)  # over half the ring: never (the socket takes it)


def test_what_was_taken_but_not_released_is_taken_again_by_the_next_reader(
    rings: AuditRings,
) -> None:
    writer, reader = claimed(rings)
    for n in range(5):
        writer.put(payload(n, 50))
    assert len(reader.take(3)) == 3
    reader.release()
    assert len(reader.take(10)) == 2  # a writer that dies before storing these...
    again = rings.readers()[0]  # ...leaves them to the next one
    assert again.take(10) == [payload(3, 50), payload(4, 50)]


def test_a_message_whose_head_moved_before_its_bytes_landed_waits_for_them(
    rings: AuditRings,
) -> None:
    writer, reader = claimed(rings)
    writer.put(b"first")
    assert reader.take(10) == [b"first"]
    message = b"second message"
    writer.put(message)
    start = MESSAGE_HEADER.size + 8  # the second message's header, in the ring's data
    data = ring_module.FILE_HEADER.size + ring_module.RING_HEADER + start
    kept = rings.memory[data + MESSAGE_HEADER.size : data + MESSAGE_HEADER.size + len(message)]
    rings.memory[data + MESSAGE_HEADER.size] = ord("S")  # as a core that sees a stale byte
    assert reader.take(10) == []
    rings.memory[data + MESSAGE_HEADER.size : data + MESSAGE_HEADER.size + len(message)] = kept
    assert reader.take(10) == [message]


def test_a_stale_message_from_an_earlier_lap_is_not_taken(rings: AuditRings) -> None:
    writer, reader = claimed(rings)
    writer.put(b"lap one")
    reader.take(10)
    reader.release()
    # The head moved on as if a message had been written, but its bytes are the old lap's.
    head_at = ring_module.FILE_HEADER.size
    (head,) = ring_module.COUNTER.unpack_from(rings.memory, head_at)
    ring_module.COUNTER.pack_into(rings.memory, head_at, head + 4096)
    assert reader.take(10) == []


def test_bytes_that_stay_unreadable_are_skipped_after_a_while_and_logged(
    rings: AuditRings, caplog: pytest.LogCaptureFixture
) -> None:
    now = [100.0]
    writer = rings.claim()
    assert writer is not None
    reader = rings.readers(clock=lambda: now[0])[0]
    writer.put(b"overwritten")
    rings.memory[ring_module.FILE_HEADER.size + ring_module.RING_HEADER] = 0xFF
    assert reader.take(10) == []
    now[0] += ring_module.STUCK_AFTER + 1
    assert reader.take(10) == []
    assert "unreadable" in caplog.text
    writer.put(b"after")
    assert reader.take(10) == [b"after"]


def test_each_process_claims_a_ring_of_its_own_and_a_dead_ones_ring_is_taken_over(
    rings: AuditRings,
) -> None:
    def in_child(work: str) -> int:
        read, write = os.pipe()
        child = os.fork()
        if child == 0:  # pragma: no cover (runs in the child)
            ring = rings.claim()
            if ring is not None and work:
                ring.put(work.encode())
            os.write(write, b"-1" if ring is None else str(ring._head_at).encode())
            os._exit(0)
        os.close(write)
        answer = os.read(read, 100)
        os.close(read)
        assert os.waitpid(child, 0)[1] == 0
        return int(answer)

    mine = rings.claim()
    assert mine is not None
    theirs = in_child("from a worker that then died")
    assert theirs != mine._head_at  # not the ring this process holds
    assert in_child("from the worker in its place") == theirs  # the dead one's ring is free
    reader = next(r for r in rings.readers() if r._head_at == theirs)
    assert reader.take(10) == [b"from a worker that then died", b"from the worker in its place"]
    assert rings.claim() is not None  # the other slot, free again
    assert rings.claim() is None  # this process holds both


def test_a_file_that_is_not_rings_is_refused() -> None:
    fd = os.memfd_create("not-rings")
    try:
        os.ftruncate(fd, 4096)
        with pytest.raises(RingError):
            AuditRings.open(fd)
    finally:
        os.close(fd)


def test_records_put_in_rings_reach_the_writer_loop_with_those_sent_over_the_socket(
    rings: AuditRings,
) -> None:
    receiver, sender = make_socket_pair()
    ring = rings.claim()
    assert ring is not None
    channel = AuditChannel(sender, ring=ring)
    sink = CollectingSink()
    reader = threading.Thread(
        target=receive_records,
        args=(receiver, sink.submit),
        kwargs={"buffer_size": largest_message(sender), "rings": rings.readers()},
    )
    reader.start()
    sent = [rules_of(number, 3, message="m" * 300) for number in range(60)]
    for records in sent:  # 4 KiB rings fill after a few: the rest go over the socket
        channel.submit(records)
    channel.close()
    sender.close()
    reader.join(10)
    assert not reader.is_alive()
    expected = [record for records in sent for record in records]
    assert sorted(sink.records, key=lambda r: (r.uid, r.rule)) == sorted(
        expected, key=lambda r: (r.uid, r.rule)
    )


def test_a_request_goes_to_the_ring_as_the_one_message_the_socket_would_carry(
    rings: AuditRings,
) -> None:
    receiver, sender = make_socket_pair()
    ring = rings.claim()
    assert ring is not None
    records = [make_record(7), make_record(7, rule="labels.owner")]
    AuditChannel(sender, ring=ring).submit(records)
    assert rings.readers()[0].take(10) == encode_submission(records)
    receiver.setblocking(False)
    with pytest.raises(BlockingIOError):
        receiver.recv(65536)  # nothing went over the socket
