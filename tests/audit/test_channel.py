"""Records from a worker to the writer process: the messages, and the socket between them."""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import threading
import time

import orjson
import pytest
from prometheus_client import REGISTRY

from tests.audit.records import make_record
from webhook.audit.channel import (
    MAX_MESSAGE,
    AuditChannel,
    MessageError,
    RequestAssembler,
    encode_submission,
    largest_message,
    make_socket_pair,
)
from webhook.audit.database import EncodedRequest, decode_record
from webhook.audit.record import AuditRecord
from webhook.audit.store import WriterSettings
from webhook.audit.writer import CpuYielder, receive_records


def rules_of(number: int, count: int, **changes: object) -> list[AuditRecord]:
    """``count`` records of one request (the same request fields, a rule each)."""
    message = str(changes.pop("message", "failed"))
    return [
        make_record(number, rule=f"rule-{index}", message=f"{message} #{index}", **changes)
        for index in range(count)
    ]


def records_of(requests: list[EncodedRequest]) -> list[AuditRecord]:
    """The records of encoded requests, as the database gives them back."""
    return [
        decode_record((*request.row[:9], *result, *request.row[9:]))
        for request in requests
        for result in request.results
    ]


def decode_all(messages: list[bytes]) -> list[AuditRecord]:
    assembler = RequestAssembler()
    requests = []
    for message in messages:
        requests += assembler.add(message)
    assert assembler.take_unfinished() == []
    return records_of(requests)


class CollectingSink:
    """Keeps the batches it is given, as the writer process would store them."""

    def __init__(self) -> None:
        self.records: list[AuditRecord] = []

    def submit(self, requests: list[EncodedRequest]) -> None:
        self.records += records_of(requests)


def start_reader(
    receiver: socket.socket, sender: socket.socket, sink: CollectingSink
) -> threading.Thread:
    """The writer process's loop, on a thread: until every sending end is closed."""
    reader = threading.Thread(
        target=receive_records,
        args=(receiver, sink.submit),
        kwargs={"buffer_size": largest_message(sender)},
    )
    reader.start()
    return reader


def read_dropped() -> float:
    return REGISTRY.get_sample_value("mlgate_audit_dropped_total") or 0.0


@pytest.mark.parametrize(
    "records",
    [
        pytest.param(rules_of(1, 1), id="one-record"),
        pytest.param(rules_of(1, 4), id="one-request-four-rules"),
        pytest.param(rules_of(1, 2) + rules_of(2, 3), id="two-requests"),
        pytest.param(
            rules_of(
                3,
                2,
                message='ünïcode "quoted" <b>\n\ttab',
                groups=(),
                images=("a:1", "b@sha256:" + "0" * 64),
                dry_run=True,
                owner="",
            ),
            id="odd-values",
        ),
    ],
)
def test_records_come_back_as_they_were_sent(records: list[AuditRecord]) -> None:
    messages = encode_submission(records)
    assert len(messages) == 1
    assert decode_all(messages) == records


def test_a_request_too_large_for_one_message_goes_in_parts_and_comes_back_whole() -> None:
    records = [
        make_record(7, rule=f"rule-{index}", message="x" * 1000 + str(index))
        for index in range(300)
    ]
    messages = encode_submission(records)
    assert len(messages) > 4
    assert all(len(message) <= MAX_MESSAGE for message in messages)
    assert [orjson.loads(m)[0][-1] for m in messages] == [True] * (len(messages) - 1) + [False]
    assert decode_all(messages) == records


def test_parts_of_two_requests_interleaved_still_come_back_whole() -> None:
    first = [make_record(1, rule=f"a{index}", message="y" * 2000) for index in range(100)]
    second = [make_record(2, rule=f"b{index}", message="z" * 2000) for index in range(100)]
    one, two = encode_submission(first), encode_submission(second)
    interleaved = [m for pair in zip(one, two, strict=False) for m in pair]
    interleaved += one[len(two) :] + two[len(one) :]
    records = decode_all(interleaved)
    assert sorted(records, key=lambda r: (r.uid, r.rule)) == sorted(
        first + second, key=lambda r: (r.uid, r.rule)
    )


