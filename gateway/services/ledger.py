"""The brand's points ledger: double-entry, append-only, integer amounts, FIFO lots with expiry.

Every posting is a LedgerTxn whose entries sum to zero. A member's points sit in the `member`
account; the other side names where points came from or went (`issued`, `expired`, `clawback`,
`alliance_out`, `alliance_in`, `redeemed` (rewards and the till), `gifts` (member to member: nets to
zero), `donated`). `Member.balance` is a running total updated in the same transaction, and always
equals the sum of the member's entries.

Credits open a lot that expires `validity_days` later; debits take from the lots that expire first.
A refund can claw back more than a member still holds: the balance then goes negative (a debt that
later earnings pay off first) rather than points being lost from the books.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import NamedTuple

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from ..db import allocate_ids, as_utc, insert_many, one_of, update_many
from ..errors import InsufficientPoints
from ..models import LedgerEntry, LedgerTxn, LotDebit, Member, PointLot

MEMBER = "member"


def post(session: Session, member: Member, kind: str, amount: int, counter_account: str, now: datetime,
         ref: str | None = None) -> LedgerTxn:
    """Move `amount` points into (amount > 0) or out of (amount < 0) the member's account."""
    txn = LedgerTxn(kind=kind, member_id=member.id, ref=ref, created_at=now)
    session.add(txn)
    session.flush()
    session.add_all([
        LedgerEntry(txn_id=txn.id, account=MEMBER, member_id=member.id, amount=amount),
        LedgerEntry(txn_id=txn.id, account=counter_account, member_id=None, amount=-amount),
    ])
    member.balance += amount
    return txn


class Credit(NamedTuple):
    member_id: int
    kind: str
    amount: int
    counter_account: str
    ref: str | None
    debt: int  # the member's debt (negative balance) before this credit: paid off first, no lot for it
    expires_at: datetime


def credit_many(session: Session, credits: list[Credit], now: datetime) -> list[int]:
    """Post credits (one balanced transaction each) and open their lots, in one statement per table
    (the ingest path posts hundreds per commit). Returns the transaction ids in order; the caller
    keeps `Member.balance` in step."""
    if not credits:
        return []
    txns, entries, lots = LedgerTxn.__table__, LedgerEntry.__table__, PointLot.__table__
    conn = session.connection()
    ids = allocate_ids(conn, txns, len(credits))
    insert_many(conn, txns, ("id", "kind", "member_id", "ref", "created_at"),
                [(txn_id, c.kind, c.member_id, c.ref, now) for c, txn_id in zip(credits, ids, strict=True)])
    insert_many(conn, entries, ("txn_id", "account", "member_id", "amount"), [
        row for c, txn_id in zip(credits, ids, strict=True)
        for row in ((txn_id, MEMBER, c.member_id, c.amount), (txn_id, c.counter_account, None, -c.amount))])
    insert_many(conn, lots, ("member_id", "txn_id", "amount", "remaining", "earned_at", "expires_at"),
                [(c.member_id, txn_id, c.amount, c.amount - c.debt, now, c.expires_at)
                 for c, txn_id in zip(credits, ids, strict=True) if c.amount > c.debt])
    return ids


def credit(session: Session, member: Member, kind: str, amount: int, counter_account: str, now: datetime,
           validity_days: int, ref: str | None = None, expires_at: datetime | None = None) -> int:
    """Credit one member's points and open a lot for them (less any debt the member carries).
    Returns the ledger transaction id."""
    [txn_id] = credit_each(session, [(member, amount, ref)], kind, counter_account, now,
                           expires_at or now + timedelta(days=validity_days))
    return txn_id


def credit_each(session: Session, grants: list[tuple[Member, int, str | None]], kind: str, counter_account: str,
                now: datetime, expires_at: datetime) -> list[int]:
    """`credit` for many (member, amount, ref) at once, in one statement per table; a member may come
    more than once (each credit pays the debt left by the one before). The members are locked."""
    session.flush()  # the Core statements of credit_many do not autoflush pending ORM changes
    credits = []
    for member, amount, ref in grants:
        credits.append(Credit(member.id, kind, amount, counter_account, ref, max(0, -member.balance), expires_at))
        member.balance += amount
    return credit_many(session, credits, now)


class Debit(NamedTuple):
    member_id: int
    kind: str
    amount: int
    counter_account: str
    ref: str | None
    takes: list[tuple[int, int]]  # (lot id, points taken from it), oldest-expiring first


