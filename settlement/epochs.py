"""Epochs: re-derive every position from events, prove it equals the contract, and close.

:func:`derive` replays the indexed events in chain order and computes, trusting nothing but the events:
each brand's issued (mints and refunds: both create AP the brand backs), redeemed and net value per epoch, its collateral after every
deposit, withdrawal and close, the AP supply (from mint and burn transfers) and the pool. Along the
way it compares what it derives with what each event reports (BrandSettled, EpochClosed, the collateral
figure in deposit and withdrawal events).

:func:`verify_state` compares the derivation with the contracts' own storage read *at the indexed
block* (``accountOf``, ``openPosition``, ``poolBalance``, ``totalSupply``, ``currentEpoch``,
``totalCollateral``), and :func:`close_epoch` runs both before and after ``closeEpoch``, so every close
comes with a :class:`CloseReport` proving: derived = on-chain record, and pool = supply x value.

An epoch is closed when the :class:`EpochPolicy` says so: by time (the epoch has been open for
``max_age_s``), by volume (``max_volume_ap`` AP issued plus redeemed in it), whichever comes first; an
epoch with nothing to settle is not closed unless forced.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any

from eth_account.signers.local import LocalAccount

from contracts.client import Alliance

from .indexer import Indexer, args_of
from .store import Store

SETTLEMENT_EVENTS = ("Issued", "Redeemed", "Refunded", "Transfer", "BrandSettled", "EpochClosed",
                     "CollateralDeposited", "CollateralWithdrawn", "BrandAdmitted", "BrandRotated")
ZERO = "0x0000000000000000000000000000000000000000"


@dataclass
class Check:
    name: str
    ok: bool
    detail: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "detail": self.detail}


@dataclass
class BrandEpoch:
    """One brand in one closed epoch: what the events imply against what BrandSettled reports."""

    brand: str
    issued: int  # mints and refunds
    redeemed: int
    net_value: int  # settlement-token units, > 0 paid to the brand
    collateral: int  # after the close, derived
    reported: dict[str, int] | None  # the BrandSettled event (None: the contract settled nothing for it)
    refunded: int = 0  # the part of `issued` that refunds redemptions

    @property
    def ok(self) -> bool:
        if self.reported is None:
            return self.issued == 0 and self.redeemed == 0
        r = self.reported
        return (r["issued"], r["redeemed"], r["netValue"], r["collateral"]) == (self.issued, self.redeemed, self.net_value, self.collateral)

    def to_dict(self) -> dict[str, Any]:
        return {"brand": self.brand, "issued": self.issued, "redeemed": self.redeemed, "net_value": self.net_value,
                "collateral": self.collateral, "reported": self.reported, "ok": self.ok}


@dataclass
class EpochRecord:
    epoch: int
    opened_at: int | None = None
    closed_at: int | None = None  # block time of the close
    close_block: int | None = None
    close_tx: str | None = None
    brands: dict[str, BrandEpoch] = field(default_factory=dict)
    pool: int | None = None  # derived, after the close
    supply: int | None = None  # derived, at the close
    reported: dict[str, int] | None = None  # the EpochClosed event
    redemptions: int = 0
    mints: int = 0

    @property
    def issued(self) -> int:
        return sum(b.issued for b in self.brands.values())

    @property
    def redeemed(self) -> int:
        return sum(b.redeemed for b in self.brands.values())

    @property
    def refunded(self) -> int:
        return sum(b.refunded for b in self.brands.values())

    def checks(self, value: int) -> list[Check]:
        out = [Check(f"epoch {self.epoch}: brand {b.brand} settled as derived", b.ok, b.to_dict()) for b in self.brands.values()]
        if self.reported is not None:
            r = self.reported
            out.append(Check(f"epoch {self.epoch}: totals as derived",
                             (r["issued"], r["redeemed"], r["pool"], r["supply"]) == (self.issued, self.redeemed, self.pool, self.supply),
                             {"derived": {"issued": self.issued, "redeemed": self.redeemed, "pool": self.pool, "supply": self.supply},
                              "reported": r}))
            out.append(Check(f"epoch {self.epoch}: pool = supply x value", r["pool"] == r["supply"] * value and self.pool == self.supply * value,
                             {"pool": r["pool"], "supply": r["supply"], "value_per_point": value, "supply_x_value": r["supply"] * value}))
        return out

    def to_dict(self, value: int) -> dict[str, Any]:
        return {"epoch": self.epoch, "opened_at": self.opened_at, "closed_at": self.closed_at, "close_block": self.close_block,
                "close_tx": self.close_tx, "issued": self.issued, "redeemed": self.redeemed, "pool": self.pool, "supply": self.supply,
                "mints": self.mints, "redemptions": self.redemptions,
                "brands": [b.to_dict() for b in self.brands.values()], "reported": self.reported,
                "checks": [c.to_dict() for c in self.checks(value)]}


@dataclass
class Derivation:
    """Everything derived from the events up to ``block``."""

    value_per_point: int
    block: int | None
    epochs: dict[int, EpochRecord]  # closed epochs
    current_epoch: int
    open_issued: dict[str, int]
    open_redeemed: dict[str, int]
    issued: dict[str, int]  # cumulative
    redeemed: dict[str, int]  # cumulative
    collateral: dict[str, int]
    supply: int
    pool: int
    brands: list[str]
    anomalies: list[dict[str, Any]]
    names: dict[str, str] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)  # a rotated brand's later accounts -> its first

    def canonical(self, account: str) -> str:
        """A brand is named by the account it was admitted with, whatever account it acts through now."""
        return self.aliases.get(account, account)

    def checks(self) -> list[Check]:
        out = []
        for record in self.epochs.values():
            out.extend(record.checks(self.value_per_point))
        out.append(Check("events consistent (collateral figures, redemption epochs)", not self.anomalies, {"anomalies": self.anomalies[:20]}))
        return out

    def open_volume(self) -> int:
        return sum(self.open_issued.values()) + sum(self.open_redeemed.values())


def derive(store: Store, value_per_point: int) -> Derivation:
    """Replay the indexed events (see the module docstring)."""
    epoch = 1
    open_issued: dict[str, int] = defaultdict(int)
    open_redeemed: dict[str, int] = defaultdict(int)
    open_refunded: dict[str, int] = defaultdict(int)
    issued: dict[str, int] = defaultdict(int)
    redeemed: dict[str, int] = defaultdict(int)
    collateral: dict[str, int] = defaultdict(int)
    supply = pool = 0
    brands: list[str] = []
    names: dict[str, str] = {}
    aliases: dict[str, str] = {}
    anomalies: list[dict[str, Any]] = []
    epochs: dict[int, EpochRecord] = {}
    record = EpochRecord(1)
    settled: dict[str, dict[str, int]] = {}
    with store.session() as session:
        from .indexer import IndexerState
        state = session.query(IndexerState).first()
        block = state.last_block if state else None
        from sqlalchemy import select

        from .store import ChainEvent

        # Plain rows, not ORM objects: a close replays every event of the alliance's history.
        rows = session.execute(select(ChainEvent.name, ChainEvent.contract, ChainEvent.brand, ChainEvent.account, ChainEvent.counterparty,
                                      ChainEvent.amount, ChainEvent.epoch, ChainEvent.args, ChainEvent.tx_hash, ChainEvent.block_number,
                                      ChainEvent.block_time, ChainEvent.log_index)
                               .where(ChainEvent.name.in_(SETTLEMENT_EVENTS))
                               .order_by(ChainEvent.block_number, ChainEvent.log_index))
        for e in rows:
            name = e.name
            brand = aliases.get(e.brand, e.brand)
            if name == "Transfer":
                if e.contract != "AlliancePoints":
                    continue
                value = e.amount if e.amount is not None else args_of(e)["value"]
                if e.account == ZERO:
                    supply += value
                if e.counterparty == ZERO:
                    supply -= value
            elif name == "Issued":
                open_issued[brand] += e.amount
                issued[brand] += e.amount
                record.mints += 1
            elif name == "Redeemed":
                open_redeemed[brand] += e.amount
                redeemed[brand] += e.amount
                record.redemptions += 1
                if e.epoch != epoch:
                    anomalies.append({"kind": "redemption_epoch", "tx": e.tx_hash, "event_epoch": e.epoch, "derived_epoch": epoch})
            elif name == "Refunded":  # the brand gives AP back: it backs them as it backs a mint
                open_issued[brand] += e.amount
                open_refunded[brand] += e.amount
                issued[brand] += e.amount
                if e.epoch != epoch:
                    anomalies.append({"kind": "refund_epoch", "tx": e.tx_hash, "event_epoch": e.epoch, "derived_epoch": epoch})
            elif name in ("CollateralDeposited", "CollateralWithdrawn"):
                a = args_of(e)
                collateral[brand] += a["amount"] if name == "CollateralDeposited" else -a["amount"]
                if collateral[brand] != a["collateral"]:
                    anomalies.append({"kind": "collateral", "tx": e.tx_hash, "brand": brand, "derived": collateral[brand], "reported": a["collateral"]})
            elif name == "BrandRotated":
                aliases[e.brand] = aliases.get(e.account, e.account)
            elif name == "BrandAdmitted":
                brands.append(brand)
                names[brand] = args_of(e)["name"]
            elif name == "BrandSettled":
                a = args_of(e)
                settled[brand] = {k: a[k] for k in ("issued", "redeemed", "netValue", "collateral")}
                if a["epoch"] != epoch:
                    anomalies.append({"kind": "settled_epoch", "tx": e.tx_hash, "event_epoch": a["epoch"], "derived_epoch": epoch})
            elif name == "EpochClosed":
                a = args_of(e)
                if a["epoch"] != epoch:
                    anomalies.append({"kind": "closed_epoch", "tx": e.tx_hash, "event_epoch": a["epoch"], "derived_epoch": epoch})
                for b in brands:
                    i, r = open_issued.get(b, 0), open_redeemed.get(b, 0)
                    if i == 0 and r == 0 and b not in settled:
                        continue
                    collateral[b] += (r - i) * value_per_point
                    pool += (i - r) * value_per_point
                    record.brands[b] = BrandEpoch(b, i, r, (r - i) * value_per_point, collateral[b], settled.get(b),
                                                  open_refunded.get(b, 0))
                for b in settled.keys() - set(brands):
                    record.brands[b] = BrandEpoch(b, 0, 0, 0, collateral[b], settled[b])  # settled an unknown brand
                record.opened_at, record.closed_at = a["openedAt"], e.block_time
                record.close_block, record.close_tx = e.block_number, e.tx_hash
                record.pool, record.supply = pool, supply
                record.reported = {k: a[k] for k in ("issued", "redeemed", "pool", "supply")}
                epochs[epoch] = record
                epoch += 1
                record = EpochRecord(epoch, opened_at=e.block_time)
                open_issued.clear()
                open_redeemed.clear()
                open_refunded.clear()
                settled = {}
    return Derivation(value_per_point, block, epochs, epoch, dict(open_issued), dict(open_redeemed), dict(issued),
                      dict(redeemed), dict(collateral), supply, pool, brands, anomalies, names, aliases)


def verify_state(alliance: Alliance, d: Derivation, block: int | None = None) -> list[Check]:
    """The derivation against the contracts' storage at ``block`` (default: the indexed block)."""
    at = block if block is not None else d.block
    kw = {"block_identifier": at} if at is not None else {}
    s = alliance.settlement.contract.functions
    checks = []
    for account in alliance.registry.contract.functions.brands().call(**kw):
        acc = s.accountOf(account).call(**kw)
        b = d.canonical(account)
        collateral, _limit, issued, redeemed, _touched, settled_issued, settled_redeemed, _payout = acc
        oi, orr = d.open_issued.get(b, 0), d.open_redeemed.get(b, 0)
        derived = {"issued": d.issued.get(b, 0), "redeemed": d.redeemed.get(b, 0), "settled_issued": d.issued.get(b, 0) - oi,
                   "settled_redeemed": d.redeemed.get(b, 0) - orr, "collateral": d.collateral.get(b, 0)}
        chain = {"issued": issued, "redeemed": redeemed, "settled_issued": settled_issued, "settled_redeemed": settled_redeemed,
                 "collateral": collateral}
        checks.append(Check(f"brand {d.names.get(b, b)} ({b}): accountOf = derived", chain == derived, {"chain": chain, "derived": derived}))
        pos = s.openPosition(account).call(**kw)
        checks.append(Check(f"brand {d.names.get(b, b)}: open position = derived", (pos[0], pos[1]) == (oi, orr),
                            {"chain": {"issued": pos[0], "redeemed": pos[1]}, "derived": {"issued": oi, "redeemed": orr}}))
    pool = s.poolBalance().call(**kw)
    supply = alliance.points.contract.functions.totalSupply().call(**kw)
    epoch = s.currentEpoch().call(**kw)
    total_collateral = s.totalCollateral().call(**kw)
    value = d.value_per_point
    checks.append(Check("pool = derived pool", pool == d.pool, {"chain": pool, "derived": d.pool}))
    checks.append(Check("AP supply = derived supply", supply == d.supply, {"chain": supply, "derived": d.supply}))
    checks.append(Check("current epoch = derived", epoch == d.current_epoch, {"chain": epoch, "derived": d.current_epoch}))
    checks.append(Check("total collateral = sum of derived collateral", total_collateral == sum(d.collateral.values()),
                        {"chain": total_collateral, "derived": sum(d.collateral.values())}))
    # Between closes the pool lags the supply by exactly the open net issuance.
    open_net = sum(d.open_issued.values()) - sum(d.open_redeemed.values())
    checks.append(Check("pool + open net issuance x value = supply x value", pool + open_net * value == supply * value,
                        {"pool": pool, "open_net_issued": open_net, "supply": supply, "value_per_point": value}))
    return checks


