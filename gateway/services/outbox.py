"""One state machine for every chain operation a gateway makes on a member's behalf (exchange =
mint, redemption = redeem), so a database write and a chain transaction end as one outcome.

A row starts `pending` with its ledger effect recorded (or, for redemptions, to be recorded).
`process` then, each step in its own database transaction:
1. asks the chain whether the operation already happened (by the row's on-chain reference): if so,
   finalises the row (`succeed`);
2. if a stored transaction was mined and reverted, or the contracts refuse the call, fails the row
   (`fail` undoes the ledger effect);
3. if a stored transaction may still be mined, broadcasts the same signed bytes again;
4. otherwise signs a new transaction, STORES it, and only then broadcasts it.
A crash anywhere leaves either nothing on chain (and the row is signed again) or a transaction the
chain check finds: points are never lost and never doubled. Run on start and by the worker."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from sqlalchemy import select
from sqlalchemy.orm import Session

from contracts.chain import ChainError, ContractRevert, SignedTx

from ..db import transaction
from ..runtime import Gateway


@dataclass(frozen=True)
class ChainJob:
    """What differs between exchanges and redemptions."""

    model: type
    ref_column: str
    call: Callable[[Gateway, Any], Any]  # the contract call for a row
    effect: Callable[[Gateway, Any], dict | None]  # the on-chain evidence that the row happened
    succeed: Callable[[Session, Gateway, Any, dict], None]
    fail: Callable[[Session, Gateway, Any, str], None]


_SUBMIT_LOCKS: dict[str, threading.Lock] = {}
_SUBMIT_GUARD = threading.Lock()


def submission_lock(address: str) -> threading.Lock:
    """One lock per sending account, held from numbering a transaction (its nonce) until it is
    broadcast. Without it, two requests that were given nonces N and N+1 can broadcast N+1 first:
    a node that queues future nonces copes, but the embedded chain refuses it outright, and so
    would any node once a gap outlives its queue. Anything else this process sends from the
    brand's account (anchoring) takes the same lock."""
    with _SUBMIT_GUARD:
        return _SUBMIT_LOCKS.setdefault(address, threading.Lock())


def _row(session: Session, job: ChainJob, ref: str):
    return session.scalars(select(job.model).where(getattr(job.model, job.ref_column) == ref).with_for_update()).one()


def _effect_once_indexed(gw: Gateway, job: ChainJob, row, waits: tuple[float, ...] = (0.05, 0.1, 0.25, 0.5, 1.0)) -> Any:
    for wait in waits:
        time.sleep(wait)
        effect = job.effect(gw, row)
        if effect is not None:
            return effect
    return None


def process(gw: Gateway, job: ChainJob, ref: str, wait_s: float = 30.0) -> Any:
    """Drive one row as far as it can go now; returns the row (status pending, confirmed or failed).
    Raises ChainError only when the chain cannot be reached (the row stays pending, to retry)."""
    tx = gw.transactor()
    lock = submission_lock(tx.address)
    for _ in range(3):  # at most: resolve a stale transaction, sign anew, confirm
        held = False
        try:
            with transaction(gw.sessions) as session:
                row = _row(session, job, ref)
                if row.status != "pending":
                    return row
                effect = job.effect(gw, row)
                if effect is not None:
                    job.succeed(session, gw, row, effect)
                    return row
                signed = None
                if row.tx_hash:
                    # The account's mined-transaction count is read BEFORE the receipt: if the stored
                    # transaction is mined at any moment before that count, the receipt read after it
                    # sees it. (The other order can miss a transaction mined in between, take it for
                    # replaced and sign the operation again: a double mint.)
                    confirmed = tx.confirmed_nonce()
                    receipt = tx.receipt(row.tx_hash)
                    if receipt is not None and receipt["status"] == 0:
                        job.fail(session, gw, row, "transaction reverted on chain")
                        return row
                    if receipt is not None:
                        # Mined and succeeded, yet its effect was not found: a node's log index can
                        # trail its receipts for a moment (seen on anvil). Look again; never sign it again.
                        effect = _effect_once_indexed(gw, job, row)
                        if effect is None:
                            raise ChainError(f"{ref}: transaction {row.tx_hash} is mined but its effect is not visible yet")
                        job.succeed(session, gw, row, effect)
                        return row
                    if confirmed <= row.tx_nonce:
                        signed = SignedTx(row.raw_tx, row.tx_hash, row.tx_nonce)  # may still be mined
                    # else: its nonce went to another transaction, so it can never be mined: sign anew.
                lock.acquire()
                held = True
                if signed is None:
                    try:
                        signed = tx.prepare(job.call(gw, row))
                    except ContractRevert as exc:
                        job.fail(session, gw, row, str(exc))
                        return row
                    row.raw_tx, row.tx_hash, row.tx_nonce = signed.raw, signed.hash, signed.nonce
                    row.attempts += 1
            # Committed: the signed transaction is on disk before it can reach the chain.
            if gw.before_broadcast is not None:
                gw.before_broadcast(ref)
            try:
                tx.broadcast(signed)
            except ChainError:
                raise
            except Exception as exc:  # a node refusing the bytes (e.g. the embedded chain's nonce check)
                raise ChainError(f"{ref}: broadcast failed: {exc}") from exc
        finally:
            if held:
                lock.release()
        if tx.receipt(signed.hash, timeout=wait_s) is None:
            with transaction(gw.sessions) as session:
                return _row(session, job, ref)  # still pending: the worker finishes it
    raise ChainError(f"{ref}: could not settle the chain operation")


def pending_refs(gw: Gateway, job: ChainJob) -> list[str]:
    with transaction(gw.sessions) as session:
        return list(session.scalars(select(getattr(job.model, job.ref_column)).where(job.model.status == "pending")))


def process_all(gw: Gateway, jobs: list[ChainJob], wait_s: float = 30.0) -> dict[str, int]:
    """Retry every pending row (on start, and periodically). Returns counts by final status."""
    counts: dict[str, int] = {}
    for job in jobs:
        for ref in pending_refs(gw, job):
            try:
                status = process(gw, job, ref, wait_s).status
            except ChainError:
                status = "pending"
            counts[status] = counts.get(status, 0) + 1
    return counts