def debit_many(session: Session, debits: list[Debit], lots_left: dict[int, int], now: datetime) -> list[int]:
    """Post debits whose lots the caller chose (`take_fifo`), in one statement per table: the
    transactions, their entries, what each took from which lot, and the lots' `remaining`
    (`lots_left`: lot id -> what it holds now). Returns the transaction ids in order; the caller keeps
    `Member.balance` in step and holds the members' locks."""
    if not debits:
        return []
    conn = session.connection()
    ids = allocate_ids(conn, LedgerTxn.__table__, len(debits))
    insert_many(conn, LedgerTxn.__table__, ("id", "kind", "member_id", "ref", "created_at"),
                [(txn_id, d.kind, d.member_id, d.ref, now) for d, txn_id in zip(debits, ids, strict=True)])
    insert_many(conn, LedgerEntry.__table__, ("txn_id", "account", "member_id", "amount"), [
        row for d, txn_id in zip(debits, ids, strict=True)
        for row in ((txn_id, MEMBER, d.member_id, -d.amount), (txn_id, d.counter_account, None, d.amount))])
    insert_many(conn, LotDebit.__table__, ("txn_id", "lot_id", "amount"),
                [(txn_id, lot_id, take) for d, txn_id in zip(debits, ids, strict=True) for lot_id, take in d.takes])
    update_many(conn, PointLot.__table__, ("remaining",), [(left, lot_id) for lot_id, left in lots_left.items()])
    return ids


def take_fifo(lots: list[list[int]], amount: int) -> list[tuple[int, int]]:
    """Take `amount` from `lots` ([lot id, remaining], oldest-expiring first; updated in place)."""
    takes, left = [], amount
    for lot in lots:
        if left == 0:
            break
        take = min(lot[1], left)
        if take:
            lot[1] -= take
            left -= take
            takes.append((lot[0], take))
    return takes


def lots_of(session: Session, member_ids: set[int], now: datetime) -> dict[int, list[list[int]]]:
    """The members' open lots, oldest-expiring first, as [lot id, remaining] (locked: an expiry run
    must not take what a debit takes), for `take_fifo` and `debit_many`."""
    if not member_ids:
        return {}
    lots_t = PointLot.__table__
    out: dict[int, list[list[int]]] = {}
    for member_id, lot_id, remaining in session.execute(
            select(lots_t.c.member_id, lots_t.c.id, lots_t.c.remaining)
            .where(one_of(session, lots_t.c.member_id, member_ids), lots_t.c.remaining > 0, lots_t.c.expires_at > now)
            .order_by(lots_t.c.member_id, lots_t.c.expires_at, lots_t.c.id).with_for_update()):
        out.setdefault(member_id, []).append([lot_id, remaining])
    return out


def open_lots(session: Session, member_id: int, now: datetime) -> list[PointLot]:
    return list(session.scalars(
        select(PointLot)
        .where(PointLot.member_id == member_id, PointLot.remaining > 0, PointLot.expires_at > now)
        .order_by(PointLot.expires_at, PointLot.id)
        .with_for_update()
    ))


def debit(session: Session, member: Member, kind: str, amount: int, counter_account: str, now: datetime,
          ref: str | None = None, allow_debt: bool = False) -> LedgerTxn:
    """Take `amount` points from the member, oldest-expiring lots first.

    Without `allow_debt`, refuses (InsufficientPoints) when the unexpired lots hold less."""
    lots = open_lots(session, member.id, now)
    available = sum(lot.remaining for lot in lots)
    if amount > available and not allow_debt:
        raise InsufficientPoints(f"{amount} points needed, {available} available", needed=amount, available=available)
    txn = post(session, member, kind, -amount, counter_account, now, ref)
    left = amount
    for lot in lots:
        if left == 0:
            break
        take = min(lot.remaining, left)
        lot.remaining -= take
        left -= take
        session.add(LotDebit(txn_id=txn.id, lot_id=lot.id, amount=take))
    return txn


def transfer(session: Session, sender: Member, recipient: Member, amount: int, kind: str, counter_account: str,
             now: datetime, ref: str) -> tuple[LedgerTxn, LedgerTxn]:
    """Move points from one member to another (`<kind>_out`, `<kind>_in`, both through
    `counter_account`). They keep the expiry of the lots they came from: a gift never makes points
    live longer. A debt the recipient carries is paid first, from the soonest-expiring part."""
    out = debit(session, sender, f"{kind}_out", amount, counter_account, now, ref=ref)
    session.flush()
    parts = session.execute(select(PointLot.expires_at, LotDebit.amount).join(LotDebit, LotDebit.lot_id == PointLot.id)
                            .where(LotDebit.txn_id == out.id).order_by(PointLot.expires_at, PointLot.id)).all()
    debt = max(0, -recipient.balance)
    into = post(session, recipient, f"{kind}_in", amount, counter_account, now, ref=ref)
    for expires_at, taken in parts:
        paid = min(debt, taken)
        debt -= paid
        if taken > paid:
            session.add(PointLot(member_id=recipient.id, txn_id=into.id, amount=taken - paid, remaining=taken - paid,
                                 earned_at=now, expires_at=expires_at))
    return out, into