@dataclass
class EpochPolicy:
    """When to close: after ``max_age_s`` seconds open, or once ``max_volume_ap`` AP were issued plus
    redeemed in the epoch, whichever first; never an epoch with nothing in it (unless forced)."""

    max_age_s: int | None = 24 * 3600
    max_volume_ap: int | None = None

    def due(self, age_s: int, volume: int) -> tuple[bool, str]:
        if volume == 0:
            return False, "nothing to settle in the open epoch"
        if self.max_volume_ap is not None and volume >= self.max_volume_ap:
            return True, f"volume {volume} AP >= {self.max_volume_ap}"
        if self.max_age_s is not None and age_s >= self.max_age_s:
            return True, f"open for {age_s} s >= {self.max_age_s} s"
        return False, f"open for {age_s} s with {volume} AP; policy: {self.max_age_s} s or {self.max_volume_ap} AP"


@dataclass
class CloseReport:
    epoch: int
    closed: bool
    reason: str
    before: list[Check]
    after: list[Check] = field(default_factory=list)
    record: EpochRecord | None = None
    value_per_point: int = 0
    tx_hash: str | None = None
    block: int | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.before) and all(c.ok for c in self.after)

    def to_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "closed": self.closed, "ok": self.ok, "reason": self.reason, "tx_hash": self.tx_hash,
                "block": self.block, "seconds": round(self.seconds, 3),
                "settlement": self.record.to_dict(self.value_per_point) if self.record else None,
                "before": [c.to_dict() for c in self.before], "after": [c.to_dict() for c in self.after]}


