"""THE feature definition of the alliance's propensity models, shared by training and scoring.

One function, :func:`read_features`, turns one brand's gateway database into a feature matrix at
an *as-of* time.  Training (the ``gateway`` data source of :mod:`federation.data`), evaluation,
the benchmarks and local scoring (:mod:`federation.scoring`) all call it, so a model is always
applied to exactly the features it was trained on.

What it reads, and from whom
----------------------------
* **Only the brand's own database** (the engine it is given; one gateway = one brand).
* **Only members whose consent is granted at the moment it runs** (``federated_training`` for
  training; ``marketing`` for campaign scoring), and only ``active`` members.  The consent check
  is a join against the ``consents`` table *inside every query that reads member data*, each
  time the function runs: nothing about consent is cached.  The caller gets back the ids of the
  members it read (``member_refs``), which stay inside the gateway / ClientApp.
* Only rows dated at or before the as-of time for features (no leakage from the future); labels
  (only available for an as-of in the past) from the rows after it.

Population: members enrolled at or before the as-of time with at least one purchase in the 365
days before it (a member with no purchase in a year has no RFM to speak of).

Features (all with fixed, documented transforms; no statistic of anybody's data, so every brand
encodes its rows alone)
-------------------------------------------------------------------------------------------
``recency``             log1p(days since the last purchase) / 6
``freq_30/90/365``      log1p(purchases in the last 30 / 90 / 365 days) / 3
``monetary_30/90/365``  log1p(net spend in major units in the window) / 10
``basket_365``          log1p(average net basket over 365 days) / 8
``activity_trend``      log((purchases in 30 d + 0.5) / (purchases in 365 d / 12 + 0.5)) / 2
                        (I-16: "visits down by half", negative when slowing down)
``tenure``              log1p(days since enrolment) / 7
``tier_silver``, ``tier_gold``   tier at the as-of time (tier change history)
``balance``             log1p(max(points balance at as-of, 0)) / 8 (sum of ledger entries)
``expiring_30``         log1p(points of lots expiring within 30 days after as-of, still open
                        at as-of) / 7
``exchanges_90/365``    log1p(exchanges of brand points into AP in the window) / 2
``redemptions_90/365``  log1p(AP redeemed here from other brands in the window) / 2
``alliance_recency``    log1p(days since the last exchange or redemption, 730 if none) / 6
``share_app``, ``share_online``, ``share_partner``   channel mix of the 365-day purchases
                        (store is the baseline)

Labels (:data:`TASKS`)
---------------------
``redeem``  the member takes part in a cross-brand redemption at this brand within 30 days after
            as-of: exchanges points into AP to spend at another brand, or redeems AP from another
            brand here (not failed);
``churn``   no purchase in the 90 days after as-of.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

FEATURE_NAMES: tuple[str, ...] = (
    "recency",
    "freq_30",
    "freq_90",
    "freq_365",
    "monetary_30",
    "monetary_90",
    "monetary_365",
    "basket_365",
    "activity_trend",
    "tenure",
    "tier_silver",
    "tier_gold",
    "balance",
    "expiring_30",
    "exchanges_90",
    "exchanges_365",
    "redemptions_90",
    "redemptions_365",
    "alliance_recency",
    "share_app",
    "share_online",
    "share_partner",
)
TASKS = ("redeem", "churn")
LABEL_DAYS = {"redeem": 30, "churn": 90}
TRAINING_PURPOSE = "federated_training"
MARKETING_PURPOSE = "marketing"


@dataclass
class FeatureFrame:
    """Features of the members read (one row each), with labels when the as-of is in the past."""

    as_of: datetime
    purpose: str
    member_ids: np.ndarray  # database ids (local)
    member_refs: list[str]  # the members read (local; never leave the gateway)
    X: np.ndarray  # float32 (n, len(FEATURE_NAMES))
    labels: dict[str, np.ndarray]  # task -> int64 (n,) ; empty when the label window is not over
    feature_names: list[str]

    def __len__(self) -> int:
        return len(self.member_refs)


def _aware(dt: datetime) -> datetime:
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def parse_as_of(value: Any) -> datetime:
    if isinstance(value, datetime):
        return _aware(value)
    return _aware(datetime.fromisoformat(str(value).replace("Z", "+00:00")))


def consented_members(conn: Any, purpose: str) -> dict[int, int]:
    """Active members whose consent for ``purpose`` is granted right now (a fresh query): member id ->
    seq of the consent-log entry that granted it (what a processing relying on it records)."""
    from sqlalchemy import select

    from gateway.models import Consent, Member

    q = (select(Member.id, Consent.log_seq).join(Consent, Consent.member_id == Member.id)
         .where(Consent.purpose == purpose, Consent.granted.is_(True), Member.status == "active"))
    return {int(m): int(seq) for m, seq in conn.execute(q)}


def read_features(engine: Any, as_of: Any, *, purpose: str = TRAINING_PURPOSE, with_labels: bool = True,
                  now: datetime | None = None) -> FeatureFrame:
    """Features of the brand's members consented to ``purpose`` (checked now), as of ``as_of``."""
    from sqlalchemy import and_, case, func, literal, select

    from gateway.models import (Consent, Exchange, LedgerEntry, LedgerTxn, LotDebit, Member, PointLot, Purchase,
                                Redemption, TierChange)

    T = parse_as_of(as_of)
    now = now or datetime.now(UTC)
    d30, d90, d365 = T - timedelta(days=30), T - timedelta(days=90), T - timedelta(days=365)
    with engine.connect() as conn:
        # The consented population, in the same snapshot as every read below: a CTE joined by
        # every query, so no row of a member without a granted consent is ever read.
        eligible = (
            select(Member.id.label("mid"), Member.member_ref.label("ref"), Member.enrolled_at.label("enrolled_at"))
            .join(Consent, and_(Consent.member_id == Member.id, Consent.purpose == purpose, Consent.granted.is_(True)))
            .where(Member.status == "active", Member.enrolled_at <= T)
            .cte("eligible")
        )
        P = Purchase
        net = P.amount_minor - P.refunded_minor

        def win(since: datetime, what: Any) -> Any:
            return func.sum(case((P.occurred_at > since, what), else_=literal(0)))

        rfm = conn.execute(
            select(
                P.member_id, func.count(), win(d30, 1), win(d90, 1), func.sum(net), win(d30, net), win(d90, net),
                func.max(P.occurred_at), win(d365, case((P.channel == "app", 1), else_=0)),
                win(d365, case((P.channel == "online", 1), else_=0)), win(d365, case((P.channel == "partner", 1), else_=0)),
            )
            .join(eligible, eligible.c.mid == P.member_id)
            .where(P.occurred_at > d365, P.occurred_at <= T)
            .group_by(P.member_id)
        ).all()
        if not rfm:
            return FeatureFrame(T, purpose, np.zeros(0, np.int64), [], np.zeros((0, len(FEATURE_NAMES)), np.float32), {},
                                list(FEATURE_NAMES))
        ids = np.asarray([r[0] for r in rfm], dtype=np.int64)
        pos = {int(m): k for k, m in enumerate(ids)}
        n = len(ids)
        A = np.asarray([[r[1], r[2], r[3], r[4], r[5], r[6], r[8], r[9], r[10]] for r in rfm], dtype=np.float64)
        last = np.asarray([(T - _aware(r[7])).total_seconds() / 86400.0 for r in rfm])
        meta = {int(r[0]): (r[1], _aware(r[2])) for r in conn.execute(select(eligible.c.mid, eligible.c.ref, eligible.c.enrolled_at))}

        def per_member(query: Any, cols: int = 1) -> np.ndarray:
            out = np.zeros((n, cols))
            for row in conn.execute(query):
                k = pos.get(int(row[0]))
                if k is not None:
                    out[k] = [0.0 if v is None else float(v) for v in row[1:]]
            return out

        balance = per_member(
            select(LedgerEntry.member_id, func.sum(LedgerEntry.amount))
            .join(LedgerTxn, LedgerTxn.id == LedgerEntry.txn_id)
            .join(eligible, eligible.c.mid == LedgerEntry.member_id)
            .where(LedgerEntry.account == "member", LedgerTxn.created_at <= T)
            .group_by(LedgerEntry.member_id)
        )[:, 0]
        debited = (
            select(LotDebit.lot_id.label("lot_id"), func.sum(LotDebit.amount).label("taken"))
            .join(LedgerTxn, LedgerTxn.id == LotDebit.txn_id)
            .where(LedgerTxn.created_at <= T)
            .group_by(LotDebit.lot_id)
            .subquery()
        )
        expiring = per_member(
            select(PointLot.member_id, func.sum(PointLot.amount - func.coalesce(debited.c.taken, 0)))
            .join(eligible, eligible.c.mid == PointLot.member_id)
            .outerjoin(debited, debited.c.lot_id == PointLot.id)
            .where(PointLot.earned_at <= T, PointLot.expires_at > T, PointLot.expires_at <= T + timedelta(days=30))
            .group_by(PointLot.member_id)
        )[:, 0]
        last_tier = (
            select(TierChange.member_id.label("mid"), func.max(TierChange.changed_at).label("at"))
            .join(eligible, eligible.c.mid == TierChange.member_id)
            .where(TierChange.changed_at <= T)
            .group_by(TierChange.member_id)
            .subquery()
        )
        tiers = np.zeros((n, 2))
        for mid, to_tier in conn.execute(
            select(TierChange.member_id, TierChange.to_tier)
            .join(last_tier, and_(last_tier.c.mid == TierChange.member_id, last_tier.c.at == TierChange.changed_at))
        ):
            k = pos.get(int(mid))
            if k is not None:
                tiers[k] = [to_tier == "silver", to_tier == "gold"]

        def activity(model: Any, ok: Any, lo: datetime, hi: datetime) -> np.ndarray:
            return _activity(conn, model, ok, lo, hi, eligible, pos, n)

        ex_ok = Exchange.status != "failed"
        rd_ok = Redemption.status.in_(("confirmed", "pending"))
        ex90, ex365, ex_last = activity(Exchange, ex_ok, d90, T), *_activity(conn, Exchange, ex_ok, d365, T, eligible, pos, n, last=T)
        rd90, rd365, rd_last = activity(Redemption, rd_ok, d90, T), *_activity(conn, Redemption, rd_ok, d365, T, eligible, pos, n, last=T)
        labels: dict[str, np.ndarray] = {}
        if with_labels and T + timedelta(days=max(LABEL_DAYS.values())) <= now:
            hi30 = T + timedelta(days=LABEL_DAYS["redeem"])
            fut = activity(Exchange, ex_ok, T, hi30) + activity(Redemption, rd_ok, T, hi30)
            labels["redeem"] = (fut > 0).astype(np.int64)
            later = per_member(
                select(P.member_id, func.count()).join(eligible, eligible.c.mid == P.member_id)
                .where(P.occurred_at > T, P.occurred_at <= T + timedelta(days=LABEL_DAYS["churn"]))
                .group_by(P.member_id)
            )[:, 0]
            labels["churn"] = (later == 0).astype(np.int64)
    c365, c30, c90, m365, m30, m90, app, online, partner = (A[:, j] for j in range(9))
    tenure = np.asarray([(T - meta[int(m)][1]).total_seconds() / 86400.0 for m in ids])
    alliance_last = np.minimum(np.minimum(ex_last, rd_last), 730.0)
    X = np.column_stack([
        np.log1p(np.maximum(last, 0.0)) / 6.0,
        np.log1p(c30) / 3.0, np.log1p(c90) / 3.0, np.log1p(c365) / 3.0,
        np.log1p(np.maximum(m30, 0) / 100.0) / 10.0, np.log1p(np.maximum(m90, 0) / 100.0) / 10.0,
        np.log1p(np.maximum(m365, 0) / 100.0) / 10.0,
        np.log1p(np.maximum(m365, 0) / 100.0 / np.maximum(c365, 1.0)) / 8.0,
        np.log((c30 + 0.5) / (c365 / 12.0 + 0.5)) / 2.0,
        np.log1p(np.maximum(tenure, 0.0)) / 7.0,
        tiers[:, 0], tiers[:, 1],
        np.log1p(np.maximum(balance, 0.0)) / 8.0,
        np.log1p(np.maximum(expiring, 0.0)) / 7.0,
        np.log1p(ex90) / 2.0, np.log1p(ex365) / 2.0, np.log1p(rd90) / 2.0, np.log1p(rd365) / 2.0,
        np.log1p(alliance_last) / 6.0,
        app / np.maximum(c365, 1.0), online / np.maximum(c365, 1.0), partner / np.maximum(c365, 1.0),
    ]).astype(np.float32)
    assert X.shape[1] == len(FEATURE_NAMES)
    return FeatureFrame(T, purpose, ids, [meta[int(m)][0] for m in ids], X, labels, list(FEATURE_NAMES))


def _activity(conn: Any, model: Any, ok: Any, lo: datetime, hi: datetime, eligible: Any, pos: dict[int, int], n: int,
              last: datetime | None = None) -> Any:
    """Counts of ``model`` rows per member in (lo, hi]; with ``last``, also days since the latest."""
    from sqlalchemy import func, select

    cnt = np.zeros(n)
    since = np.full(n, 730.0)
    q = (select(model.member_id, func.count(), func.max(model.created_at))
         .join(eligible, eligible.c.mid == model.member_id)
         .where(ok, model.created_at > lo, model.created_at <= hi)
         .group_by(model.member_id))
    for mid, c, mx in conn.execute(q):
        k = pos.get(int(mid))
        if k is not None:
            cnt[k] = c
            if last is not None and mx is not None:
                since[k] = (last - _aware(mx)).total_seconds() / 86400.0
    return (cnt, since) if last is not None else cnt
