"""The audit database: one schema, versioned migrations, SQLite or PostgreSQL underneath.

Both engines get the same tables and the same queries (written with ``?`` placeholders, turned
into ``%s`` for psycopg), so a report reads the same from either. Times are stored as integer
microseconds since the Unix epoch (UTC): exact, sortable, and identical in both engines.

A request's fields are stored once, in ``audit_requests`` (one row per request: its time and
uid are unique together), and each rule that acted in ``audit_results`` (policy, rule, action,
message); the view ``audit_records`` joins them back into one row per record, which is what
reports read. Inserts skip a request already stored: a batch retried after an error is recorded
once.

One ``AuditDatabase`` holds one connection and is used by one thread at a time.
"""

from __future__ import annotations

import abc
import contextlib
import datetime as dt
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import orjson
import psycopg

from webhook.audit.record import AuditRecord

Dialect = Literal["sqlite", "postgresql"]
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
MICROSECOND = dt.timedelta(microseconds=1)
# Rows deleted per statement when pruning, so that no single transaction holds the lock long.
PRUNE_CHUNK = 5000
# Any fixed number, the same in every mlgate: serialises migrations of several replicas.
PG_MIGRATION_LOCK = 0x6D6C67617465  # "mlgate"


class AuditDatabaseError(Exception):
    """The audit database cannot be opened, migrated, read or written."""


class AuditSchemaError(AuditDatabaseError):
    """The database holds a schema this mlgate does not know (written by a newer version)."""


class AuditBusyError(AuditDatabaseError):
    """A transient failure (database locked, connection lost): worth retrying."""


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    # ``{id}`` stands for the engine's auto-increment primary key; ``{rowid}`` for one that may
    # reuse the ids of the newest rows once they are deleted (SQLite's rowid alias: pruning
    # deletes the oldest rows, so it never does; PostgreSQL: the same as ``{id}``).
    statements: tuple[str, ...]