class CloseRefused(RuntimeError):
    def __init__(self, report: CloseReport):
        self.report = report
        failed = [c.name for c in report.before if not c.ok]
        super().__init__(f"epoch {report.epoch} not closed: derived positions differ from the chain: {failed[:5]}")


def open_epoch_status(alliance: Alliance, d: Derivation) -> dict[str, Any]:
    s = alliance.settlement
    opened = s.contract.functions.epochOpenedAt().call()
    now = alliance.chain.timestamp()
    return {"epoch": d.current_epoch, "opened_at": opened, "age_s": now - opened, "volume_ap": d.open_volume(),
            "open_issued": d.open_issued, "open_redeemed": d.open_redeemed}


def close_epoch(alliance: Alliance, settler: LocalAccount, store: Store, *, policy: EpochPolicy | None = None,
                force: bool = False, indexer: Indexer | None = None) -> CloseReport:
    """Index, prove the derivation equals the chain, close if due (or forced), index again, prove the
    close: every BrandSettled and the EpochClosed equal the derivation, pool = supply x value, and the
    contracts' storage equals the derivation after the close too. Raises CloseRefused (nothing sent)
    when the derivation disagrees with the chain before the close."""
    started = time.perf_counter()
    indexer = indexer or Indexer(alliance, store)
    indexer.run()
    value = alliance.manifest.value_per_point
    d = derive(store, value)
    before = d.checks() + verify_state(alliance, d)
    status = open_epoch_status(alliance, d)
    due, reason = (True, "forced") if force else (policy or EpochPolicy()).due(status["age_s"], status["volume_ap"])
    minimum = alliance.settlement.contract.functions.minEpochLength().call()
    if due and status["age_s"] < minimum:  # the contract would refuse it
        due, reason = False, f"open for {status['age_s']} s: the contracts close no epoch before {minimum} s"
    report = CloseReport(d.current_epoch, False, reason, before, value_per_point=value)
    if not report.ok:
        report.seconds = time.perf_counter() - started
        raise CloseRefused(report)
    if not due:
        report.seconds = time.perf_counter() - started
        return report
    receipt = alliance.settlement.close_epoch(alliance.transactor(settler))
    report.closed, report.tx_hash, report.block = True, "0x" + bytes(receipt["transactionHash"]).hex(), receipt["blockNumber"]
    indexer.run()
    d2 = derive(store, value)
    record = d2.epochs.get(report.epoch)
    report.record = record
    if record is None:
        report.after = [Check(f"epoch {report.epoch}: EpochClosed indexed", False, {"block": report.block})]
    else:
        report.after = record.checks(value) + [Check("events consistent", not d2.anomalies, {"anomalies": d2.anomalies[:20]})]
        report.after += verify_state(alliance, d2)
    report.seconds = time.perf_counter() - started
    return report


def epoch_summaries(d: Derivation) -> list[dict[str, Any]]:
    return [record.to_dict(d.value_per_point) for record in d.epochs.values()]


__all__ = ["Check", "CloseRefused", "CloseReport", "Derivation", "EpochPolicy", "EpochRecord", "close_epoch", "derive",
           "verify_state", "asdict"]
