"""The bulk helpers under the ingest path and the population loader, on SQLite and PostgreSQL: a set
of values bound as one parameter, ids drawn for rows the caller inserts itself (and sequences moved
past ids a loader chose), and executemany inserts and updates that keep SQLAlchemy's conversions."""

from __future__ import annotations

import gc
import threading
import time
from datetime import UTC, datetime, timedelta

from sqlalchemy import event, select

from gateway.db import WAL_SAFETY_NET_PAGES, allocate_ids, as_utc, ids_taken, insert_many, make_engine, make_sessionmaker, one_of, transaction, update_many
from gateway.migrations import upgrade_to_head
from gateway.models import LedgerTxn, Member, Purchase
from gateway.services import purchases, tiers

NOW = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)


def _insert(conn, table, rows: list[dict]) -> None:
    insert_many(conn, table, list(rows[0]), [tuple(row.values()) for row in rows])


def _member(i: int, **overrides) -> dict:
    return {"member_ref": f"ref-{i:05d}", "status": "active", "enrolled_at": NOW, "jurisdiction": "CN", "tier": "member",
            "tier_since": NOW, "balance": 0, "purchase_count": 0, "earned_today": 0} | overrides


def test_bulk_helpers(database_url):
    engine = make_engine(database_url)
    upgrade_to_head(engine)
    sessions = make_sessionmaker(engine)
    members = Member.__table__
    try:
        with transaction(sessions) as session:
            conn = session.connection()
            ids = allocate_ids(conn, members, 40_000)
            assert ids == list(range(ids[0], ids[0] + 40_000))
            # More values than SQLite binds in one statement (32,766): one_of binds them as one.
            _insert(conn, members, [_member(i, id=mid) for i, mid in enumerate(ids)])
            odd = ["ref-%05d" % i for i in range(1, 40_000, 2)] + ["it's \"quoted\" ünicode", "ref-99999"]
            found = session.scalars(select(members.c.id).where(one_of(session, members.c.member_ref, odd))).all()
            assert sorted(found) == ids[1::2]
            assert session.scalars(select(members.c.id).where(one_of(session, members.c.id, []))).all() == []
            # The ORM's own inserts continue after the drawn ids (PostgreSQL: the sequence moved on).
            session.add(LedgerTxn(kind="welcome", member_id=ids[0], ref=None, created_at=NOW))
            session.flush()
            assert allocate_ids(conn, LedgerTxn.__table__, 2)[0] > session.scalar(select(LedgerTxn.id))
            # Rows loaded with ids of their own (the population simulator): later ids go past them.
            insert_many(conn, LedgerTxn.__table__, ("id", "kind", "member_id", "ref", "created_at"),
                        [(10_000 + k, "earn", ids[0], None, NOW) for k in range(3)])
            ids_taken(conn, LedgerTxn.__table__)
            assert allocate_ids(conn, LedgerTxn.__table__, 1) == [10_003]
            orm = LedgerTxn(kind="welcome", member_id=ids[0], ref=None, created_at=NOW)
            session.add(orm)
            session.flush()
            assert orm.id > 10_002

            due = NOW + timedelta(days=90, microseconds=1)  # stored in UTC, as every time is
            update_many(conn, members, ("balance", "downgrade_due_at"), [(150, due, ids[0]), (-20, None, ids[1])])
            session.get(Member, ids[2]).downgrade_due_at = due  # the same value, written by the ORM
        with transaction(sessions) as session:
            a, b = (session.get(Member, i) for i in ids[:2])
            assert (a.balance, b.balance, b.downgrade_due_at) == (150, -20, None)
            assert as_utc(a.downgrade_due_at) == due and as_utc(a.enrolled_at) == NOW
            # Stored exactly as the ORM stores it (on SQLite: the same text, which range queries compare).
            raw = session.connection().exec_driver_sql
            assert len(set(raw(f"SELECT downgrade_due_at FROM members WHERE id IN ({ids[0]}, {ids[2]})").scalars())) == 1
            assert len(set(raw(f"SELECT created_at FROM ledger_txns WHERE id IN (10000, {orm.id})").scalars())) == 1
    finally:
        engine.dispose()


def test_tier_window_and_daily_cap_read_only_the_index(tmp_path):
    """Every batch sums each member's purchases in the tier window (and a late event's daily cap):
    those reads must stay in ix_purchases_member_time and never visit a purchase's row. SQLite's own plan
    for the statements the services send says so (PostgreSQL's depends on its visibility map)."""
    engine = make_engine(f"sqlite:///{tmp_path}/plan.db")
    upgrade_to_head(engine)
    sessions = make_sessionmaker(engine)
    sent: list[tuple[str, tuple]] = []
    def note(conn, cursor, sql, params, *_):
        sent.append((sql, params))
    try:
        with transaction(sessions) as session:
            [member_id] = allocate_ids(session.connection(), Member.__table__, 1)
            _insert(session.connection(), Member.__table__, [_member(1, id=member_id)])
            event.listen(engine, "before_cursor_execute", note)
            tiers.window_activity(session, member_id, NOW, 365)
            purchases._earned_on_day(session, member_id, NOW.date(), UTC)
            event.remove(engine, "before_cursor_execute", note)
            steps = [row[-1] for sql, params in sent
                     for row in session.connection().exec_driver_sql("EXPLAIN QUERY PLAN " + sql, params)]
        searches = [step for step in steps if step.startswith(("SEARCH purchases", "SCAN purchases"))]
        assert len(searches) == 3, steps  # window spend, window count, the day's points
        assert all(step.startswith("SEARCH purchases USING COVERING INDEX ix_purchases_member_time") for step in searches), steps
    finally:
        engine.dispose()