# Ordered; a migration is never edited once released, only followed by a new one.
MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "audit records",
        (
            """CREATE TABLE audit_records (
                id {id},
                time_us BIGINT NOT NULL,
                uid TEXT NOT NULL,
                operation TEXT NOT NULL,
                kind TEXT NOT NULL,
                namespace TEXT NOT NULL,
                name TEXT NOT NULL,
                username TEXT NOT NULL,
                user_groups TEXT NOT NULL,
                dry_run SMALLINT NOT NULL,
                policy TEXT NOT NULL,
                rule TEXT NOT NULL,
                action TEXT NOT NULL,
                message TEXT NOT NULL,
                images TEXT NOT NULL,
                owner TEXT NOT NULL,
                fingerprint TEXT NOT NULL UNIQUE
            )""",
        ),
    ),
    Migration(
        2,
        "indexes for the report's window and filters",
        (
            "CREATE INDEX audit_records_time ON audit_records (time_us)",
            "CREATE INDEX audit_records_namespace_time ON audit_records (namespace, time_us)",
            "CREATE INDEX audit_records_policy_time ON audit_records (policy, rule, time_us)",
        ),
    ),
    # NOTE: one row per record with the request's fields and a random fingerprint made every
    # record an insert into five b-trees, a random page among them, and an AUTOINCREMENT
    # counter update: ~125 us of the writer's CPU per validating request (bench/). A request's
    # fields are now stored once and a record is an append of its rule's four fields. The
    # unique key is (time, uid), not the uid alone: random uids put every request on an index
    # page of its own (~130 -> ~77 us per request on 50,000 stored, more as the table grows);
    # a retried batch has the same time. The API server does not send a validating request
    # twice (only mutating webhooks are called again, and they record nothing).
    Migration(
        3,
        "a request's fields stored once, its rules' results apart",
        (
            """CREATE TABLE audit_requests (
                id {rowid},
                time_us BIGINT NOT NULL,
                uid TEXT NOT NULL,
                operation TEXT NOT NULL,
                kind TEXT NOT NULL,
                namespace TEXT NOT NULL,
                name TEXT NOT NULL,
                username TEXT NOT NULL,
                user_groups TEXT NOT NULL,
                dry_run SMALLINT NOT NULL,
                images TEXT NOT NULL,
                owner TEXT NOT NULL,
                UNIQUE (time_us, uid)
            )""",
            """CREATE TABLE audit_results (
                id {rowid},
                request_id BIGINT NOT NULL,
                time_us BIGINT NOT NULL,
                policy TEXT NOT NULL,
                rule TEXT NOT NULL,
                action TEXT NOT NULL,
                message TEXT NOT NULL
            )""",
            # A uid recorded with different request fields (it cannot be, from an API server)
            # keeps those of its first record.
            """INSERT INTO audit_requests
                (time_us, uid, operation, kind, namespace, name, username, user_groups, dry_run,
                 images, owner)
            SELECT time_us, uid, operation, kind, namespace, name, username, user_groups,
                dry_run, images, owner
            FROM audit_records
            WHERE id IN (SELECT MIN(id) FROM audit_records GROUP BY uid)
            ORDER BY id""",
            # A record has its request's time (pruning relies on it).
            """INSERT INTO audit_results (request_id, time_us, policy, rule, action, message)
            SELECT q.id, q.time_us, r.policy, r.rule, r.action, r.message
            FROM audit_records r JOIN audit_requests q ON q.uid = r.uid
            ORDER BY r.id""",
            "DROP TABLE audit_records",
            "CREATE INDEX audit_requests_namespace ON audit_requests (namespace)",
            "CREATE INDEX audit_results_request ON audit_results (request_id)",
            "CREATE INDEX audit_results_time ON audit_results (time_us)",
            "CREATE INDEX audit_results_policy_time ON audit_results (policy, rule, time_us)",
            """CREATE VIEW audit_records AS
            SELECT r.id AS id, r.time_us AS time_us, q.uid AS uid, q.operation AS operation,
                q.kind AS kind, q.namespace AS namespace, q.name AS name,
                q.username AS username, q.user_groups AS user_groups, q.dry_run AS dry_run,
                r.policy AS policy, r.rule AS rule, r.action AS action, r.message AS message,
                q.images AS images, q.owner AS owner
            FROM audit_results r JOIN audit_requests q ON q.id = r.request_id""",
        ),
    ),
    # NOTE: every index is a B-tree more to insert into for each result the writer stores:
    # without these two, the insert took 14.6 us per request instead of 22.0 in process, and
    # mlgate served 3.8% more validating requests/s at 16 connections (bench.compare, 7 of 8
    # rounds). No query reads a request's results by request_id (the view joins each result to
    # its request by the request's key), and a report reads its window by time first (24 h
    # unless told otherwise), so a policy or rule filter scans that window.
    Migration(
        4,
        "drop the indexes of results by request and by policy",
        ("DROP INDEX audit_results_request", "DROP INDEX audit_results_policy_time"),
    ),
    # NOTE: as migration 4: the writer inserts every request into this index too, ~9 us per
    # validating request of its ~69 (bench/, batches of ~135 requests), and no query starts
    # from it: a report reads its window by time first, so a namespace filter scans that
    # window, as a policy filter has since migration 4.
    Migration(
        5,
        "drop the index of requests by namespace",
        ("DROP INDEX audit_requests_namespace",),
    ),
)

# What a report reads of a record, from the ``audit_records`` view, in ``AuditRecord`` order.
COLUMNS = (
    "time_us",
    "uid",
    "operation",
    "kind",
    "namespace",
    "name",
    "username",
    "user_groups",
    "dry_run",
    "policy",
    "rule",
    "action",
    "message",
    "images",
    "owner",
)
REQUEST_COLUMNS = (
    "time_us",
    "uid",
    "operation",
    "kind",
    "namespace",
    "name",
    "username",
    "user_groups",
    "dry_run",
    "images",
    "owner",
)
RESULT_COLUMNS = ("request_id", "time_us", "policy", "rule", "action", "message")
# What reports may group by, mapped to SQL; nothing else reaches a query as an identifier.
GROUPINGS = {
    "policy": "policy",
    "rule": "rule",
    "namespace": "namespace",
    "action": "action",
    "kind": "kind",
    "username": "username",
}


@dataclass(frozen=True)
class Retention:
    """How long and how much the store keeps; None: no limit of that kind.

    ``max_bytes`` counts the live records (SQLite: pages in use; PostgreSQL: an estimate from
    the size of recent rows), not the file or table size, which a delete does not shrink.
    """

    max_age: dt.timedelta | None = dt.timedelta(days=90)
    max_rows: int | None = 1_000_000
    max_bytes: int | None = None
    check_every: dt.timedelta = dt.timedelta(minutes=5)


DEFAULT_RETENTION = Retention()


