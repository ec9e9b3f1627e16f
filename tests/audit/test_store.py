"""The audit store on both engines: round trip, no duplicates, draining, migrations, retention."""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
import json
import logging
import multiprocessing
import threading
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from tests.audit.records import NOW, make_record
from tests.streams import WriteCounter
from webhook.audit.database import (
    COLUMNS,
    MIGRATIONS,
    AuditDatabase,
    AuditDatabaseError,
    AuditQuery,
    AuditSchemaError,
    PostgresDatabase,
    Retention,
    SqliteDatabase,
    encode_requests,
    is_postgres_url,
    open_audit_database,
    records_source,
    to_micros,
)
from webhook.audit.record import AuditRecord
from webhook.audit.store import AuditStore, WriterSettings, configure_audit_log, open_audit_store
from webhook.logwriter import PIPE_BUF, SLICE

NO_RETENTION = Retention(max_age=None, max_rows=None, max_bytes=None)


def read_all(target: str) -> list[AuditRecord]:
    database = open_audit_database(target, create=False)
    try:
        return database.query(AuditQuery())
    finally:
        database.close()


def read_dropped() -> float:
    return REGISTRY.get_sample_value("mlgate_audit_dropped_total") or 0.0


def test_submitted_records_come_back_newest_first(audit_target: str) -> None:
    records = [make_record(n, message=f"ünïcode <b>&'\"\n{n}") for n in range(20)]
    store = open_audit_store(audit_target, json_log=False)
    store.submit(records[10:])
    store.submit(records[:10])
    store.close()
    assert read_all(audit_target) == records


def test_a_record_submitted_twice_is_stored_once(audit_target: str) -> None:
    store = open_audit_store(audit_target, json_log=False)
    store.submit([make_record(1), make_record(2)])
    store.submit([make_record(1)])
    store.close()
    assert [r.uid for r in read_all(audit_target)] == ["uid-000001", "uid-000002"]


def test_close_writes_everything_still_queued(audit_target: str) -> None:
    store = open_audit_store(audit_target, json_log=False)
    for start in range(0, 3000, 100):
        store.submit([make_record(n) for n in range(start, start + 100)])
    store.close()
    database = open_audit_database(audit_target)
    assert database.count(AuditQuery()) == 3000
    database.close()


def submit_from_child(store: AuditStore, first: int, count: int) -> None:
    for n in range(first, first + count):
        store.submit([make_record(n)])
    store.close()


@pytest.mark.parametrize("processes", [4], ids=["four-forked-writers"])
def test_forked_processes_sharing_one_store_lose_and_duplicate_nothing(
    audit_target: str, processes: int
) -> None:
    # Like gunicorn with the app built in the master: each forked child gets its own writer.
    store = open_audit_store(audit_target, json_log=False)
    context = multiprocessing.get_context("fork")
    children = [
        context.Process(target=submit_from_child, args=(store, i * 500, 500))
        for i in range(processes)
    ]
    for child in children:
        child.start()
    for child in children:
        child.join(60)
        assert child.exitcode == 0
    uids = [r.uid for r in read_all(audit_target)]
    assert len(uids) == processes * 500
    assert len(set(uids)) == len(uids)


def test_a_full_queue_drops_and_counts_instead_of_blocking(tmp_path: Path) -> None:
    target = str(tmp_path / "audit.db")
    open_audit_database(target).close()
    released = threading.Event()

    def connect_when_released() -> AuditDatabase:
        released.wait(30)
        return open_audit_database(target)

    store = AuditStore(
        connect_when_released,
        retention=NO_RETENTION,
        settings=WriterSettings(queue_size=10, batch_size=5),
    )
    before = read_dropped()
    # The writer takes one batch (up to 5) and then waits to connect: 10 more fit the queue.
    store.submit([make_record(0)])
    for n in range(1, 40):
        store.submit([make_record(n)])
    released.set()
    store.close()
    stored = len(read_all(target))
    dropped = read_dropped() - before
    assert dropped > 0
    assert stored + dropped == 40


def test_a_database_that_cannot_be_written_drops_and_counts(tmp_path: Path) -> None:
    # A directory where the database file should be: SQLite cannot open it.
    def connect_to_a_directory() -> AuditDatabase:
        return open_audit_database(tmp_path)

    store = AuditStore(connect_to_a_directory, settings=WriterSettings(retries=1))
    before = read_dropped()
    store.submit([make_record(1), make_record(2)])
    store.close()
    assert read_dropped() - before == 2


