"""The brand's points liability (REQUIREMENTS P-52): what its members hold, where it came from and
where it went, at the brand's declared value, with breakage beside the requirements' benchmarks.

Every figure is a sum of the members' ledger entries by kind of posting, so the movements add up to
what is outstanding exactly, whatever happened: issued + received through the alliance - spent -
exchanged out - expired - clawed back - donated = outstanding (gifts move points between members and
net to zero; `given` says how many moved)."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ..models import LedgerEntry, LedgerTxn
from ..runtime import Gateway
from .ledger import MEMBER

# Kind of posting -> the movement it counts in (signed as the member sees it).
MOVEMENTS = {"earn": "issued", "welcome": "issued", "action": "issued", "alliance_redeem": "alliance_in",
             "reward": "spent", "reward_cancel": "spent", "burn": "spent", "burn_return": "spent",
             "exchange": "exchanged_out", "exchange_reversal": "exchanged_out", "expire": "expired", "clawback": "clawed_back",
             "donation": "donated", "gift_out": "gifts", "gift_in": "gifts"}
EXPIRY_BENCHMARK_BP = 800  # P-29: a rolling 12-month validity with reminders brought expiry down to 8%
CONSUMPTION_BENCHMARK_BP = 8_200  # P-10: 82% of points consumed


def _bp(part: int, whole: int) -> int | None:
    return None if whole <= 0 else part * 10_000 // whole


def report(session: Session, gw: Gateway) -> dict:
    sums = {m: 0 for m in ("issued", "alliance_in", "spent", "exchanged_out", "expired", "clawed_back", "donated", "gifts", "other")}
    given = 0
    rows = session.execute(select(LedgerTxn.kind, func.sum(LedgerEntry.amount)).join(LedgerTxn, LedgerTxn.id == LedgerEntry.txn_id)
                           .where(LedgerEntry.member_id.is_not(None), LedgerEntry.account == MEMBER).group_by(LedgerTxn.kind))
    for kind, amount in rows:
        sums[MOVEMENTS.get(kind, "other")] += int(amount)  # (int(): PostgreSQL sums BIGINT as NUMERIC)
        if kind == "gift_in":
            given = int(amount)
    outstanding = sum(sums.values())
    s = gw.settings
    minor = s.earn.currencies[s.earn.home_currency].minor_per_unit
    inflow = sums["issued"] + sums["alliance_in"]
    out = {k: -v for k, v in sums.items() if k in ("spent", "exchanged_out", "expired", "clawed_back", "donated")}
    return {
        "brand_id": s.brand_id, "currency": s.earn.home_currency, "points_per_currency_unit": s.points_per_currency_unit,
        "issued": sums["issued"], "alliance_in": sums["alliance_in"], **out, "given": given, "other": sums["other"],
        "outstanding": outstanding,
        # At the declared value (P-15), in minor units, rounded down: what the points pay at the till.
        "outstanding_value_minor": outstanding * minor // s.points_per_currency_unit,
        "breakage_bp": _bp(out["expired"], inflow), "expiry_benchmark_bp": EXPIRY_BENCHMARK_BP,
        "consumption_bp": _bp(out["spent"] + out["exchanged_out"] + out["donated"], inflow),
        "consumption_benchmark_bp": CONSUMPTION_BENCHMARK_BP,
    }
