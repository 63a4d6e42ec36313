"""The gateway's own books checked against themselves and against the chain."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ..models import Exchange, LedgerEntry, Member, PointLot, Redemption
from ..runtime import Gateway
from . import ledger


def ledger_report(session: Session) -> dict[str, Any]:
    sums = dict(session.execute(select(LedgerEntry.member_id, func.sum(LedgerEntry.amount))
                                .where(LedgerEntry.account == ledger.MEMBER).group_by(LedgerEntry.member_id)).all())
    lots = dict(session.execute(select(PointLot.member_id, func.sum(PointLot.remaining)).group_by(PointLot.member_id)).all())
    balance_mismatch, lot_mismatch = [], []
    for member_id, ref, balance in session.execute(select(Member.id, Member.member_ref, Member.balance)):
        if sums.get(member_id, 0) != balance:
            balance_mismatch.append({"member_ref": ref, "balance": balance, "ledger_sum": int(sums.get(member_id, 0))})
        if int(lots.get(member_id) or 0) != max(balance, 0):
            lot_mismatch.append({"member_ref": ref, "balance": balance, "lots": int(lots.get(member_id) or 0)})
    totals = dict(session.execute(select(LedgerEntry.account, func.sum(LedgerEntry.amount)).group_by(LedgerEntry.account)).all())
    unbalanced = ledger.unbalanced_txns(session)
    return {"ok": not (unbalanced or balance_mismatch or lot_mismatch), "unbalanced_txns": unbalanced,
            "balance_mismatches": balance_mismatch, "lot_mismatches": lot_mismatch,
            "account_totals": {k: int(v) for k, v in totals.items()}}


def _hex(value) -> str:
    return "0x" + bytes(value).hex()


def chain_report(session: Session, gw: Gateway) -> dict[str, Any]:
    """Each confirmed exchange against the brand's Issued events (by reference) and each confirmed
    redemption against the Redeemed events at this brand (by owner and nonce): missing, extra, different."""
    if gw.alliance is None:
        return {"ok": True, "skipped": "no chain configured"}
    points = gw.alliance.points.contract
    since = gw.alliance.manifest.deployed_block
    issued = {e["args"]["ref"].hex(): e for e in points.events.Issued().get_logs(from_block=since, argument_filters={"brand": gw.brand_address})}
    redeemed = {(e["args"]["owner"], str(e["args"]["nonce"])): e for e in points.events.Redeemed().get_logs(
        from_block=since, argument_filters={"brand": gw.brand_address})}
    refunded = {(e["args"]["owner"], str(e["args"]["nonce"])) for e in points.events.Refunded().get_logs(
        from_block=since, argument_filters={"brand": gw.brand_address})}
    issues: list[dict[str, Any]] = []
    seen_refs = set()
    for x in session.scalars(select(Exchange).where(Exchange.status == "confirmed")):
        seen_refs.add(x.exchange_ref)
        event = issued.get(x.exchange_ref)
        if event is None:
            issues.append({"kind": "exchange_missing_on_chain", "ref": x.exchange_ref})
        elif event["args"]["amount"] != x.ap_amount or (x.wallet_address is not None and event["args"]["to"] != x.wallet_address):
            issues.append({"kind": "exchange_differs", "ref": x.exchange_ref, "ledger": x.ap_amount, "chain": event["args"]["amount"]})
    for ref in issued.keys() - seen_refs:
        issues.append({"kind": "mint_not_in_ledger", "ref": ref, "tx": issued[ref]["transactionHash"].hex()})
    # An erased member's redemption keeps no owner: it is found by its transaction and nonce instead.
    by_tx = {(_hex(e["transactionHash"]), key[1]): key for key, e in redeemed.items()}
    seen = set()
    for r in session.scalars(select(Redemption).where(Redemption.status.in_(("confirmed", "refunded")))):
        key = (r.owner, r.nonce) if r.owner is not None else by_tx.get((r.tx_hash, r.nonce), (None, r.nonce))
        seen.add(key)
        event = redeemed.get(key)
        if event is None:
            issues.append({"kind": "redemption_missing_on_chain", "ref": r.redemption_ref})
        elif event["args"]["amount"] != r.ap_amount:
            issues.append({"kind": "redemption_differs", "ref": r.redemption_ref, "ledger": r.ap_amount, "chain": event["args"]["amount"]})
    for key in redeemed.keys() - seen:
        issues.append({"kind": "redemption_not_in_ledger", "owner": key[0], "nonce": key[1]})
    pending = {"exchanges": session.scalar(select(func.count()).where(Exchange.status == "pending")),
               "redemptions": session.scalar(select(func.count()).where(Redemption.status == "pending"))}
    return {"ok": not issues, "issues": issues, "pending": pending, "checked": {
        "exchanges": len(seen_refs), "redemptions": len(seen), "mints_on_chain": len(issued),
        "redemptions_on_chain": len(redeemed), "refunds_on_chain": len(refunded)}}