def test_each_record_is_one_json_line_on_the_audit_log(tmp_path: Path) -> None:
    stream = io.StringIO()
    logger = logging.getLogger("mlgate.audit.trail")
    saved = list(logger.handlers)
    logger.handlers.clear()
    try:
        configure_audit_log(stream)
        configure_audit_log(stream)  # idempotent: still one line per record
        store = open_audit_store(tmp_path / "audit.db", json_log=False)
        store.submit([make_record(1, message="two\nlines"), make_record(2)])
        store.close()
    finally:
        logger.handlers[:] = saved
    lines = stream.getvalue().splitlines()
    assert [json.loads(line)["uid"] for line in lines] == ["uid-000001", "uid-000002"]
    assert json.loads(lines[0]) == {
        "logger": "mlgate.audit",
        "time": "2026-11-28T11:59:00.000000Z",
        "uid": "uid-000001",
        "operation": "CREATE",
        "kind": "Deployment",
        "namespace": "ml-serving",
        "name": "model-1",
        "username": "alice@example.com",
        "groups": ["ml-team", "system:authenticated"],
        "dryRun": False,
        "policy": "images",
        "rule": "images.no-latest",
        "action": "deny",
        "message": "two\nlines",
        "images": ["registry.example.com/model:latest"],
        "owner": "Deployment/model-1",
    }


# --- migrations -----------------------------------------------------------------------------


def test_a_new_database_is_migrated_to_the_newest_version_once(audit_target: str) -> None:
    first = open_audit_database(audit_target)
    first.close()
    second = open_audit_database(audit_target)
    rows = second.execute("SELECT version FROM schema_version ORDER BY version")
    second.close()
    assert [r[0] for r in rows] == [m.version for m in MIGRATIONS]


def test_a_database_from_a_newer_mlgate_is_refused(audit_target: str) -> None:
    database = open_audit_database(audit_target)
    database.execute("INSERT INTO schema_version VALUES (?, ?, ?)", [999, "future", 0])
    database.close()
    with pytest.raises(AuditSchemaError, match="999"):
        open_audit_database(audit_target)


def open_unmigrated(target: str) -> AuditDatabase:
    return PostgresDatabase(target) if is_postgres_url(target) else SqliteDatabase(target)


# Rows as version 2 stored them: one per record, each with the request's fields and a unique
# fingerprint; uid-000007 has two records (two rules acted on it).
VERSION_2_RECORDS = [
    make_record(7),
    make_record(7, policy="quota", rule="quota.budget", action="warn", message="over budget"),
    make_record(8, namespace="research", groups=(), images=()),
]


def test_records_stored_by_version_2_read_the_same_after_the_migration(
    audit_target: str,
) -> None:
    old = open_unmigrated(audit_target)
    old.run_migrations(MIGRATIONS[:2])
    columns = (*COLUMNS, "fingerprint")
    for number, record in enumerate(VERSION_2_RECORDS):
        old.execute(
            f"INSERT INTO audit_records ({', '.join(columns)})"
            f" VALUES ({', '.join('?' * len(columns))})",
            [
                to_micros(record.time),
                record.uid,
                record.operation,
                record.kind,
                record.namespace,
                record.name,
                record.username,
                json.dumps(list(record.groups)),
                int(record.dry_run),
                record.policy,
                record.rule,
                record.action,
                record.message,
                json.dumps(list(record.images)),
                record.owner,
                f"fingerprint-{number}",
            ],
        )
    old.close()
    database = open_audit_database(audit_target)
    records = database.query(AuditQuery())
    requests = database.execute("SELECT uid FROM audit_requests ORDER BY uid")
    database.close()
    assert sorted(records, key=lambda r: (r.uid, r.policy)) == sorted(
        VERSION_2_RECORDS, key=lambda r: (r.uid, r.policy)
    )
    assert requests == [("uid-000007",), ("uid-000008",)]


def test_records_stored_by_version_4_are_found_by_namespace_after_the_migration(
    audit_target: str,
) -> None:
    old = open_unmigrated(audit_target)
    old.run_migrations(MIGRATIONS[:4])
    stored = [make_record(1), make_record(2, namespace="research"), make_record(3)]
    assert old.insert(stored) == 3
    old.close()
    database = open_audit_database(audit_target)
    found = database.query(AuditQuery(namespace="research"))
    counts = database.count_by(["namespace"], AuditQuery(since=NOW - dt.timedelta(hours=1)))
    database.close()
    assert found == [stored[1]]
    assert [(c.key, c.count) for c in counts] == [(("ml-serving",), 2), (("research",), 1)]