def reverse_debit(session: Session, member: Member, debit_txn: LedgerTxn, kind: str, counter_account: str,
                  now: datetime) -> LedgerTxn:
    """Undo a debit: post the opposite amount and put the points back into the very lots they came
    from (keeping their original expiry)."""
    amount = -session.scalar(select(LedgerEntry.amount).where(LedgerEntry.member_id == member.id, LedgerEntry.account == MEMBER,
                                                              LedgerEntry.txn_id == debit_txn.id))
    # A debt run up since the debit (a clawback while the exchange was pending) is paid first, as
    # with any credit: only the rest goes back into lots, the longest-lived first.
    restore = amount - min(max(0, -member.balance), amount)
    txn = post(session, member, kind, amount, counter_account, now, ref=debit_txn.ref)
    debits = session.execute(select(LotDebit.lot_id, LotDebit.amount).join(PointLot, PointLot.id == LotDebit.lot_id)
                             .where(LotDebit.txn_id == debit_txn.id).order_by(PointLot.expires_at.desc(), PointLot.id.desc())).all()
    for lot_id, taken in debits:
        back = min(taken, restore)
        if back <= 0:
            break
        session.execute(update(PointLot).where(PointLot.id == lot_id).values(remaining=PointLot.remaining + back))
        restore -= back
    return txn


def expire_due(session: Session, now: datetime, member_id: int | None = None) -> int:
    """Expire every lot past its date; returns the points expired."""
    due = select(PointLot.member_id).where(PointLot.remaining > 0, PointLot.expires_at <= now).distinct()
    if member_id is not None:
        due = due.where(PointLot.member_id == member_id)
    total = 0
    for mid in sorted(session.scalars(due).all()):
        # The member row is locked (and re-read) before its lots, in the order every other posting
        # takes them: a purchase committed meanwhile is seen, never overwritten by a stale balance.
        member = session.scalars(select(Member).where(Member.id == mid).with_for_update()
                                 .execution_options(populate_existing=True)).one()
        lots = session.scalars(select(PointLot).where(PointLot.member_id == mid, PointLot.remaining > 0, PointLot.expires_at <= now)
                               .order_by(PointLot.id).with_for_update().execution_options(populate_existing=True))
        for lot in lots.all():
            txn = post(session, member, "expire", -lot.remaining, "expired", now, ref=f"lot:{lot.id}")
            session.add(LotDebit(txn_id=txn.id, lot_id=lot.id, amount=lot.remaining))
            total += lot.remaining
            lot.remaining = 0
    return total


def expiring(session: Session, member_id: int, now: datetime, within_days: int) -> list[tuple[datetime, int]]:
    """(expiry date, points) of the member's lots expiring within the notice window."""
    rows = session.execute(
        select(PointLot.expires_at, PointLot.remaining)
        .where(PointLot.member_id == member_id, PointLot.remaining > 0, PointLot.expires_at > now,
               PointLot.expires_at <= now + timedelta(days=within_days))
        .order_by(PointLot.expires_at)
    )
    return [(at, remaining) for at, remaining in rows]


def ledger_balance(session: Session, member_id: int) -> int:
    """The member's balance as the sum of their ledger entries (the truth `Member.balance` mirrors)."""
    return session.scalar(select(func.coalesce(func.sum(LedgerEntry.amount), 0))
                          .where(LedgerEntry.member_id == member_id, LedgerEntry.account == MEMBER))


def unbalanced_txns(session: Session) -> list[int]:
    """Ids of postings whose entries do not sum to zero (must always be empty)."""
    rows = session.execute(select(LedgerEntry.txn_id).group_by(LedgerEntry.txn_id).having(func.sum(LedgerEntry.amount) != 0))
    return [r[0] for r in rows]


def history(session: Session, member_id: int, limit: int | None = None) -> list[dict]:
    """A member's every posting, oldest first (with `limit`: the newest `limit`, still oldest first)."""
    query = (select(LedgerTxn.id, LedgerTxn.kind, LedgerTxn.ref, LedgerTxn.created_at, LedgerEntry.amount)
             .join(LedgerEntry, LedgerEntry.txn_id == LedgerTxn.id)
             .where(LedgerEntry.member_id == member_id, LedgerEntry.account == MEMBER))
    rows = session.execute(query.order_by(LedgerTxn.id) if limit is None else query.order_by(LedgerTxn.id.desc()).limit(limit)).all()
    lines = [{"txn": t, "kind": k, "ref": r, "at": as_utc(at), "amount": a} for t, k, r, at, a in rows]
    return lines if limit is None else lines[::-1]
