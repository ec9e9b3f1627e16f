"""The audit writer process: one for all the workers, restarted when it dies, nothing lost.

These run the real process (``python -m webhook.audit.writer``) against a SQLite file; forked
children stand in for gunicorn's workers, which inherit the socket the same way.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest

from tests.audit.records import make_record
from webhook.audit.database import AuditDatabaseError, AuditQuery, Retention, open_audit_database
from webhook.audit.record import AuditRecord
from webhook.audit.writer import AuditWriterProcess, CpuYielder

NO_RETENTION = Retention(max_age=None, max_rows=None, max_bytes=None)


def request_records(number: int) -> list[AuditRecord]:
    """A request's records: two rules, as a denied validating request has."""
    return [make_record(number, rule="images.no-latest"), make_record(number, rule="labels.owner")]


def stored_uids(target: Path) -> list[str]:
    database = open_audit_database(target, create=False)
    try:
        return sorted({record.uid for record in database.query(AuditQuery())})
    finally:
        database.close()


def wait_for(condition: Callable[[], bool], *, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def uids(numbers: range) -> list[str]:
    return sorted(f"uid-{n:06d}" for n in numbers)


@pytest.fixture
def writer(tmp_path: Path) -> Iterator[AuditWriterProcess]:
    process = AuditWriterProcess(str(tmp_path / "audit.db"), retention=NO_RETENTION)
    process.start()
    yield process
    process.stop()


def send_from_children(writer: AuditWriterProcess, batches: list[range]) -> None:
    """Each range from a forked child of its own (a worker), which then exits."""
    children = []
    for numbers in batches:
        child = os.fork()
        if child == 0:  # pragma: no cover (runs in the child)
            channel = writer.channel()
            for number in numbers:
                channel.submit(request_records(number))
            channel.close()
            os._exit(0)
        children.append(child)
    for child in children:
        assert os.waitpid(child, 0)[1] == 0


def test_every_workers_records_are_stored_and_logged_once(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    # Started here, not by the fixture: pytest's fixture-setup phase has another stdout than
    # capfd's, and the process writes to the stdout it was started with.
    writer = AuditWriterProcess(str(tmp_path / "audit.db"), retention=NO_RETENTION)
    writer.start()
    send_from_children(writer, [range(0, 40), range(100, 140), range(200, 240)])
    writer.stop()
    expected = uids(range(0, 40)) + uids(range(100, 140)) + uids(range(200, 240))
    assert stored_uids(tmp_path / "audit.db") == sorted(expected)
    lines = [
        orjson.loads(line)
        for line in capfd.readouterr().out.splitlines()
        if line.startswith('{"logger":"mlgate.audit"')
    ]
    assert sorted((line["uid"], line["rule"]) for line in lines) == sorted(
        (uid, rule) for uid in expected for rule in ("images.no-latest", "labels.owner")
    )


def test_a_writer_that_dies_is_restarted_and_what_it_had_not_read_is_stored(
    tmp_path: Path, writer: AuditWriterProcess, caplog: pytest.LogCaptureFixture
) -> None:
    send_from_children(writer, [range(0, 10)])
    wait_for(lambda: len(stored_uids(tmp_path / "audit.db")) == 10)
    first = writer.pid
    assert first is not None
    with caplog.at_level(logging.INFO, logger="mlgate.audit.writer"):
        os.kill(first, signal.SIGKILL)
        time.sleep(0.2)
        send_from_children(writer, [range(10, 30)])  # while no writer runs: they wait
        wait_for(lambda: writer.pid != first)
        wait_for(lambda: len(stored_uids(tmp_path / "audit.db")) == 30)
    assert f"audit writer (pid {first}) ended" in caplog.text
    assert "restarting it in 1 s" in caplog.text
    writer.stop()
    assert stored_uids(tmp_path / "audit.db") == uids(range(30))


def test_stopping_while_the_writer_is_dead_still_stores_what_was_sent(
    tmp_path: Path, writer: AuditWriterProcess
) -> None:
    pid = writer.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    time.sleep(0.2)
    send_from_children(writer, [range(0, 15), range(50, 65)])
    writer.stop()  # before the restart delay is over: stop starts one to store the rest
    assert stored_uids(tmp_path / "audit.db") == sorted(uids(range(0, 15)) + uids(range(50, 65)))


def test_the_writer_ends_on_the_end_of_the_stream_not_on_a_signal(
    tmp_path: Path, writer: AuditWriterProcess
) -> None:
    send_from_children(writer, [range(0, 5)])
    wait_for(lambda: len(stored_uids(tmp_path / "audit.db")) == 5)  # it is up and running
    pid = writer.pid
    assert pid is not None
    os.kill(pid, signal.SIGTERM)  # a Ctrl-C or SIGTERM to the process group must not lose
    os.kill(pid, signal.SIGINT)  # what the workers are still sending
    send_from_children(writer, [range(5, 20)])
    assert writer.pid == pid
    writer.stop()
    assert stored_uids(tmp_path / "audit.db") == uids(range(20))


def test_the_writer_applies_the_retention(tmp_path: Path) -> None:
    target = tmp_path / "audit.db"
    writer = AuditWriterProcess(str(target), retention=Retention(max_age=None, max_rows=6))
    writer.start()
    send_from_children(writer, [range(0, 20)])
    writer.stop()
    assert len(stored_uids(target)) == 3  # 6 records: the 3 newest requests, 2 rules each


def test_a_database_that_cannot_be_opened_fails_at_start_up(tmp_path: Path) -> None:
    with pytest.raises(AuditDatabaseError):
        AuditWriterProcess(str(tmp_path))  # a folder, not a database file


def test_stopping_twice_is_harmless(writer: AuditWriterProcess) -> None:
    writer.stop()
    writer.stop()


def test_the_writer_has_a_process_group_of_its_own_in_the_masters_session(
    writer: AuditWriterProcess,
) -> None:
    pid = writer.pid
    assert pid is not None
    # Its own group: a Ctrl-C in a terminal reaches the master only. The master's session:
    # where the kernel schedules sessions as groups (autogroup), the writer's nice and yields
    # count against the workers, not only against itself.
    assert os.getpgid(pid) == pid
    assert os.getsid(pid) == os.getsid(0)


def test_the_yielder_gives_the_cpu_up_once_per_interval_of_work() -> None:
    now = [0.0]
    yields: list[float] = []
    pause = CpuYielder(0.001, clock=lambda: now[0], give_up_cpu=lambda: yields.append(now[0]))
    for _ in range(25):  # 0.1 ms of work between calls
        now[0] += 0.0001
        pause()
    assert yields == pytest.approx([0.001, 0.002])
    pause.keeping_up = False  # behind: the writer takes its share of the CPU
    for _ in range(25):
        now[0] += 0.0001
        pause()
    assert len(yields) == 2
