"""Engine and sessions: SQLite by default (WAL, immediate write transactions), PostgreSQL in
production. One code path; only connection set-up differs."""

from __future__ import annotations

import threading
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Iterator

from sqlalchemy import Table, create_engine, event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker


class Base(DeclarativeBase):
    pass


def as_utc(moment: datetime) -> datetime:
    """Times are stored in UTC; SQLite hands them back without an offset, so put it back."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record):
            # Let SQLAlchemy issue BEGIN itself (below), so write transactions can be IMMEDIATE.
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            # 16 MiB of page cache per connection (SQLite's default is 2): the indexes a purchase
            # writes (idempotency keys, refs, member/time) then stay in memory; ~15% more ingest.
            cursor.execute("PRAGMA cache_size=-16384")
            cursor.close()

        writer = threading.Lock()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn):
            if conn.get_execution_options().get("read_only"):
                conn.exec_driver_sql("BEGIN")  # WAL: a reader works on a snapshot beside the writer
                return
            # IMMEDIATE takes the write lock at BEGIN: a read-then-write (check balance, then debit)
            # can never interleave with another writer, the SQLite analogue of SELECT ... FOR UPDATE.
            # This process's writers queue on a lock of ours first: SQLite's own busy handler polls
            # with sleeps of up to 100 ms, and under contention some waiters lost for seconds.
            conn.info["holds_writer"] = writer.acquire(timeout=30)
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
        return engine
    return create_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=True)


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One unit of work: commit on success, roll back on any error."""
    with factory() as session, session.begin():
        yield session


@contextmanager
def reading(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A read-only unit of work: on SQLite it neither takes nor waits for the write lock."""
    with factory() as session:
        session.connection(execution_options={"read_only": True})
        yield session


def insert_many(conn: Connection, table: Table, rows: list[dict]) -> None:
    """INSERT rows through the driver's executemany. On the ingest path (five rows per purchase) and
    for training reads (a row per member) SQLAlchemy's per-row parameter handling would cost more
    than the database's insert itself."""
    if not rows:
        return
    columns = list(rows[0])
    # The dialect's own conversions (SQLite keeps datetimes as text in SQLAlchemy's format), each
    # distinct value converted once: a batch repeats its timestamps (received, created, expires).
    converters = [_memoised(table.c[c].type.dialect_impl(conn.dialect).bind_processor(conn.dialect)) for c in columns]
    marker = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    statement = f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES ({', '.join([marker] * len(columns))})"
    conn.exec_driver_sql(statement, [tuple(convert(row[c]) for c, convert in zip(columns, converters)) for row in rows])


def _memoised(process):
    if process is None:
        return lambda value: value
    seen: dict = {}

    def convert(value):
        if value is None:
            return None
        # Equal datetimes at different offsets are different text: the offset is part of the key.
        key = (value, getattr(value, "tzinfo", None))
        if key not in seen:
            seen[key] = process(value)
        return seen[key]

    return convert
