"""Every gateway's ledger against the chain's events: each exchange and each redemption on both sides.

The ledger side is what the brand recorded (its ``exchanges`` and ``redemptions`` tables, read with the
gateway's own models from its database through an auditor's read-only connection); the chain side is
the settlement store (Issued events of the brand by ``ref``, Redeemed events at the brand by
``(owner, nonce)``, Refunded events likewise). Keys:

- exchange  -> ``Issued.ref`` (the gateway's ``exchange_ref``, 32 bytes hex), amount, wallet;
- redemption -> ``owner:nonce`` of the member's authorisation, amount.

Findings (each names the entry on both sides):

``missing_on_chain``      in the ledger as done, no event on chain;
``missing_in_ledger``     an event of this brand the ledger does not have;
``duplicate_in_ledger``   the same key more than once in the ledger (an extra row);
``duplicate_on_chain``    the same key more than once on chain (e.g. a mint sent twice);
``different``             both sides have it, amount or account differ;
``failed_but_on_chain``   the ledger gave up on it (and reversed its debit) but it happened on chain;
``refund_missing_on_chain`` / ``refund_not_in_ledger``  a refunded redemption without its Refunded
event, or the reverse.

Entries still ``pending`` in the ledger are not findings: they are counted, and listed when the chain
already has them (the gateway's outbox has not caught up yet).
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field, replace
from typing import Any, Iterable, Iterator

from sqlalchemy import create_engine, select
from sqlalchemy.engine import Engine

from .indexer import checksum
from .store import ChainEvent, Store

DONE = ("confirmed", "refunded")


@dataclass(frozen=True)
class Entry:
    """One exchange or redemption as one side records it."""

    kind: str  # exchange | redemption
    key: str
    amount: int
    account: str | None  # the member's wallet (exchange) or the AP owner (redemption); None once the member is erased
    status: str = "confirmed"  # ledger: confirmed | refunded | pending | failed; chain: confirmed
    local_ref: str | None = None  # the gateway's own id, or the chain tx hash
    refunded: int = 0  # chain: AP refunded for this redemption

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "key": self.key, "amount": self.amount, "account": self.account, "status": self.status,
                "ref": self.local_ref}


def redemption_key(owner: str, nonce: int | str) -> str:
    return f"{checksum(owner)}:{int(nonce)}"


def erased_redemption_key(tx_hash: str | None, nonce: int | str) -> str:
    return f"tx:{(tx_hash or '').lower()}:{int(nonce)}"


# ---------------------------------------------------------------------------------------- ledger side


class GatewayDatabase:
    """A gateway's exchanges and redemptions read from its database with the gateway's models
    (read-only: only SELECTs are issued)."""

    def __init__(self, database_url: str | Engine, brand: str, name: str | None = None):
        self.engine = database_url if isinstance(database_url, Engine) else create_engine(database_url)
        self.brand = checksum(brand)
        self.name = name or self.brand

    def entries(self) -> Iterator[Entry]:
        from gateway.models import Exchange, Redemption

        with self.engine.connect() as conn:
            for ref, amount, wallet, status in conn.execute(select(Exchange.exchange_ref, Exchange.ap_amount, Exchange.wallet_address, Exchange.status)):
                yield Entry("exchange", ref.lower().removeprefix("0x"), int(amount), wallet and checksum(wallet), status, ref)
            for ref, owner, nonce, tx_hash, amount, status in conn.execute(select(
                    Redemption.redemption_ref, Redemption.owner, Redemption.nonce, Redemption.tx_hash, Redemption.ap_amount, Redemption.status)):
                # An erased member's redemption keeps no owner: it is found by its transaction and nonce.
                key = redemption_key(owner, nonce) if owner else erased_redemption_key(tx_hash, nonce)
                yield Entry("redemption", key, int(amount), owner and checksum(owner), status, ref)


class ListLedger:
    """A ledger given as entries (tests, benchmarks, other brand systems exported to the same shape)."""

    def __init__(self, brand: str, entries: Iterable[Entry], name: str | None = None):
        self.brand = checksum(brand)
        self.name = name or self.brand
        self._entries = list(entries)

    def entries(self) -> Iterator[Entry]:
        return iter(self._entries)


# ---------------------------------------------------------------------------------------- chain side


def chain_entries(store: Store, brand: str) -> list[Entry]:
    brand = checksum(brand)
    out: list[Entry] = []
    refunds: dict[str, int] = defaultdict(int)
    with store.session() as session:
        rows = session.execute(select(ChainEvent.name, ChainEvent.ref, ChainEvent.account, ChainEvent.nonce, ChainEvent.amount,
                                      ChainEvent.tx_hash).where(ChainEvent.brand == brand,
                                                                ChainEvent.name.in_(("Issued", "Redeemed", "Refunded")))
                               .order_by(ChainEvent.block_number, ChainEvent.log_index))
        redeemed = []
        for name, ref, account, nonce, amount, tx in rows:
            if name == "Issued":
                out.append(Entry("exchange", ref.lower(), amount, account, "confirmed", tx))
            elif name == "Redeemed":
                redeemed.append((redemption_key(account, nonce), amount, account, tx))
            else:
                refunds[redemption_key(account, nonce)] += amount
        for key, amount, account, tx in redeemed:
            out.append(Entry("redemption", key, amount, account, "confirmed", tx, refunds.get(key, 0)))
        for key in refunds.keys() - {r[0] for r in redeemed}:
            out.append(Entry("refund_only", key, refunds[key], key.split(":")[0], "confirmed", None, refunds[key]))
    return out


# ---------------------------------------------------------------------------------------- compare


@dataclass
class BrandReconciliation:
    brand: str
    name: str
    issues: list[dict[str, Any]] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    pending_on_chain: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.issues

    def to_dict(self) -> dict[str, Any]:
        by_kind: dict[str, int] = defaultdict(int)
        for issue in self.issues:
            by_kind[issue["kind"]] += 1
        return {"brand": self.brand, "name": self.name, "ok": self.ok, "counts": self.counts, "issues_by_kind": dict(by_kind),
                "issues": self.issues, "pending_on_chain": self.pending_on_chain}


def compare(brand: str, name: str, ledger: Iterable[Entry], chain: Iterable[Entry]) -> BrandReconciliation:
    result = BrandReconciliation(brand, name)
    chain = list(chain)
    by_tx = {erased_redemption_key(e.local_ref, e.key.split(":")[1]): e.key for e in chain if e.kind == "redemption"}
    ledger = [replace(e, key=by_tx.get(e.key, e.key)) if e.key.startswith("tx:") else e for e in ledger]
    ledger_by: dict[tuple[str, str], list[Entry]] = defaultdict(list)
    chain_by: dict[tuple[str, str], list[Entry]] = defaultdict(list)
    pending = done = 0
    for e in ledger:
        ledger_by[e.kind, e.key].append(e)
    for e in chain:
        chain_by[e.kind, e.key].append(e)
    issues = result.issues
    for (kind, key), rows in ledger_by.items():
        on_chain = chain_by.get((kind, key), [])
        live = [r for r in rows if r.status in DONE]
        if len(live) > 1:
            issues.append({"kind": "duplicate_in_ledger", "entry": kind, "key": key, "count": len(live),
                           "ledger": [r.to_dict() for r in live]})
        if not live:
            if any(r.status == "pending" for r in rows):
                pending += 1
                if on_chain:
                    result.pending_on_chain.append({"entry": kind, "key": key, "tx": on_chain[0].local_ref})
            elif on_chain:
                issues.append({"kind": "failed_but_on_chain", "entry": kind, "key": key, "ledger": rows[0].to_dict(),
                               "chain": on_chain[0].to_dict()})
            continue
        done += 1
        mine = live[0]
        if not on_chain:
            issues.append({"kind": "missing_on_chain", "entry": kind, "key": key, "ledger": mine.to_dict()})
            continue
        theirs = on_chain[0]
        fields = [f for f in ("amount", "account") if getattr(mine, f) is not None and getattr(mine, f) != getattr(theirs, f)]
        if fields:
            issues.append({"kind": "different", "entry": kind, "key": key, "fields": fields, "ledger": mine.to_dict(),
                           "chain": theirs.to_dict()})
        if kind == "redemption":
            if mine.status == "refunded" and not theirs.refunded:
                issues.append({"kind": "refund_missing_on_chain", "entry": kind, "key": key, "ledger": mine.to_dict()})
            elif mine.status != "refunded" and theirs.refunded:
                issues.append({"kind": "refund_not_in_ledger", "entry": kind, "key": key, "chain": theirs.to_dict(),
                               "refunded": theirs.refunded})
    for (kind, key), rows in chain_by.items():
        if len(rows) > 1:
            issues.append({"kind": "duplicate_on_chain", "entry": kind, "key": key, "count": len(rows), "chain": [r.to_dict() for r in rows]})
        if (kind, key) not in ledger_by:
            issues.append({"kind": "missing_in_ledger" if kind != "refund_only" else "refund_not_in_ledger", "entry": kind, "key": key,
                           "chain": rows[0].to_dict()})
    result.counts = {"ledger_entries": sum(len(v) for v in ledger_by.values()), "ledger_done": done, "ledger_pending": pending,
                     "chain_events": sum(len(v) for v in chain_by.values()),
                     "exchanges": sum(1 for k in ledger_by if k[0] == "exchange"),
                     "redemptions": sum(1 for k in ledger_by if k[0] == "redemption")}
    return result


@dataclass
class Reconciliation:
    brands: list[BrandReconciliation]
    seconds: float
    unreconciled_brands: list[str] = field(default_factory=list)  # brands with events and no ledger given

    @property
    def ok(self) -> bool:
        return all(b.ok for b in self.brands)

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "seconds": round(self.seconds, 3), "brands": [b.to_dict() for b in self.brands],
                "entries": sum(b.counts.get("ledger_entries", 0) for b in self.brands),
                "issues": sum(len(b.issues) for b in self.brands), "unreconciled_brands": self.unreconciled_brands}


def reconcile(store: Store, ledgers: Iterable[GatewayDatabase | ListLedger]) -> Reconciliation:
    """Reconcile each ledger against the chain events of its brand (index first)."""
    started = time.perf_counter()
    results = []
    seen = set()
    for ledger in ledgers:
        seen.add(ledger.brand)
        results.append(compare(ledger.brand, ledger.name, ledger.entries(), chain_entries(store, ledger.brand)))
    with store.session() as session:
        active = {b for (b,) in session.execute(select(ChainEvent.brand).where(
            ChainEvent.name.in_(("Issued", "Redeemed"))).distinct())}
    return Reconciliation(results, time.perf_counter() - started, sorted(active - seen))
