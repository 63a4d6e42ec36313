"""Engine and sessions: SQLite by default (WAL, immediate write transactions, checkpoints on a
thread of their own), PostgreSQL in production. One code path; only connection set-up differs."""

from __future__ import annotations

import json
import sqlite3
import threading
import weakref
from collections import deque
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence, TypeVar

from sqlalchemy import String, Table, any_, bindparam, create_engine, event, func, select
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.sql import ColumnElement


class Base(DeclarativeBase):
    pass


def as_utc(moment: datetime) -> datetime:
    """Times are stored in UTC; SQLite hands them back without an offset, so put it back."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def make_engine(url: str) -> Engine:
    """(hide_parameters: a statement's values, personal data among them, never reach an error message or a log.)"""
    if url.startswith("sqlite"):
        # Last in, first out: SQLite drops a connection's page cache whenever another connection has
        # written, so reusing the connection that just wrote keeps its cache (bulk ingest after a burst
        # of single purchases read ~20,000 pages fewer per 40,000 events).
        # As many connections as the server has worker threads (anyio's 40): a connection made for a
        # burst and closed after it (the default pool keeps 5) starts with a cold page cache and
        # re-runs the pragmas below; member-token requests, which read the database to authenticate,
        # lost about half their throughput to that churn.
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30}, pool_use_lifo=True,
                               pool_size=40, max_overflow=20, hide_parameters=True)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record):
            # Let SQLAlchemy issue BEGIN itself (below), so write transactions can be IMMEDIATE.
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            # Deleted content is overwritten, not left in free pages for a forensic read (erasure).
            cursor.execute("PRAGMA secure_delete=ON")
            # 16 MiB of page cache per connection (SQLite's default is 2): the indexes a purchase
            # writes (idempotency keys, refs, member/time) then stay in memory; ~15% more ingest.
            cursor.execute("PRAGMA cache_size=-16384")
            # Checkpoints run on a thread of their own (below); a commit checkpoints only as a safety
            # net, when the WAL has grown past ~40 MB.
            cursor.execute(f"PRAGMA wal_autocheckpoint={WAL_SAFETY_NET_PAGES}")
            cursor.close()

        writer = FairLock()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn):
            if conn.get_execution_options().get("read_only"):
                conn.exec_driver_sql("BEGIN")  # WAL: a reader works on a snapshot beside the writer
                return
            # IMMEDIATE takes the write lock at BEGIN: a read-then-write (check balance, then debit)
            # can never interleave with another writer, the SQLite analogue of SELECT ... FOR UPDATE.
            # This process's writers queue on a lock of ours first: SQLite's own busy handler polls
            # with sleeps of up to 100 ms, and under contention some waiters lost for seconds. The
            # queue is first come, first served: with threading.Lock the chain sender's write waited
            # behind a flood of requests' writes for as long as the flood lasted.
            conn.info["holds_writer"] = writer.acquire(timeout=30, first=getattr(_writing_first, "on", False))
            try:
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            except BaseException:
                _release(conn.info)
                raise

        def _release(info) -> None:
            if info.pop("holds_writer", False):
                writer.release()

        event.listen(engine, "commit", lambda conn: _release(conn.info))
        event.listen(engine, "rollback", lambda conn: _release(conn.info))
        # The connection going back to the pool ends whatever it had begun, however it ended.
        event.listen(engine, "checkin", lambda _dbapi, record: _release(record.info))
        if engine.url.database not in (None, "", ":memory:"):
            _checkpoint_in_background(engine, engine.url.database)
        return engine
    return create_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=True, hide_parameters=True)


_writing_first = threading.local()


@contextmanager
def writing_first() -> Iterator[None]:
    """This thread's write transactions (SQLite) take the writer lock ahead of the queue: the chain
    sender's, each of which settles a whole batch of waiting requests."""
    _writing_first.on = True
    try:
        yield
    finally:
        _writing_first.on = False