def test_a_request_is_stored_once_with_each_of_its_results(audit_target: str) -> None:
    database = open_audit_database(audit_target)
    first = [make_record(1), make_record(1, rule="images.allowed-repository"), make_record(2)]
    assert database.insert(first) == 3
    # The same request again (a retried batch): nothing new, whatever its records say.
    assert database.insert([make_record(1, rule="images.other"), make_record(3)]) == 1
    records = database.query(AuditQuery())
    requests = database.execute("SELECT uid FROM audit_requests ORDER BY uid")
    # The same uid at another time is another request (the API server never sends that).
    assert database.insert([make_record(1, time=NOW + dt.timedelta(seconds=1))]) == 1
    database.close()
    assert [(r.uid, r.rule) for r in records] == [  # newest first, then last stored first
        ("uid-000001", "images.allowed-repository"),
        ("uid-000001", "images.no-latest"),
        ("uid-000002", "images.no-latest"),
        ("uid-000003", "images.no-latest"),
    ]
    assert requests == [("uid-000001",), ("uid-000002",), ("uid-000003",)]


def migrate_in_child(target: str) -> None:
    open_audit_database(target).close()


def test_processes_starting_together_migrate_once(audit_target: str) -> None:
    context = multiprocessing.get_context("fork")
    children = [context.Process(target=migrate_in_child, args=(audit_target,)) for _ in range(6)]
    for child in children:
        child.start()
    for child in children:
        child.join(60)
        assert child.exitcode == 0
    database = open_audit_database(audit_target)
    rows = database.execute("SELECT version FROM schema_version ORDER BY version")
    database.close()
    assert [r[0] for r in rows] == [m.version for m in MIGRATIONS]


def test_a_long_batch_of_json_lines_comes_out_whole_in_order_and_in_pipe_sized_writes(
    tmp_path: Path,
) -> None:
    stream = WriteCounter()
    logger = logging.getLogger("mlgate.audit.trail")
    saved = list(logger.handlers)
    logger.handlers.clear()
    try:
        configure_audit_log(stream)
        store = open_audit_store(tmp_path / "audit.db", json_log=False)
        # One submission: one batch, written in several chunks.
        store.submit([make_record(n, message="ü" * (n * 10)) for n in range(3 * SLICE + 1)])
        store.close()
    finally:
        logger.handlers[:] = saved
    lines = stream.getvalue().splitlines()
    assert [json.loads(line)["uid"] for line in lines] == [
        f"uid-{n:06d}" for n in range(3 * SLICE + 1)
    ]
    # Whole lines, at most PIPE_BUF bytes a write: another process's write to the same pipe
    # never lands inside a line.
    assert len(stream.writes) > 1
    assert all(write.endswith("\n") for write in stream.writes)
    assert all(len(write.encode()) <= PIPE_BUF for write in stream.writes)


def test_reports_refuse_to_create_a_missing_sqlite_file(tmp_path: Path) -> None:
    with pytest.raises(AuditDatabaseError, match="no audit database"):
        open_audit_database(tmp_path / "missing.db", create=False)
    assert not (tmp_path / "missing.db").exists()


# --- queries --------------------------------------------------------------------------------

MIXED = [
    make_record(0),
    make_record(1, namespace="research", username="bob"),
    make_record(2, policy="quota", rule="quota.budget", action="warn"),
    make_record(3, kind="StatefulSet", operation="UPDATE"),
    make_record(60 * 30, rule="images.allowed-repository"),
]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        (AuditQuery(), ["uid-000000", "uid-000001", "uid-000002", "uid-000003", "uid-001800"]),
        (AuditQuery(namespace="research"), ["uid-000001"]),
        (AuditQuery(username="bob"), ["uid-000001"]),
        (AuditQuery(policy="quota"), ["uid-000002"]),
        (AuditQuery(action="warn"), ["uid-000002"]),
        (AuditQuery(kind="StatefulSet"), ["uid-000003"]),
        (AuditQuery(rule="images.allowed-repository"), ["uid-001800"]),
        (
            AuditQuery(since=NOW - dt.timedelta(hours=1)),
            ["uid-000000", "uid-000001", "uid-000002", "uid-000003"],
        ),
        (AuditQuery(until=NOW - dt.timedelta(minutes=2)), ["uid-000003", "uid-001800"]),
        (
            AuditQuery(policy="images", namespace="ml-serving", limit=2),
            ["uid-000000", "uid-000003"],
        ),
        (AuditQuery(namespace="nowhere"), []),
    ],
    ids=[
        "all",
        "namespace",
        "user",
        "policy",
        "action",
        "kind",
        "rule",
        "since",
        "until",
        "combined-with-limit",
        "no-match",
    ],
)
def test_queries_filter_and_sort_newest_first(
    audit_target: str, query: AuditQuery, expected: list[str]
) -> None:
    database = open_audit_database(audit_target)
    database.insert(MIXED)
    assert [r.uid for r in database.query(query)] == expected
    assert database.count(dataclasses.replace(query, limit=None)) >= len(expected)
    database.close()


