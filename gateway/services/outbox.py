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


def _row(session: Session, job: ChainJob, ref: str):
    return session.scalars(select(job.model).where(getattr(job.model, job.ref_column) == ref).with_for_update()).one()


def process(gw: Gateway, job: ChainJob, ref: str, wait_s: float = 30.0) -> Any:
    """Drive one row as far as it can go now; returns the row (status pending, confirmed or failed).
    Raises ChainError only when the chain cannot be reached (the row stays pending, to retry)."""
    tx = gw.transactor()
    for _ in range(3):  # at most: resolve a stale transaction, sign anew, confirm
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
                receipt = tx.receipt(row.tx_hash)
                if receipt is not None and receipt["status"] == 0:
                    job.fail(session, gw, row, "transaction reverted on chain")
                    return row
                if receipt is None and tx.confirmed_nonce() <= row.tx_nonce:
                    signed = SignedTx(row.raw_tx, row.tx_hash, row.tx_nonce)  # may still be mined
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
        tx.broadcast(signed)
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