@dataclass(frozen=True)
class AuditQuery:
    """A report's window and filters; every given filter must hold (exact match)."""

    since: dt.datetime | None = None
    until: dt.datetime | None = None
    namespace: str | None = None
    policy: str | None = None
    rule: str | None = None
    username: str | None = None
    kind: str | None = None
    action: str | None = None
    limit: int | None = None


@dataclass(frozen=True)
class GroupCount:
    key: tuple[str, ...]
    count: int


def to_micros(time: dt.datetime) -> int:
    if time.tzinfo is None:
        raise ValueError("audit times must be timezone-aware")
    return (time - EPOCH) // MICROSECOND


def from_micros(micros: int) -> dt.datetime:
    return EPOCH + dt.timedelta(microseconds=micros)


Row = TypeVar("Row")
Pause = Callable[[], None]


def paced(rows: Iterable[Row], pause: Pause | None) -> Iterable[Row]:
    """``rows``, calling ``pause`` before each: a long insert then gives the CPU up as often as
    ``pause`` decides (the audit writer process, ``webhook.audit.writer.CpuYielder``)."""
    if pause is None:
        return rows
    return _paced(rows, pause)


def _paced(rows: Iterable[Row], pause: Pause) -> Iterator[Row]:
    for row in rows:
        pause()
        yield row


@dataclass
class EncodedRequest:
    """One request's row of ``audit_requests`` and its results' rows, but for ``request_id``."""

    row: tuple[Any, ...]  # in ``REQUEST_COLUMNS`` order; its results get its time
    results: dict[tuple[str, str, str, str], None]  # (policy, rule, action, message), in order


def encode_requests(records: Iterable[AuditRecord]) -> list[EncodedRequest]:
    """The records grouped by request (uid and time), in the order of each one's first record.

    A request's fields are taken from its first record (the records of one request share them)
    and a result that repeats is kept once.
    """
    requests: dict[tuple[str, dt.datetime], EncodedRequest] = {}
    for record in records:
        key = (record.uid, record.time)
        request = requests.get(key)
        if request is None:
            row = (
                to_micros(record.time),
                record.uid,
                record.operation,
                record.kind,
                record.namespace,
                record.name,
                record.username,
                orjson.dumps(list(record.groups)).decode(),
                int(record.dry_run),
                orjson.dumps(list(record.images)).decode(),
                record.owner,
            )
            request = requests[key] = EncodedRequest(row, {})
        request.results[(record.policy, record.rule, record.action, record.message)] = None
    return list(requests.values())


def decode_record(row: Sequence[Any]) -> AuditRecord:
    (
        time_us,
        uid,
        operation,
        kind,
        namespace,
        name,
        username,
        groups,
        dry_run,
        policy,
        rule,
        action,
        message,
        images,
        owner,
    ) = row
    return AuditRecord(
        time=from_micros(int(time_us)),
        uid=uid,
        operation=operation,
        kind=kind,
        namespace=namespace,
        name=name,
        username=username,
        groups=tuple(orjson.loads(groups)),
        dry_run=bool(dry_run),
        policy=policy,
        rule=rule,
        action=action,
        message=message,
        images=tuple(orjson.loads(images)),
        owner=owner,
    )


def build_filter(query: AuditQuery) -> tuple[str, list[Any]]:
    """The WHERE clause (or "") and its parameters for a query's window and filters."""
    clauses: list[str] = []
    params: list[Any] = []
    if query.since is not None:
        clauses.append("time_us >= ?")
        params.append(to_micros(query.since))
    if query.until is not None:
        clauses.append("time_us < ?")
        params.append(to_micros(query.until))
    for column, value in (
        ("namespace", query.namespace),
        ("policy", query.policy),
        ("rule", query.rule),
        ("username", query.username),
        ("kind", query.kind),
        ("action", query.action),
    ):
        if value is not None:
            clauses.append(f"{column} = ?")
            params.append(value)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), params


# Columns a record's row in ``audit_results`` holds itself (the day is worked out of time_us).
RESULT_FILTERS = frozenset({"policy", "rule", "action", "day"})