class FairLock:
    """A lock taken in the order it was asked for: release hands it straight to the oldest waiter."""

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._held = False
        self._waiters: deque[threading.Lock] = deque()

    def acquire(self, timeout: float, first: bool = False) -> bool:
        """`first`: go ahead of every waiter (the chain sender, whose writes finish many requests)."""
        with self._mutex:
            if not self._held:
                self._held = True
                return True
            gate = threading.Lock()
            gate.acquire()
            if first:
                self._waiters.appendleft(gate)
            else:
                self._waiters.append(gate)
        if gate.acquire(timeout=timeout):
            return True  # handed over by release
        with self._mutex:
            try:
                self._waiters.remove(gate)
                return False
            except ValueError:  # handed over just as the wait ran out: it is ours
                return True

    def release(self) -> None:
        with self._mutex:
            if self._waiters:
                self._waiters.popleft().release()  # still held: now by the oldest waiter
            else:
                self._held = False


WAL_SAFETY_NET_PAGES = 10_000
CHECKPOINT_EVERY_S = 0.25


def _checkpoint_in_background(engine: Engine, database: str) -> None:
    """Copy the WAL's committed pages back into the database file on a thread of its own, for as long
    as the engine lives. By default the commit that fills the WAL does it, inside the write lock (and
    waits for the disk): bulk ingest lost about a tenth of its throughput to that. A passive
    checkpoint waits for no one, and SQLite runs without the GIL, so this uses the other core."""
    stop = threading.Event()
    weakref.finalize(engine, stop.set)
    uri = Path(database).absolute().as_uri() + "?mode=rw"  # never creates the file: the engine does

    def run() -> None:
        conn = None
        try:
            while not stop.wait(CHECKPOINT_EVERY_S):
                try:
                    if conn is None:
                        conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
                        conn.execute("PRAGMA synchronous=NORMAL")
                    # A connection learns that the file is in WAL mode (set by the engine's first
                    # connection) only by reading it; until then a checkpoint does nothing.
                    conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
                except sqlite3.Error:  # not created yet, or busy with another checkpoint: next time
                    pass
        finally:
            if conn is not None:
                conn.close()

    threading.Thread(target=run, name=f"sqlite-checkpoint {database}", daemon=True).start()


def scrub_wal(engine: Engine) -> bool:
    """After an erasure or a key rotation: copy SQLite's WAL into the database and truncate it to zero
    bytes, so the WAL keeps no image of a page from before (the database file's deleted content is
    already overwritten: secure_delete). False if a reader held it back (the background checkpoint
    and the next scrub finish it). PostgreSQL: nothing to do here (see the README on VACUUM)."""
    if engine.dialect.name != "sqlite":
        return True
    raw = engine.raw_connection()  # autocommit (isolation_level None): a checkpoint runs outside a transaction
    try:
        busy, _, _ = raw.driver_connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    finally:
        raw.close()
    return busy == 0


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One unit of work: commit on success, roll back on any error."""
    with factory() as session, session.begin():
        yield session


T = TypeVar("T")


def committed_replaying_conflicts(factory: sessionmaker[Session], write: Callable[[Session], T]) -> T:
    """`write(session)` in a transaction of its own. A concurrent request that stored one of the same
    idempotency keys first makes an insert fail: `write` runs once more and now sees it as a replay."""
    for attempt in (1, 2):
        try:
            with transaction(factory) as session:
                return write(session)
        except IntegrityError:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


@contextmanager
def reading(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A read-only unit of work: on SQLite it neither takes nor waits for the write lock."""
    with factory() as session:
        session.connection(execution_options={"read_only": True})
        yield session


def one_of(session: Session, column: ColumnElement, values: Iterable) -> ColumnElement[bool]:
    """`column IN values` with the values bound as ONE parameter (a JSON array read by json_each on
    SQLite, an array on PostgreSQL). A batch looks up thousands of keys and members at once; an
    ordinary IN binds, and SQLAlchemy processes, every value on its own (about twice the cost)."""
    values = list(values)
    if session.get_bind().dialect.name == "postgresql":
        return column == any_(bindparam(None, values, type_=ARRAY(column.type)))
    return column.in_(select(func.json_each(bindparam(None, json.dumps(values), type_=String)).table_valued("value").c.value))