def test_sqlite_checkpoints_run_beside_the_writers(tmp_path):
    """A commit leaves its pages in the WAL (it checkpoints itself only past the safety net); the
    engine's own thread copies them into the database file soon after, and stops with the engine."""
    path = tmp_path / "wal.db"
    engine = make_engine(f"sqlite:///{path}")
    upgrade_to_head(engine)
    sessions = make_sessionmaker(engine)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar_one() == WAL_SAFETY_NET_PAGES
    before = path.stat().st_size
    with transaction(sessions) as session:  # ~2 MB: some 500 pages, short of any commit's own checkpoint
        conn = session.connection()
        _insert(conn, Member.__table__, [_member(i, id=mid) for i, mid in enumerate(allocate_ids(conn, Member.__table__, 10_000))])
    deadline = time.monotonic() + 10
    while path.stat().st_size < before + 1_000_000 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert path.stat().st_size >= before + 1_000_000, "no checkpoint copied the WAL into the database file"

    name = f"sqlite-checkpoint {path}"
    assert name in {t.name for t in threading.enumerate()}
    engine.dispose()
    del engine, sessions, session, conn
    gc.collect()
    deadline = time.monotonic() + 5
    while name in {t.name for t in threading.enumerate()} and time.monotonic() < deadline:
        time.sleep(0.05)
    assert name not in {t.name for t in threading.enumerate()}


def test_tier_window_is_read_as_integers(database_url):
    """A member's window comes back as Python ints on both databases (PostgreSQL sums bigints as numeric)."""
    engine = make_engine(database_url)
    upgrade_to_head(engine)
    sessions = make_sessionmaker(engine)
    try:
        with transaction(sessions) as session:
            conn = session.connection()
            [member_id] = allocate_ids(conn, Member.__table__, 1)
            _insert(conn, Member.__table__, [_member(1, id=member_id, member_ref=f"window-{member_id}")])
            _insert(conn, Purchase.__table__, [
                {"purchase_ref": f"p-{member_id}-{k}", "idempotency_key": f"k-{member_id}-{k}", "request_hash": "h", "member_id": member_id,
                 "amount_minor": amount, "refunded_minor": refunded, "currency": "CNY", "channel": "store", "eco": False,
                 "occurred_at": at, "received_at": at, "points": 1, "campaign": None, "clawed_back": 0, "txn_id": None}
                for k, (amount, refunded, at) in enumerate([(12_000, 2_000, NOW - timedelta(days=3)), (5_000, 0, NOW - timedelta(days=1)),
                                                            (9_999, 0, NOW - timedelta(days=400))])])
            window = tiers.window_activity(session, member_id, NOW, 365)
        assert window == (15_000, 2, 0) and all(type(v) is int for v in window)
    finally:
        engine.dispose()


def test_sqlite_pool_hands_out_the_connection_returned_last(tmp_path):
    """SQLite empties a connection's page cache when another one has written: the pool reuses the
    connection that came back last (the one that just wrote), not the one idle longest."""
    engine = make_engine(f"sqlite:///{tmp_path}/pool.db")
    try:
        first, last = engine.raw_connection(), engine.raw_connection()
        first_driver, last_driver = first.driver_connection, last.driver_connection
        first.close()
        last.close()
        again = engine.raw_connection()
        assert again.driver_connection is last_driver and again.driver_connection is not first_driver
        again.close()
    finally:
        engine.dispose()


def test_the_sqlite_writer_lock_serves_in_order_and_the_chain_sender_first():
    """Writers queue first come, first served (threading.Lock does not: under a flood of requests'
    writes the chain sender's write waited for seconds), and the sender's writes go ahead of the
    queue, each of them settling a batch of waiting requests. A waiter that gives up leaves the
    queue intact."""
    import threading
    import time

    from gateway.db import FairLock

    lock = FairLock()
    assert lock.acquire(timeout=1)
    assert lock.acquire(timeout=0.05) is False  # held: gives up, and leaves no trace in the queue
    order = []

    def writer(name: str, first: bool = False) -> None:
        assert lock.acquire(timeout=5, first=first)
        order.append(name)
        lock.release()

    threads = []
    for name, first in (("a", False), ("b", False), ("c", False), ("sender", True)):
        threads.append(threading.Thread(target=writer, args=(name, first)))
        threads[-1].start()
        time.sleep(0.05)  # each is waiting before the next asks
    lock.release()
    for t in threads:
        t.join(5)
    assert order == ["sender", "a", "b", "c"]
    assert lock.acquire(timeout=0.05)  # free again
    lock.release()