def records_source(query: AuditQuery, groupings: Sequence[str] = ()) -> str:
    """``audit_results`` when the query's filters and groupings need nothing of the request,
    else the ``audit_records`` view.

    NOTE: the view's join costs a lookup of the request for every record counted: a summary of
    200,000 records took ~1 s through it, most of it for counts by policy and rule that need
    no request field (bench/).
    """
    filters = {
        name
        for name in ("namespace", "policy", "rule", "username", "kind", "action")
        if getattr(query, name) is not None
    }
    return "audit_results" if filters | set(groupings) <= RESULT_FILTERS else "audit_records"


class AuditDatabase(abc.ABC):
    """The operations the store and the reports need, over one connection."""

    dialect: Dialect
    id_column: str
    rowid_column: str
    day_expression: str  # the UTC day "YYYY-MM-DD" of ``time_us``

    # --- engine-specific ------------------------------------------------------------------

    @abc.abstractmethod
    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run one statement in its own transaction; the rows it returned."""

    @abc.abstractmethod
    def insert_requests(self, requests: list[EncodedRequest], *, pause: Pause | None = None) -> int:
        """Insert requests and their results in one transaction, skipping a request already
        stored (the same time and uid); how many results were new. ``pause`` is called before
        each row (see ``paced``)."""

    @abc.abstractmethod
    def run_migrations(self, migrations: Sequence[Migration]) -> None:
        """Apply the migrations newer than the stored version, in one locked transaction."""

    @abc.abstractmethod
    def read_version(self) -> int: ...

    @abc.abstractmethod
    def measure_bytes(self) -> int:
        """Bytes the live records take (see ``Retention.max_bytes``)."""

    @abc.abstractmethod
    def close(self) -> None: ...

    # --- shared -----------------------------------------------------------------------------

    def migrate(self) -> int:
        """Bring the schema to the newest version; safe when several processes race."""
        latest = MIGRATIONS[-1].version
        self.run_migrations(MIGRATIONS)
        version = self.read_version()
        if version > latest:
            raise AuditSchemaError(
                f"the audit database has schema version {version}; this mlgate knows up to {latest}"
            )
        return version

    def insert(self, records: Iterable[AuditRecord]) -> int:
        """Store records; how many were new (the records of a request already stored are not)."""
        requests = encode_requests(records)
        return self.insert_requests(requests) if requests else 0

    def query(self, query: AuditQuery) -> list[AuditRecord]:
        """Records in the window, newest first."""
        where, params = build_filter(query)
        sql = f"SELECT {', '.join(COLUMNS)} FROM audit_records{where}"
        sql += " ORDER BY time_us DESC, id DESC"
        if query.limit is not None:
            sql += " LIMIT ?"
            params.append(query.limit)
        return [decode_record(row) for row in self.execute(sql, params)]

    def count(self, query: AuditQuery) -> int:
        where, params = build_filter(query)
        source = records_source(query)
        return int(self.execute(f"SELECT COUNT(*) FROM {source}{where}", params)[0][0])

    def count_by(self, groupings: Sequence[str], query: AuditQuery) -> list[GroupCount]:
        """Counts per group (``GROUPINGS`` or ``day``), largest first, then by key."""
        expressions = [
            self.day_expression if name == "day" else GROUPINGS[name] for name in groupings
        ]
        keys = ", ".join(expressions)
        where, params = build_filter(query)
        sql = (
            f"SELECT {keys}, COUNT(*) FROM {records_source(query, groupings)}{where}"
            f" GROUP BY {keys}"
            f" ORDER BY COUNT(*) DESC, {keys}"
        )
        rows = self.execute(sql, params)
        return [GroupCount(tuple(str(v) for v in row[:-1]), int(row[-1])) for row in rows]

    def prune(self, retention: Retention, *, now: dt.datetime) -> int:
        """Delete records past the retention limits, oldest first; how many were deleted.

        Records (``audit_results`` rows) go first; then the requests that have none left.
        """
        deleted = 0
        if retention.max_age is not None:
            cutoff = to_micros(now - retention.max_age)
            deleted += self._delete_oldest(where="time_us < ?", params=[cutoff])
        if retention.max_rows is not None:
            deleted += self._delete_excess(self.count(AuditQuery()) - retention.max_rows)
        if retention.max_bytes is not None:
            # Part of the size is fixed (schema, index pages), so a proportional cut can fall
            # short: measure again, a few rounds at most.
            for _ in range(4):
                used = self.measure_bytes()
                rows = self.count(AuditQuery())
                if used <= retention.max_bytes or not rows:
                    break
                keep = int(rows * retention.max_bytes / used * 0.95)
                deleted += self._delete_excess(rows - keep)
                self._delete_bare_requests()
        if deleted:
            self._delete_bare_requests()
        return deleted

    def _delete_excess(self, excess: int) -> int:
        """Delete the ``excess`` oldest records, in chunks."""
        deleted = 0
        while excess > 0:
            chunk = min(excess, PRUNE_CHUNK)
            self.execute(
                "DELETE FROM audit_results WHERE id IN"
                " (SELECT id FROM audit_results ORDER BY time_us, id LIMIT ?)",
                [chunk],
            )
            deleted += chunk
            excess -= chunk
        return deleted

    def _delete_oldest(self, *, where: str, params: list[Any]) -> int:
        deleted = 0
        while True:
            rows = self.execute(
                "DELETE FROM audit_results WHERE id IN"
                f" (SELECT id FROM audit_results WHERE {where} ORDER BY time_us, id LIMIT ?)"
                " RETURNING id",
                [*params, PRUNE_CHUNK],
            )
            deleted += len(rows)
            if len(rows) < PRUNE_CHUNK:
                return deleted

    def _delete_bare_requests(self) -> None:
        """Delete the requests older than the oldest record: none of their records is left.

        NOTE: a request's records carry its time, and records go oldest first, so this is a
        range of the requests' time index, with no search for unreferenced rows. A request
        whose records went while one of the same time stayed waits for the next prune.
        """
        self.execute(
            "DELETE FROM audit_requests WHERE time_us < (SELECT COALESCE(MIN(time_us),"
            " (SELECT COALESCE(MAX(time_us), 0) + 1 FROM audit_requests)) FROM audit_results)"
        )


@contextlib.contextmanager
def translate_sqlite_errors() -> Iterator[None]:
    try:
        yield
    except sqlite3.OperationalError as error:
        if getattr(error, "sqlite_errorname", "").startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
            raise AuditBusyError(f"audit database busy: {error}") from error
        raise AuditDatabaseError(f"audit database: {error}") from error
    except sqlite3.Error as error:
        raise AuditDatabaseError(f"audit database: {error}") from error


def _switch_to_wal(connection: sqlite3.Connection, *, timeout: float) -> None:
    """``PRAGMA journal_mode=WAL``, retried while another process holds the lock it needs.

    NOTE: SQLite answers "database is locked" at once to this pragma, without waiting through
    its busy timeout, while another connection switches the same new file: processes opening a
    new database together failed ~1 time in 30 (tests/audit/test_store.py, 6 processes).
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            connection.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() >= deadline:
                raise
            time.sleep(0.01)


