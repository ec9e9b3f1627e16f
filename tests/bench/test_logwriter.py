"""The background log handler writes every record, once, whole, from any thread or process."""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from pathlib import Path

import pytest

from tests.streams import WriteCounter
from webhook.logwriter import PIPE_BUF, SLICE, BackgroundHandler, QueuePoller, pack_lines


class ClosingStreamHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A plain stream handler over a file it opened, and closes with itself."""

    def __init__(self, path: Path) -> None:
        super().__init__(path.open("a", encoding="utf-8"))

    def close(self) -> None:
        super().close()
        self.stream.close()


def file_logger(
    path: Path, name: str, *, stream: bool = True
) -> tuple[logging.Logger, BackgroundHandler]:
    """A logger writing through ``BackgroundHandler`` to ``path``: by a ``StreamHandler`` over
    the open file (written in batches, as the server's stdout) or by a ``FileHandler``."""
    target = ClosingStreamHandler(path) if stream else logging.FileHandler(path)
    target.setFormatter(logging.Formatter("%(message)s"))
    handler = BackgroundHandler(target)
    logger = logging.getLogger(name)
    logger.handlers = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger, handler


@pytest.mark.parametrize("stream", [True, False], ids=["stream-batched", "file-handler"])
@pytest.mark.parametrize(
    ("threads", "lines_each"),
    [
        pytest.param(1, 200, id="one-thread"),
        pytest.param(8, 200, id="eight-threads-at-once"),
    ],
)
def test_every_record_is_written_once_and_whole(
    tmp_path: Path, threads: int, lines_each: int, stream: bool
) -> None:
    path = tmp_path / "log.txt"
    logger, handler = file_logger(path, f"test.logwriter.{threads}.{stream}", stream=stream)
    payload = "x" * 3000  # longer than one atomic pipe write

    def log_lines(n: int) -> None:
        for i in range(lines_each):
            logger.info("%d-%d %s", n, i, payload)

    workers = [threading.Thread(target=log_lines, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    handler.flush()
    lines = path.read_text().splitlines()
    assert sorted(line.split()[0] for line in lines) == sorted(
        f"{n}-{i}" for n in range(threads) for i in range(lines_each)
    )
    assert all(line.endswith(payload) for line in lines)
    handler.close()


def test_close_writes_what_is_still_queued(tmp_path: Path) -> None:
    path = tmp_path / "log.txt"
    logger, handler = file_logger(path, "test.logwriter.close")
    for i in range(1000):
        logger.info("line %d", i)
    handler.close()
    assert len(path.read_text().splitlines()) == 1000


def test_a_long_batch_is_written_in_slices_in_order() -> None:
    stream = WriteCounter()
    target = logging.StreamHandler(stream)
    target.setFormatter(logging.Formatter("%(message)s"))
    handler = BackgroundHandler(target)
    logger = logging.getLogger("test.logwriter.slices")
    logger.handlers = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    for i in range(5 * SLICE + 3):
        logger.info("line %d", i)
    handler.close()
    assert stream.getvalue().splitlines() == [f"line {i}" for i in range(5 * SLICE + 3)]
    # A write per slice at most: the writer never formats more than SLICE lines in one go;
    # and whole lines, at most PIPE_BUF bytes a write.
    assert all(0 < write.count("\n") <= SLICE for write in stream.writes)
    assert all(write.endswith("\n") for write in stream.writes)
    assert all(len(write.encode()) <= PIPE_BUF for write in stream.writes)


@pytest.mark.parametrize(
    ("lines", "limit", "chunks"),
    [
        pytest.param([], 10, [], id="nothing"),
        pytest.param(["ab\n", "cd\n", "ef\n"], 6, ["ab\ncd\n", "ef\n"], id="ascii"),
        pytest.param(["ab\n", "cd\n"], 100, ["ab\ncd\n"], id="all-in-one"),
        # "é" is two bytes: two such lines are 6 bytes, over a limit of 5
        pytest.param(["é\n", "é\n"], 5, ["é\n", "é\n"], id="counts-bytes-not-characters"),
        pytest.param(["a\n", "x" * 20 + "\n", "b\n"], 8, ["a\n", "x" * 20 + "\n", "b\n"],
                     id="a-long-line-alone"),
    ],
)  # fmt: skip
def test_lines_are_packed_whole_into_chunks_of_at_most_the_limit(
    lines: list[str], limit: int, chunks: list[str]
) -> None:
    assert list(pack_lines(lines, limit=limit)) == chunks


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_process_writes_with_a_thread_of_its_own(tmp_path: Path) -> None:
    path = tmp_path / "log.txt"
    logger, handler = file_logger(path, "test.logwriter.fork")
    logger.info("from the parent")
    handler.flush()
    pid = os.fork()
    if pid == 0:  # the child, as a gunicorn worker after the master configured logging
        try:
            logger.info("from the child")
            handler.close()
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    lines = path.read_text().splitlines()
    assert lines == ["from the parent", "from the child"]
    handler.close()


def test_a_record_that_cannot_be_formatted_costs_only_itself(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "log.txt"
    logger, handler = file_logger(path, "test.logwriter.bad")
    logger.info("before")
    logger.info("%d", "not a number")  # logging reports it on stderr and goes on
    logger.info("after")
    handler.close()
    assert path.read_text().splitlines() == ["before", "after"]
    assert "not a number" in capsys.readouterr().err


def test_queue_poller_polls_while_busy_and_blocks_once_idle() -> None:
    items: queue.SimpleQueue[str] = queue.SimpleQueue()
    poller = QueuePoller(linger=0.001, idle_after=0.005)
    items.put("first")
    assert poller.wait(items) == "first"
    assert poller.quiet == 0.0

    # Nothing comes: it polls until idle_after, then blocks until the next put.
    threading.Timer(0.05, items.put, args=("late",)).start()
    started = time.monotonic()
    assert poller.wait(items, gather=lambda _item: False) == "late"
    assert time.monotonic() - started >= 0.04
    assert poller.quiet == 0.0  # busy again: the next wait polls


def test_queue_poller_lets_followers_gather_after_a_wake_up() -> None:
    items: queue.SimpleQueue[str] = queue.SimpleQueue()
    poller = QueuePoller(linger=0.2, idle_after=0.0)  # blocks at once
    threading.Timer(0.01, lambda: (items.put("a"), items.put("b"))).start()
    started = time.monotonic()
    assert poller.wait(items, gather=lambda item: item == "a") == "a"
    assert time.monotonic() - started >= 0.2  # waited linger for "b" to join the batch
    assert items.get_nowait() == "b"