def test_a_request_whose_last_part_never_came_is_still_given_back() -> None:
    records = [make_record(5, rule=f"r{index}", message="w" * 3000) for index in range(60)]
    messages = encode_submission(records)
    assembler = RequestAssembler()
    for message in messages[:-1]:
        assert assembler.add(message) == []
    unfinished = records_of(assembler.take_unfinished())
    assert unfinished
    assert all(r in records for r in unfinished)
    assert assembler.take_unfinished() == []


@pytest.mark.parametrize(
    "message",
    [
        pytest.param(b"{not json", id="not-json"),
        pytest.param(b'{"a": 1}', id="an-object"),
        pytest.param(b"[[1, 2, 3]]", id="too-few-fields"),
        pytest.param(b'[["t", "uid", 1, 2, 3, 4, 5, [], false, [], "", [], false]]', id="bad-time"),
        pytest.param(
            b'[[1, "u", "CREATE", "Pod", "n", "p", "a", "[]", 0, "[]", "", [["two", 1]], false]]',
            id="short-result",
        ),
        pytest.param(
            b'[[1, "u", "CREATE", "Pod", "n", "p", "a", "no json", 0, "[]", "", [], false]]',
            id="groups-not-json",
        ),
        pytest.param(
            b'[[1, "u", "CREATE", "Pod", "n", "p", "a", "{}", 0, "[]", "", [], false]]',
            id="groups-not-a-list",
        ),
    ],
)
def test_a_message_that_is_not_ours_is_refused_with_a_reason(message: bytes) -> None:
    with pytest.raises(MessageError, match="not an audit message"):
        RequestAssembler().add(message)


def test_records_cross_the_socket_and_the_reader_ends_when_every_sender_has_closed() -> None:
    receiver, sender = make_socket_pair()
    sink = CollectingSink()
    reader = start_reader(receiver, sender, sink)
    # A forked child holds the sending end too (as a gunicorn worker does): the reader must
    # not end before the child has sent everything and exited.
    child = os.fork()
    if child == 0:  # pragma: no cover (runs in the child)
        channel = AuditChannel(sender)
        for number in range(100, 150):
            channel.submit(rules_of(number, 3))
        channel.close()
        os._exit(0)
    channel = AuditChannel(sender)
    for number in range(50):
        channel.submit(rules_of(number, 2))
    channel.close()
    sender.close()
    reader.join(5)
    assert not reader.is_alive(), "the reader did not see the end of the stream"
    assert os.waitpid(child, 0)[1] == 0
    assert sorted(sink.records, key=lambda r: (r.uid, r.rule)) == sorted(
        [r for n in range(50) for r in rules_of(n, 2)]
        + [r for n in range(100, 150) for r in rules_of(n, 3)],
        key=lambda r: (r.uid, r.rule),
    )


def test_submit_does_not_wait_for_a_writer_that_is_behind_and_nothing_is_lost() -> None:
    receiver, sender = make_socket_pair()
    channel = AuditChannel(sender)
    sent = [rules_of(number, 4, message="v" * 500) for number in range(3000)]
    started = time.monotonic()
    for records in sent:  # nobody reads yet: the socket fills, the channel keeps the rest
        channel.submit(records)
    assert time.monotonic() - started < 5
    assert channel._kept, "the socket took everything: make the test send more"
    sink = CollectingSink()
    reader = start_reader(receiver, sender, sink)
    channel.close()
    sender.close()
    reader.join(10)
    assert not reader.is_alive()
    assert len(sink.records) == sum(len(records) for records in sent)
    assert [r.uid for r in sink.records[::4]] == [records[0].uid for records in sent]


def test_past_the_backlog_records_are_dropped_counted_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    receiver, sender = make_socket_pair()
    channel = AuditChannel(sender, backlog=5, close_timeout=0.2)
    before = read_dropped()
    with caplog.at_level(logging.ERROR, logger="mlgate.audit"):
        number = 0
        while not channel._kept:  # fill the socket, nobody reading
            channel.submit(rules_of(number, 2, message="u" * 2000))
            number += 1
        for extra in range(10):
            channel.submit(rules_of(10_000 + extra, 2))
        channel.close()
    # the request that found the socket full and the next 4 kept; the other 6 dropped at
    # once, the kept 5 at close (nobody read them)
    assert read_dropped() - before == 2 * 6 + 2 * 5
    assert "audit channel backlog full" in caplog.text
    assert "did not take them in time" in caplog.text
    assert '"uid":"uid-010009"' in caplog.text  # the dropped records, in full
    receiver.close()
    sender.close()