class SqliteDatabase(AuditDatabase):
    """SQLite in WAL mode: readers never block the writers of other worker processes."""

    dialect: Dialect = "sqlite"
    id_column = "INTEGER PRIMARY KEY AUTOINCREMENT"
    rowid_column = "INTEGER PRIMARY KEY"
    day_expression = "strftime('%Y-%m-%d', time_us / 1000000, 'unixepoch')"

    def __init__(self, path: str | Path, *, busy_timeout: float = 30.0, create: bool = True):
        path = Path(path)
        if not create and not path.exists():
            raise AuditDatabaseError(f"no audit database at {path}")
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            # isolation_level=None: we open transactions ourselves, BEGIN IMMEDIATE for writes
            # so that two writers never deadlock upgrading a read lock.
            self.connection = sqlite3.connect(
                path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
            )
            _switch_to_wal(self.connection, timeout=busy_timeout)
            self.connection.execute("PRAGMA synchronous=NORMAL")
        except sqlite3.Error as error:
            raise AuditDatabaseError(f"cannot open the audit database {path}: {error}") from error
        self.path = path

    @translate_sqlite_errors()
    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        write = not sql.lstrip().upper().startswith("SELECT")
        connection = self.connection
        if write:
            connection.execute("BEGIN IMMEDIATE")
        try:
            rows = connection.execute(sql, params).fetchall()
        except BaseException:
            if write:
                connection.execute("ROLLBACK")
            raise
        if write:
            connection.execute("COMMIT")
        return rows

    @translate_sqlite_errors()
    def insert_requests(self, requests: list[EncodedRequest], *, pause: Pause | None = None) -> int:
        insert_request = (
            f"INSERT INTO audit_requests ({', '.join(REQUEST_COLUMNS)})"
            f" VALUES ({', '.join('?' * len(REQUEST_COLUMNS))})"
            " ON CONFLICT (time_us, uid) DO NOTHING"
        )
        insert_results = (
            f"INSERT INTO audit_results ({', '.join(RESULT_COLUMNS)})"
            f" VALUES ({', '.join('?' * len(RESULT_COLUMNS))})"
        )
        connection = self.connection
        connection.execute("BEGIN IMMEDIATE")
        try:
            # NOTE: no RETURNING round trip per request: SQLite gives a new row of a rowid
            # table one id above the largest (until 2**63 - 1), and this transaction holds the
            # write lock, so the rows above the largest id before are exactly the requests this
            # batch added (one already stored is skipped by ON CONFLICT). Three statements per
            # batch instead of one per request: ~20k fewer instructions per request in batches
            # of 8 (callgrind), and fewer GIL handovers between the writer and the requests.
            # When the changes counter says every request was added (a retried batch is the
            # only way one is not), their ids are the next ones in order and no query is
            # needed to find them.
            (last,) = connection.execute(
                "SELECT COALESCE(MAX(id), 0) FROM audit_requests"
            ).fetchone()
            changes = connection.total_changes
            connection.executemany(insert_request, paced((r.row for r in requests), pause))
            if connection.total_changes - changes == len(requests):  # none already recorded
                ids: Iterable[int | None] = range(last + 1, last + 1 + len(requests))
            else:
                added = {
                    (time_us, uid): request_id
                    for request_id, time_us, uid in connection.execute(
                        "SELECT id, time_us, uid FROM audit_requests WHERE id > ?", (last,)
                    )
                }
                ids = [added.get((r.row[0], r.row[1])) for r in requests]
            results = []
            for request, request_id in zip(requests, ids, strict=True):
                if request_id is None:  # this request is already recorded
                    continue
                results += [(request_id, request.row[0], *result) for result in request.results]
            connection.executemany(insert_results, paced(results, pause))
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        connection.execute("COMMIT")
        return len(results)

    @translate_sqlite_errors()
    def run_migrations(self, migrations: Sequence[Migration]) -> None:
        connection = self.connection
        connection.execute("BEGIN IMMEDIATE")
        try:
            connection.execute(
                "CREATE TABLE IF NOT EXISTS schema_version"
                " (version INTEGER NOT NULL, description TEXT NOT NULL, applied_us BIGINT NOT NULL)"
            )
            row = connection.execute("SELECT MAX(version) FROM schema_version").fetchone()
            version = int(row[0] or 0)
            for migration in migrations:
                if migration.version <= version:
                    continue
                for statement in migration.statements:
                    connection.execute(statement.format(id=self.id_column, rowid=self.rowid_column))
                connection.execute(
                    "INSERT INTO schema_version VALUES (?, ?, ?)",
                    (migration.version, migration.description, to_micros(dt.datetime.now(dt.UTC))),
                )
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        connection.execute("COMMIT")

    @translate_sqlite_errors()
    def read_version(self) -> int:
        row = self.connection.execute("SELECT MAX(version) FROM schema_version").fetchone()
        return int(row[0] or 0)

    @translate_sqlite_errors()
    def measure_bytes(self) -> int:
        connection = self.connection
        page_size = connection.execute("PRAGMA page_size").fetchone()[0]
        pages = connection.execute("PRAGMA page_count").fetchone()[0]
        free = connection.execute("PRAGMA freelist_count").fetchone()[0]
        return int((pages - free) * page_size)

    def close(self) -> None:
        self.connection.close()


