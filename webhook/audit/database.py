"""The audit database: one schema, versioned migrations, SQLite or PostgreSQL underneath.

Both engines get the same tables and the same queries (written with ``?`` placeholders, turned
into ``%s`` for psycopg), so a report reads the same from either. Times are stored as integer
microseconds since the Unix epoch (UTC): exact, sortable, and identical in both engines.

A ``fingerprint`` (request uid, policy, rule, action, message) is unique, and inserts skip a
fingerprint already stored: a batch retried after an error, or a request the API server sent
twice, is recorded once.

One ``AuditDatabase`` holds one connection and is used by one thread at a time.
"""

from __future__ import annotations

import abc
import binascii
import contextlib
import datetime as dt
import hashlib
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

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
    statements: tuple[str, ...]  # ``{id}`` stands for the engine's auto-increment primary key


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
)

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
    "fingerprint",
)
# base64 -> base64url
URLSAFE = bytes.maketrans(b"+/", b"-_")
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


def fingerprint_record(record: AuditRecord) -> str:
    """128 bits of SHA-256 over what makes a record unique, as 22 characters of base64url.

    NOTE: short on purpose: fingerprints are random, so each new record lands on a page of
    their unique index of its own, and with the full 64 hex digits that index was the largest
    part of an insert (a batch of 70 records: ~29 -> ~24 us per record, index and all). Rows
    written before keep their 64-digit fingerprints; only a request retried across an upgrade
    could be recorded twice. ``binascii`` and ``translate`` give what
    ``base64.urlsafe_b64encode`` gives, without its two Python calls.
    """
    key = "\x1f".join((record.uid, record.policy, record.rule, record.action, record.message))
    digest = hashlib.sha256(key.encode()).digest()[:16]
    return binascii.b2a_base64(digest, newline=False)[:22].translate(URLSAFE).decode()


def encode_record(record: AuditRecord) -> tuple[Any, ...]:
    return (
        to_micros(record.time),
        record.uid,
        record.operation,
        record.kind,
        record.namespace,
        record.name,
        record.username,
        orjson.dumps(list(record.groups)).decode(),
        int(record.dry_run),
        record.policy,
        record.rule,
        record.action,
        record.message,
        orjson.dumps(list(record.images)).decode(),
        record.owner,
        fingerprint_record(record),
    )


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


class AuditDatabase(abc.ABC):
    """The operations the store and the reports need, over one connection."""

    dialect: Dialect
    id_column: str
    day_expression: str  # the UTC day "YYYY-MM-DD" of ``time_us``

    # --- engine-specific ------------------------------------------------------------------

    @abc.abstractmethod
    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run one statement in its own transaction; the rows it returned."""

    @abc.abstractmethod
    def insert_rows(self, rows: list[tuple[Any, ...]]) -> int:
        """Insert rows in one transaction, skipping known fingerprints; how many were new."""

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
        rows = [encode_record(record) for record in records]
        return self.insert_rows(rows) if rows else 0

    def query(self, query: AuditQuery) -> list[AuditRecord]:
        """Records in the window, newest first."""
        where, params = build_filter(query)
        sql = f"SELECT {', '.join(COLUMNS[:-1])} FROM audit_records{where}"
        sql += " ORDER BY time_us DESC, id DESC"
        if query.limit is not None:
            sql += " LIMIT ?"
            params.append(query.limit)
        return [decode_record(row) for row in self.execute(sql, params)]

    def count(self, query: AuditQuery) -> int:
        where, params = build_filter(query)
        return int(self.execute(f"SELECT COUNT(*) FROM audit_records{where}", params)[0][0])

    def count_by(self, groupings: Sequence[str], query: AuditQuery) -> list[GroupCount]:
        """Counts per group (``GROUPINGS`` or ``day``), largest first, then by key."""
        expressions = [
            self.day_expression if name == "day" else GROUPINGS[name] for name in groupings
        ]
        keys = ", ".join(expressions)
        where, params = build_filter(query)
        sql = (
            f"SELECT {keys}, COUNT(*) FROM audit_records{where} GROUP BY {keys}"
            f" ORDER BY COUNT(*) DESC, {keys}"
        )
        rows = self.execute(sql, params)
        return [GroupCount(tuple(str(v) for v in row[:-1]), int(row[-1])) for row in rows]

    def prune(self, retention: Retention, *, now: dt.datetime) -> int:
        """Delete records past the retention limits, oldest first; how many were deleted."""
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
        return deleted

    def _delete_excess(self, excess: int) -> int:
        """Delete the ``excess`` oldest records, in chunks."""
        deleted = 0
        while excess > 0:
            chunk = min(excess, PRUNE_CHUNK)
            self.execute(
                "DELETE FROM audit_records WHERE id IN"
                " (SELECT id FROM audit_records ORDER BY time_us, id LIMIT ?)",
                [chunk],
            )
            deleted += chunk
            excess -= chunk
        return deleted

    def _delete_oldest(self, *, where: str, params: list[Any]) -> int:
        deleted = 0
        while True:
            rows = self.execute(
                "DELETE FROM audit_records WHERE id IN"
                f" (SELECT id FROM audit_records WHERE {where} ORDER BY time_us, id LIMIT ?)"
                " RETURNING id",
                [*params, PRUNE_CHUNK],
            )
            deleted += len(rows)
            if len(rows) < PRUNE_CHUNK:
                return deleted


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


class SqliteDatabase(AuditDatabase):
    """SQLite in WAL mode: readers never block the writers of other worker processes."""

    dialect: Dialect = "sqlite"
    id_column = "INTEGER PRIMARY KEY AUTOINCREMENT"
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
            self.connection.execute("PRAGMA journal_mode=WAL")
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
    def insert_rows(self, rows: list[tuple[Any, ...]]) -> int:
        sql = (
            f"INSERT INTO audit_records ({', '.join(COLUMNS)})"
            f" VALUES ({', '.join('?' * len(COLUMNS))}) ON CONFLICT (fingerprint) DO NOTHING"
        )
        connection = self.connection
        connection.execute("BEGIN IMMEDIATE")
        try:
            before = connection.total_changes
            connection.executemany(sql, rows)
            inserted = connection.total_changes - before
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        connection.execute("COMMIT")
        return inserted

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
                    connection.execute(statement.format(id=self.id_column))
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
    def insert_rows(self, rows: list[tuple[Any, ...]]) -> int:
        sql = (
            f"INSERT INTO audit_records ({', '.join(COLUMNS)})"
            f" VALUES ({', '.join(['%s'] * len(COLUMNS))}) ON CONFLICT (fingerprint) DO NOTHING"
        )
        connection = self._reconnect()
        with connection.transaction(), connection.cursor() as cursor:
            cursor.executemany(sql, rows)
            return int(cursor.rowcount)

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
                    cursor.execute(statement.format(id=self.id_column))
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
        rows = self.execute(
            "SELECT COALESCE(AVG(pg_column_size(r.*)), 0) FROM"
            " (SELECT * FROM audit_records ORDER BY id DESC LIMIT 1000) r"
        )
        return int(float(rows[0][0]) * self.count(AuditQuery()))

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