def insert_many(conn: Connection, table: Table, columns: Sequence[str], rows: list[tuple]) -> None:
    """INSERT rows (tuples in `columns` order) through the driver's executemany. On the ingest path
    (five rows per purchase) and for training reads (a row per member) SQLAlchemy's per-row parameter
    handling would cost more than the database's insert itself."""
    if not rows:
        return
    marker = _marker(conn)
    conn.exec_driver_sql(f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES ({', '.join([marker] * len(columns))})",
                         _parameters(conn, table, columns, rows))


def update_many(conn: Connection, table: Table, columns: Sequence[str], rows: list[tuple], key: str = "id") -> None:
    """UPDATE one row per tuple: `columns` set to its values, in the row whose `key` is its last."""
    if not rows:
        return
    marker = _marker(conn)
    conn.exec_driver_sql(f"UPDATE {table.name} SET {', '.join(f'{c} = {marker}' for c in columns)} WHERE {key} = {marker}",
                         _parameters(conn, table, [*columns, key], rows))


def insert_missing(session: Session, table: Table, rows: list[dict]) -> None:
    """INSERT the rows whose primary key is not there yet (ON CONFLICT DO NOTHING on both databases):
    concurrent first writers of one key then both go on to lock the same row instead of colliding."""
    from sqlalchemy.dialects import postgresql, sqlite

    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    session.execute(dialect.insert(table).values(rows).on_conflict_do_nothing())


def allocate_ids(conn: Connection, table: Table, count: int) -> list[int]:
    """`count` fresh primary keys for rows the caller inserts itself (with insert_many: no RETURNING
    round trip, and the ids are known before the rows that point at them are built). PostgreSQL
    draws them from the table's sequence; on SQLite the caller holds the write lock (every write
    transaction is IMMEDIATE), so the ids after the largest one are free."""
    if count == 0:
        return []
    if conn.dialect.name == "postgresql":
        return list(conn.exec_driver_sql(
            f"SELECT nextval(pg_get_serial_sequence('{table.name}', 'id')) FROM generate_series(1, {int(count)})").scalars())
    first = conn.exec_driver_sql(f"SELECT coalesce(max(id), 0) + 1 FROM {table.name}").scalar_one()
    return list(range(first, first + count))


def ids_taken(conn: Connection, table: Table) -> None:
    """After rows went in with ids of the caller's choosing (a bulk load): PostgreSQL's sequence
    moves past them, so ids drawn later (allocate_ids, the ORM) cannot collide. SQLite needs nothing."""
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(f"SELECT setval(pg_get_serial_sequence('{table.name}', 'id'), (SELECT max(id) FROM {table.name}))")


def _marker(conn: Connection) -> str:
    return "?" if conn.dialect.paramstyle == "qmark" else "%s"


def _parameters(conn: Connection, table: Table, columns: Sequence[str], rows: list[tuple]) -> list[tuple]:
    """The rows with the dialect's own conversions (SQLite keeps datetimes as text in SQLAlchemy's
    format) applied to the columns that have one."""
    converters = [(i, _memoised(process)) for i, c in enumerate(columns)
                  if (process := table.c[c].type.dialect_impl(conn.dialect).bind_processor(conn.dialect)) is not None]
    if not converters:
        return rows
    out = []
    for row in rows:
        v = list(row)
        for i, convert in converters:
            v[i] = convert(v[i])
        out.append(tuple(v))
    return out


def _memoised(process):
    """The conversion with each value object converted once: a batch's rows share their timestamps
    (received, created, expires). Keyed by identity (the rows keep every value alive meanwhile):
    equal datetimes at different offsets are different text, and hashing an aware one is slow."""
    seen: dict[int, object] = {}

    def convert(value):
        if value is None:
            return None
        if (done := seen.get(id(value))) is None:
            done = seen[id(value)] = process(value)
        return done

    return convert