@contextlib.contextmanager
def translate_psycopg_errors() -> Iterator[None]:
    try:
        yield
    except psycopg.OperationalError as error:
        raise AuditBusyError(f"audit database unavailable: {error}") from error
    except psycopg.Error as error:
        raise AuditDatabaseError(f"audit database: {error}") from error


class PostgresDatabase(AuditDatabase):
    """PostgreSQL through psycopg 3: the shared store of several replicas."""

    dialect: Dialect = "postgresql"
    id_column = "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY"
    rowid_column = id_column
    day_expression = "to_char(to_timestamp(time_us / 1000000.0) AT TIME ZONE 'UTC', 'YYYY-MM-DD')"

    def __init__(self, url: str, *, connect_timeout: int = 10):
        self.url = url
        self.connect_timeout = connect_timeout
        try:
            self.connection = self._connect()
        except psycopg.Error as error:
            raise AuditDatabaseError(f"cannot connect to the audit database: {error}") from error

    def _connect(self) -> Any:
        return psycopg.connect(self.url, autocommit=True, connect_timeout=self.connect_timeout)

    def _reconnect(self) -> Any:
        """The connection, opened anew if the last one broke (server restart, failover)."""
        if self.connection.closed or self.connection.broken:
            self.connection = self._connect()
        return self.connection

    @translate_psycopg_errors()
    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        connection = self._reconnect()
        with connection.transaction(), connection.cursor() as cursor:
            cursor.execute(sql.replace("?", "%s"), params)
            return list(cursor.fetchall()) if cursor.description else []

    @translate_psycopg_errors()
    def insert_requests(self, requests: list[EncodedRequest], *, pause: Pause | None = None) -> int:
        insert_request = (
            f"INSERT INTO audit_requests ({', '.join(REQUEST_COLUMNS)})"
            f" VALUES ({', '.join(['%s'] * len(REQUEST_COLUMNS))})"
            " ON CONFLICT (time_us, uid) DO NOTHING RETURNING id"
        )
        insert_results = (
            f"INSERT INTO audit_results ({', '.join(RESULT_COLUMNS)})"
            f" VALUES ({', '.join(['%s'] * len(RESULT_COLUMNS))})"
        )
        connection = self._reconnect()
        with connection.transaction(), connection.cursor() as cursor:
            results = []
            for request in requests:
                if pause is not None:
                    pause()
                cursor.execute(insert_request, request.row)
                stored = cursor.fetchone()
                if stored is None:  # this request is already recorded
                    continue
                request_id, time_us = stored[0], request.row[0]
                results += [(request_id, time_us, *result) for result in request.results]
            if results:
                cursor.executemany(insert_results, paced(results, pause))
            return len(results)

    @translate_psycopg_errors()
    def run_migrations(self, migrations: Sequence[Migration]) -> None:
        connection = self._reconnect()
        with connection.transaction(), connection.cursor() as cursor:
            # Held until the transaction ends: replicas starting together migrate one at a time.
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [PG_MIGRATION_LOCK])
            cursor.execute(
                "CREATE TABLE IF NOT EXISTS schema_version"
                " (version INTEGER NOT NULL, description TEXT NOT NULL, applied_us BIGINT NOT NULL)"
            )
            cursor.execute("SELECT MAX(version) FROM schema_version")
            row = cursor.fetchone()
            version = int(row[0] or 0) if row else 0
            for migration in migrations:
                if migration.version <= version:
                    continue
                for statement in migration.statements:
                    cursor.execute(statement.format(id=self.id_column, rowid=self.rowid_column))
                cursor.execute(
                    "INSERT INTO schema_version VALUES (%s, %s, %s)",
                    (migration.version, migration.description, to_micros(dt.datetime.now(dt.UTC))),
                )

    @translate_psycopg_errors()
    def read_version(self) -> int:
        return int(self.execute("SELECT MAX(version) FROM schema_version")[0][0] or 0)

    @translate_psycopg_errors()
    def measure_bytes(self) -> int:
        # NOTE: the table's size on disk does not shrink after a DELETE (space is reused), so
        # pruning by it would spiral; estimate from the size of recent rows instead.
        # The estimate: recent rows' mean size times the rows of each table.
        total = 0.0
        for table in ("audit_requests", "audit_results"):
            rows = self.execute(
                f"SELECT COALESCE(AVG(pg_column_size(r.*)), 0), (SELECT COUNT(*) FROM {table})"
                f" FROM (SELECT * FROM {table} ORDER BY id DESC LIMIT 1000) r"
            )
            total += float(rows[0][0]) * int(rows[0][1])
        return int(total)

    def close(self) -> None:
        self.connection.close()


def is_postgres_url(target: str) -> bool:
    return target.startswith(("postgresql://", "postgres://"))


def open_audit_database(target: str | Path, *, create: bool = True) -> AuditDatabase:
    """A database for ``--audit-db``: a ``postgresql://`` URL or a SQLite file path, migrated.

    ``create=False`` (the reports) refuses to create a SQLite file that is not there.
    """
    target = str(target)
    database: AuditDatabase
    if is_postgres_url(target):
        database = PostgresDatabase(target)
    else:
        database = SqliteDatabase(target.removeprefix("sqlite://"), create=create)
    try:
        database.migrate()
    except BaseException:
        database.close()
        raise
    return database