def test_a_closed_channel_drops_and_logs_instead_of_sending(
    caplog: pytest.LogCaptureFixture,
) -> None:
    receiver, sender = make_socket_pair()
    channel = AuditChannel(sender)
    channel.close()
    before = read_dropped()
    with caplog.at_level(logging.ERROR, logger="mlgate.audit"):
        channel.submit(rules_of(1, 3))
    assert read_dropped() - before == 3
    assert "audit channel closed" in caplog.text
    receiver.close()
    sender.close()


def test_a_socket_whose_reader_is_gone_drops_with_the_reason(
    caplog: pytest.LogCaptureFixture,
) -> None:
    receiver, sender = make_socket_pair()
    receiver.close()
    channel = AuditChannel(sender)
    before = read_dropped()
    with caplog.at_level(logging.ERROR, logger="mlgate.audit"):
        channel.submit(rules_of(1, 2))
    assert read_dropped() - before == 2
    assert "cannot send to the audit writer" in caplog.text
    sender.close()


def test_a_truncated_or_foreign_message_is_skipped_and_the_rest_delivered(
    caplog: pytest.LogCaptureFixture,
) -> None:
    receiver, sender = make_socket_pair()
    sender.send(b"garbage")
    sender.send(b"x" * 2048)  # larger than the reader's buffer below
    sender.send(encode_submission(rules_of(1, 1))[0])
    sender.close()
    sink = CollectingSink()
    with caplog.at_level(logging.ERROR, logger="mlgate.audit.writer"):
        count = receive_records(receiver, sink.submit, buffer_size=1024)
    assert count == 3
    assert sink.records == rules_of(1, 1)
    assert "not an audit message" in caplog.text
    assert "cut short" in caplog.text
    receiver.close()


def test_the_socket_buffer_is_larger_than_the_kernel_default() -> None:
    receiver, sender = make_socket_pair()
    assert largest_message(sender) >= MAX_MESSAGE
    assert sender.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) >= 200_000
    receiver.close()
    sender.close()


def test_a_record_survives_the_trip_field_by_field() -> None:
    record = make_record(9, groups=("g1", "g2"), images=("i:1",), dry_run=True)
    (back,) = decode_all(encode_submission([record]))
    assert dataclasses.asdict(back) == dataclasses.asdict(record)
    assert back.time.tzinfo is not None


def test_a_single_result_larger_than_a_message_still_goes_through_whole() -> None:
    # Over MAX_MESSAGE, under the smallest socket buffer a host gives (net.core.wmem_max's
    # default, 212992 bytes, doubled).
    record = make_record(4, message="m" * 150_000)
    (message,) = encode_submission([record])
    assert len(message) > MAX_MESSAGE
    receiver, sender = make_socket_pair()
    sink = CollectingSink()
    reader = start_reader(receiver, sender, sink)
    channel = AuditChannel(sender)
    channel.submit([record])
    channel.close()
    sender.close()
    reader.join(5)
    assert sink.records == [record]


def test_the_reader_stops_yielding_while_it_is_behind() -> None:
    receiver, sender = make_socket_pair()
    for number in range(10):  # waiting before the reader starts: it is behind
        sender.send(encode_submission(rules_of(number, 1))[0])
    sender.close()
    yielder = CpuYielder(0.0, give_up_cpu=lambda: None)
    keeping_up: list[bool] = []

    def write(requests: list[EncodedRequest]) -> None:
        keeping_up.append(yielder.keeping_up)

    settings = WriterSettings(batch_size=4, linger=0.001)
    receive_records(receiver, write, buffer_size=1024, settings=settings, yielder=yielder)
    receiver.close()
    assert keeping_up == [False, False, True]  # 4 and 4 records: full; the last 2: caught up