def test_counts_per_group_and_day(audit_target: str) -> None:
    database = open_audit_database(audit_target)
    database.insert([*MIXED, make_record(60 * 24 * 2, namespace="research")])
    by_policy_rule = database.count_by(["policy", "rule"], AuditQuery())
    by_day = database.count_by(["day"], AuditQuery())
    database.close()
    assert [(g.key, g.count) for g in by_policy_rule] == [
        (("images", "images.no-latest"), 4),
        (("images", "images.allowed-repository"), 1),
        (("quota", "quota.budget"), 1),
    ]
    # uid-001800 is 30 hours old: the day before.
    assert [(g.key, g.count) for g in by_day] == [
        (("2026-11-28",), 4),
        (("2026-11-26",), 1),
        (("2026-11-27",), 1),
    ]


# --- retention ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("retention", "kept"),
    [
        (NO_RETENTION, 100),
        (Retention(max_age=dt.timedelta(minutes=30), max_rows=None), 30),
        (Retention(max_age=None, max_rows=10), 10),
        (Retention(max_age=dt.timedelta(minutes=30), max_rows=10), 10),
        (Retention(max_age=dt.timedelta(minutes=5), max_rows=10), 5),
        (Retention(max_age=None, max_rows=0), 0),
    ],
    ids=[
        "unlimited",
        "by-age",
        "by-rows",
        "rows-tighter-than-age",
        "age-tighter-than-rows",
        "nothing-kept",
    ],
)
def test_retention_keeps_the_newest_records(
    audit_target: str, retention: Retention, kept: int
) -> None:
    database = open_audit_database(audit_target)
    database.insert([make_record(n) for n in range(100)])
    database.prune(retention, now=NOW + dt.timedelta(seconds=1))
    remaining = database.query(AuditQuery())
    requests = database.execute("SELECT COUNT(*) FROM audit_requests")[0][0]
    database.close()
    assert [r.uid for r in remaining] == [f"uid-{n:06d}" for n in range(kept)]
    assert requests == kept  # a request whose records all went goes with them


def test_retention_by_bytes_brings_the_live_size_under_the_limit(audit_target: str) -> None:
    database = open_audit_database(audit_target)
    database.insert([make_record(n, message="x" * 2000) for n in range(400)])
    before = database.measure_bytes()
    limit = before // 4
    database.prune(Retention(max_age=None, max_rows=None, max_bytes=limit), now=NOW)
    after = database.measure_bytes()
    remaining = database.query(AuditQuery())
    database.close()
    assert after <= limit
    assert 0 < len(remaining) < 400
    assert remaining[0].uid == "uid-000000"  # the newest are the ones kept


def test_the_writer_applies_retention(tmp_path: Path) -> None:
    target = str(tmp_path / "audit.db")
    store = open_audit_store(target, json_log=False, retention=Retention(max_age=None, max_rows=5))
    store.submit([make_record(n) for n in range(20)])
    store.close()
    assert [r.uid for r in read_all(target)] == [f"uid-{n:06d}" for n in range(5)]


@pytest.mark.parametrize(
    ("query", "groupings", "source"),
    [
        (AuditQuery(), (), "audit_results"),
        (
            AuditQuery(since=NOW, policy="quota", rule="quota.budget", action="deny"),
            (),
            "audit_results",
        ),
        (AuditQuery(), ("policy", "rule", "day"), "audit_results"),
        (AuditQuery(namespace="research"), (), "audit_records"),
        (AuditQuery(username="bob"), ("policy",), "audit_records"),
        (AuditQuery(), ("kind",), "audit_records"),
    ],
    ids=["window", "result-filters", "result-groupings", "namespace", "user", "by-kind"],
)
def test_counts_read_the_records_table_alone_unless_they_need_the_request(
    query: AuditQuery, groupings: tuple[str, ...], source: str
) -> None:
    assert records_source(query, groupings) == source


def test_an_insert_pauses_before_each_row_inside_its_one_transaction(audit_target: str) -> None:
    database = open_audit_database(audit_target)
    reader = open_audit_database(audit_target)
    records = [make_record(n) for n in range(4)]
    records += [make_record(n, rule="images.allowed-repository") for n in range(2)]
    seen_while_pausing: list[int] = []

    def pause() -> None:  # the audit writer process gives the CPU up here
        seen_while_pausing.append(reader.count(AuditQuery()))

    requests = encode_requests(records)
    assert database.insert_requests(requests, pause=pause) == 6
    stored = reader.count(AuditQuery())
    database.close()
    reader.close()
    assert len(seen_while_pausing) == 4 + 6  # a row per request, a row per result
    assert set(seen_while_pausing) == {0}  # nothing visible before the transaction ends
    assert stored == 6
