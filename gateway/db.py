"""Engine and sessions: SQLite by default (WAL, immediate write transactions), PostgreSQL in
production. One code path; only connection set-up differs."""

from __future__ import annotations

import json
import threading
from contextlib import contextmanager
from datetime import UTC, datetime
from operator import itemgetter
from typing import Iterable, Iterator

from sqlalchemy import String, Table, any_, bindparam, create_engine, event, func, select
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.sql import ColumnElement


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


def one_of(session: Session, column: ColumnElement, values: Iterable) -> ColumnElement[bool]:
    """`column IN values` with the values bound as ONE parameter (a JSON array read by json_each on
    SQLite, an array on PostgreSQL). A batch looks up thousands of keys and members at once; an
    ordinary IN binds, and SQLAlchemy processes, every value on its own (about twice the cost)."""
    values = list(values)
    if session.get_bind().dialect.name == "postgresql":
        return column == any_(bindparam(None, values, type_=ARRAY(column.type)))
    return column.in_(select(func.json_each(bindparam(None, json.dumps(values), type_=String)).table_valued("value").c.value))


def insert_many(conn: Connection, table: Table, rows: list[dict]) -> None:
    """INSERT rows through the driver's executemany. On the ingest path (five rows per purchase) and
    for training reads (a row per member) SQLAlchemy's per-row parameter handling would cost more
    than the database's insert itself."""
    if not rows:
        return
    columns = list(rows[0])
    marker = _marker(conn)
    conn.exec_driver_sql(f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES ({', '.join([marker] * len(columns))})",
                         _parameters(conn, table, columns, rows))


def update_many(conn: Connection, table: Table, rows: list[dict], key: str = "id") -> None:
    """UPDATE one row per dict (found by `key`, set to the dict's other values) through executemany."""
    if not rows:
        return
    columns = [c for c in rows[0] if c != key]
    marker = _marker(conn)
    conn.exec_driver_sql(f"UPDATE {table.name} SET {', '.join(f'{c} = {marker}' for c in columns)} WHERE {key} = {marker}",
                         _parameters(conn, table, [*columns, key], rows))


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


def _parameters(conn: Connection, table: Table, columns: list[str], rows: list[dict]) -> list[tuple]:
    """Rows as tuples in column order, with the dialect's own conversions (SQLite keeps datetimes as
    text in SQLAlchemy's format) applied to the columns that have one."""
    values = itemgetter(*columns) if len(columns) > 1 else lambda row: (row[columns[0]],)
    converters = [(i, _memoised(process)) for i, c in enumerate(columns)
                  if (process := table.c[c].type.dialect_impl(conn.dialect).bind_processor(conn.dialect)) is not None]
    if not converters:
        return [values(row) for row in rows]
    out = []
    for row in rows:
        v = list(values(row))
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
