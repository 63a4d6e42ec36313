"""Population simulator: fills brand gateways' databases with a seeded, realistic alliance.

Every experiment of the federation (training, scoring, benchmarks) runs on a population generated
here, from a documented behavioural model and a seed, so it is reproducible bit for bit.  The rows
are written through the gateway's own data layer: its SQLAlchemy tables (``gateway.models``), in
bulk with SQLAlchemy Core (millions of rows at the default size), after the gateway's migrations
created the schema.  Consents are real: every grant and withdrawal is a receipt signed with the
brand's key and appended to the brand's hash-chained consent log, exactly as
``gateway.services.consent.set_consent`` does it (same receipt builder, same log chain).

What is *not* simulated, on purpose:

* **No PII.** Simulated members are not a real enrolment: they get a random ``member_ref`` and no
  ``member_identifiers`` / ``pii_fields`` rows and no data key (encrypting a fake name for 100,000
  members through the vault would cost minutes and teach the models nothing).  They cannot log
  in; everything else (ledger, consents, purchases, tiers, alliance activity) is complete.
* Exchanges and redemptions are recorded as *confirmed history* (``status = confirmed``, no
  ``tx_hash``): they were not minted on the chain the test alliance runs.
* History before the window is not simulated (members enrolled earlier have tenure, but their
  points start at zero at the window start); no refunds, actions or daily caps.

Alliance and brands
-------------------
Five brands of different kind and size (``BRAND_KINDS``): a big grocery chain, a fashion
retailer, an airline, and two small, data-starved brands (a cafe and a cinema, 350 and 250
members at the default size).  Persons are drawn once for the alliance; each brand enrols
a sample of them weighted by the person's affinity to the brand's kind, so many persons are
members of several brands, and brands see different (non-IID) slices of the population.

The behavioural model (the ground truth)
----------------------------------------
Window: ``DAYS`` = 549 days (18 months) from ``START`` (2024-07-01 UTC).

Person ``p`` has latent traits, all N(0, 1) unless said: engagement ``e_p``; alliance affinity
``r_p`` (taste for exchanging / redeeming points across brands); price level ``m_p`` ~ N(0, 0.4);
digital preference ``d_p``; and kind affinities ``k_p`` (one per brand kind).

Membership ``i`` (person ``p`` at brand ``b`` of kind ``k``):

* enrolment: 60 % before the window (tenure up to 5 years), 40 % uniformly during the first 500
  days;
* purchase rate per day ``lambda_i = base_k * exp(0.7 e_p + 0.5 eps_i - 0.25)``
  (``base_k``: grocery 1/14, cafe 1/10, cinema 1/40, fashion 1/60, airline 1/120), times the
  seasonality ``s_k(day) = 1 + A_k cos(2 pi (doy - peak_k) / 365)`` (grocery peaks at new year,
  fashion in November, airline in summer, cinema in summer, cafe in winter), times
  ``1.25`` on the brand's member day (the 8th);
* churners: with probability ``sigmoid(-1.0 - 0.8 e_p + c_k)`` the membership churns at an onset
  day drawn uniformly from enrolment to 180 days after the window; activity decays
  ``exp(-max(0, day - (onset - 60)) / 30)``: a 60-day decline before the onset, near silence
  after it (the I-16 signal: "visits down by half within 30 days");
* purchase count per day ~ Poisson(rate), amounts log-normal around the kind's basket
  (grocery 80, cafe 35, cinema 90, fashion 450, airline 2,200 in major units) times
  ``exp(m_p)``; channel from ``d_p`` (app / online vs store / partner);
* points = floor(amount in major units x tier multiplier) (member 100 %, silver 125 %, gold 150 %),
  a 100-point welcome for members enrolled in the window; lots expire 365 days after earning
  (FIFO, as the gateway's ledger does; expiries are posted);
* tiers are re-qualified at each month start on the last 365 days (the gateway's default
  thresholds: silver at 2,000 spend or 12 purchases, gold at 10,000 or 48);
* exchange (brand points -> AP) hazard per day at brand ``b``:
  ``h = 0.02 * sigmoid(-3.2 + 1.3 r_p + 0.4 e_p + 0.9 log1p(balance / 500) + 0.8 [points expire
  within ~30 days] + 0.5 tier + 0.7 [exchanged in the last 60 days] + 0.8 [alliance campaign])``,
  only with a balance of at least 200 points, for 60 % of the balance (whole AP at the brand's
  rate); alliance campaigns run in the first half of December and of June;
* cross-brand redemption: AP from an exchange at brand A are redeemed within 1-20 days with
  probability 0.75 at another brand of the alliance where the person is a member (chosen at
  random; the ``Redemption`` row and an ``alliance_in`` credit at that brand); persons with no other
  membership spend them outside the alliance;
* consents (besides ``loyalty_core``, on contract): ``federated_training`` granted with
  probability ``sigmoid(0.9 + 0.3 e_p)`` (~70 %), 4 % of grants withdrawn later;
  ``marketing`` ``sigmoid(-0.2 + 0.4 e_p)`` (~45 %); ``alliance_exchange`` for everyone who
  exchanged or redeemed plus 20 % of the rest.

Labels are *not* stored; they are read from the rows by :mod:`federation.features`
(cross-brand redemption within 30 days of an as-of time; churn = no purchase in the next 90 days).
Training reads features as of ``TRAIN_AS_OF`` (one year of history); the held-out rows are the
members as of the rolling dates of :func:`held_out_as_ofs` (redeem: 5 monthly windows, churn: 1).

Randomness: persons from ``[seed, 101]``; each brand from its own stream, ``[seed, stream, hash
of the brand id]`` (:func:`brand_rng`), so a brand's members do not depend on which other brands
are simulated, and no two brands share a stream.

Sizes (memberships): ``default`` = 52,000 + 28,000 + 20,000 + 350 + 250 = 100,600 members over
5 brands (75,000 persons); ``small`` = 1,500 + 900 + 600 + 250 + 200 (for tests); ``medium`` =
12,000 + 7,000 + 5,000 + 350 + 250 (faster benchmarks).
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections import defaultdict, deque
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

START = datetime(2024, 7, 1, tzinfo=UTC)
DAYS = 549
END = START + timedelta(days=DAYS)
#: Default as-of of training features (one year of history), and of the held-out evaluation.
TRAIN_AS_OF = START + timedelta(days=365)
EVAL_AS_OF = TRAIN_AS_OF + timedelta(days=90)
#: Version of the behavioural model: the same seed gives the same alliance only within one version
#: (2: per-brand random streams keyed by the whole brand id).
SCHEMA = "alliance.population/2"


def held_out_as_ofs(label_days: int, train_as_of: datetime = TRAIN_AS_OF, step_days: int = 30) -> list[datetime]:
    """As-of dates of the rolling held-out windows of a task whose label looks ``label_days`` ahead.

    The first is ``train_as_of + label_days`` (every training label is observed by then, as in
    production), then one every ``step_days`` while the label window still ends inside the
    simulated history: 5 windows for the 30-day redeem label, 1 for the 90-day churn label.
    """
    out, t = [], train_as_of + timedelta(days=label_days)
    while t + timedelta(days=label_days) <= END:
        out.append(t)
        t += timedelta(days=step_days)
    return out

PURPOSE_FT = "federated_training"
PURPOSE_MKT = "marketing"


@dataclass(frozen=True)
class BrandKind:
    brand_id: str
    kind: str
    base_rate: float  # purchases per day of an average member
    basket: float  # mean amount in major units
    season_amp: float
    season_peak_doy: int
    churn_shift: float
    rate: int  # brand points per AP
    digital: float  # shift of the app/online share


BRAND_KINDS: tuple[BrandKind, ...] = (
    BrandKind("grocery", "grocery", 1 / 14, 80.0, 0.25, 15, 0.0, 10, -0.5),
    BrandKind("fashion", "fashion", 1 / 60, 450.0, 0.45, 320, 0.2, 5, 0.6),
    BrandKind("airline", "airline", 1 / 120, 2200.0, 0.35, 200, -0.2, 20, 1.2),
    BrandKind("cafe", "cafe", 1 / 10, 35.0, 0.2, 10, 0.3, 8, 0.2),
    BrandKind("cinema", "cinema", 1 / 40, 90.0, 0.4, 210, 0.1, 6, 0.4),
)

SIZES: dict[str, dict[str, Any]] = {
    "default": {"persons": 75_000, "members": (52_000, 28_000, 20_000, 350, 250)},
    "medium": {"persons": 18_000, "members": (12_000, 7_000, 5_000, 350, 250)},
    "small": {"persons": 2_500, "members": (1_500, 900, 600, 250, 200)},
    "tiny": {"persons": 700, "members": (400, 250, 200, 150, 120)},
}

TIERS = (("member", 0, 0, 100), ("silver", 200_000, 12, 125), ("gold", 1_000_000, 48, 150))
CHANNELS = ("store", "online", "app", "partner")
CAMPAIGN_DAYS: tuple[tuple[int, int], ...] = ()  # filled below (day ranges of alliance campaigns)


def _campaign_mask() -> np.ndarray:
    mask = np.zeros(DAYS, dtype=bool)
    for d in range(DAYS):
        dt = START + timedelta(days=d)
        if dt.month in (12, 6) and dt.day <= 15:
            mask[d] = True
    return mask


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def brand_rng(seed: int, stream: int, brand_id: str) -> np.random.Generator:
    """A brand's own random stream, from the run seed and a stable hash of the whole brand id.

    Neither the brand's position in the alliance nor a letter of its name: two brands never
    share a stream, and a brand draws the same behaviour whichever other brands are simulated.
    """
    digest = int.from_bytes(hashlib.sha256(brand_id.encode()).digest()[:8], "big")
    return np.random.default_rng([seed, stream, digest])


# --------------------------------------------------------------------------- generation (numpy)


@dataclass
class BrandEvents:
    """Everything that happened at one brand, before it becomes ledger rows."""

    spec: BrandKind
    person: np.ndarray  # membership -> person index
    enrol_day: np.ndarray  # int, negative = before the window
    churn_onset: np.ndarray  # float day, inf = never
    ft_consent: np.ndarray  # 0 none, 1 granted, 2 granted then withdrawn
    ft_withdraw_day: np.ndarray
    mkt_consent: np.ndarray
    ax_consent: np.ndarray
    consent_day: np.ndarray
    birth_month: np.ndarray
    # purchases
    p_member: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    p_day: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float64))  # fractional day (time of day)
    p_amount: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # minor units
    p_channel: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int8))
    p_tier_pct: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    # tier changes: (member, day, from, to)
    tier_changes: list[tuple[int, int, int, int]] = field(default_factory=list)
    final_tier: np.ndarray | None = None
    tier_since_day: np.ndarray | None = None
    # exchanges: (member, day, ap, brand_points_requested)
    exchanges: list[tuple[int, float, int]] = field(default_factory=list)
    # redemptions received: (member, day, ap)
    redemptions: list[tuple[int, float, int]] = field(default_factory=list)


@dataclass
class Population:
    seed: int
    size: str
    brands: list[BrandEvents]
    n_persons: int


def _season(spec: BrandKind) -> np.ndarray:
    doy = np.array([(START + timedelta(days=d)).timetuple().tm_yday for d in range(DAYS)], dtype=float)
    s = 1.0 + spec.season_amp * np.cos(2 * np.pi * (doy - spec.season_peak_doy) / 365.0)
    dom = np.array([(START + timedelta(days=d)).day for d in range(DAYS)])
    return s * np.where(dom == 8, 1.25, 1.0)


def generate(seed: int = 7, size: str = "default", brands: list[str] | None = None) -> Population:
    """Draw the whole alliance's behaviour (numpy only; nothing written)."""
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; one of {sorted(SIZES)}")
    plan = SIZES[size]
    wanted = [k for k in BRAND_KINDS if brands is None or k.brand_id in brands]
    if brands is not None and len(wanted) != len(brands):
        raise ValueError(f"unknown brands in {brands}; known: {[k.brand_id for k in BRAND_KINDS]}")
    rng = np.random.default_rng([seed, 101])
    n_p = int(plan["persons"])
    e = rng.normal(size=n_p)
    r = rng.normal(size=n_p)
    m = rng.normal(0.0, 0.4, n_p)
    d = rng.normal(size=n_p)
    kaff = rng.normal(size=(n_p, len(BRAND_KINDS)))
    campaign = _campaign_mask()
    out: list[BrandEvents] = []
    sizes = dict(zip([k.brand_id for k in BRAND_KINDS], plan["members"], strict=True))
    for bidx, spec in enumerate(BRAND_KINDS):
        if spec not in wanted:
            continue
        brng = brand_rng(seed, 202, spec.brand_id)
        n = sizes[spec.brand_id]
        w = np.exp(1.0 * kaff[:, bidx] + 0.3 * e)
        person = brng.choice(n_p, size=n, replace=False, p=w / w.sum())
        person.sort()
        pe, pr = e[person], r[person]
        before = brng.random(n) < 0.6
        enrol = np.where(before, -brng.integers(1, 5 * 365, n), brng.integers(0, 500, n))
        churner = brng.random(n) < _sigmoid(-1.0 - 0.8 * pe + spec.churn_shift)
        onset = np.where(churner, brng.uniform(np.maximum(enrol, 0), DAYS + 180), np.inf)
        lam = spec.base_rate * np.exp(0.7 * pe + 0.5 * brng.normal(size=n) - 0.25)
        season = _season(spec)
        p_app = _sigmoid(d[person] + spec.digital)
        ft = brng.random(n) < _sigmoid(0.9 + 0.3 * pe)
        ft_wd = ft & (brng.random(n) < 0.04)
        consent_day = np.maximum(enrol, 0)
        ev = BrandEvents(
            spec=spec, person=person, enrol_day=enrol, churn_onset=onset,
            ft_consent=np.where(ft_wd, 2, ft.astype(int)),
            ft_withdraw_day=np.where(ft_wd, brng.integers(np.minimum(consent_day + 1, DAYS - 1), DAYS), -1),
            mkt_consent=(brng.random(n) < _sigmoid(-0.2 + 0.4 * pe)).astype(int),
            ax_consent=np.zeros(n, dtype=int),
            consent_day=consent_day,
            birth_month=brng.integers(1, 13, n),
        )
        # ---- daily simulation
        tier = np.zeros(n, dtype=np.int64)
        tier_since = np.minimum(enrol, 0).astype(np.int64)
        month_spend = np.zeros((19, n))
        month_cnt = np.zeros((19, n))
        buckets = np.zeros((19, n))  # points earned per month, remaining (approximate FIFO for the hazard)
        last_exchange = np.full(n, -10_000)
        pm, pdays, pamt, pch, ptier = [], [], [], [], []
        for day in range(DAYS):
            dt = START + timedelta(days=day)
            month = (dt.year - START.year) * 12 + dt.month - START.month
            if dt.day == 1 and day > 0:
                # expire the bucket earned 12 months ago, re-qualify tiers on the last 12 months
                if month >= 12:
                    buckets[month - 12] = 0.0
                lo = max(0, month - 12)
                spend = month_spend[lo:month].sum(axis=0)
                cnt = month_cnt[lo:month].sum(axis=0)
                new_tier = np.zeros(n, dtype=np.int64)
                for t, (_, smin, cmin, _) in enumerate(TIERS):
                    if t and True:
                        new_tier = np.where((spend >= smin) | (cnt >= cmin), t, new_tier)
                enrolled = enrol <= day
                changed = np.flatnonzero((new_tier != tier) & enrolled)
                for i in changed:
                    ev.tier_changes.append((int(i), day, int(tier[i]), int(new_tier[i])))
                tier = np.where(enrolled, new_tier, tier)
                tier_since[changed] = day
            active = enrol <= day
            decay = np.exp(-np.maximum(0.0, day - (onset - 60.0)) / 30.0)
            rate = lam * season[day] * decay * active
            k = brng.poisson(rate)
            buyers = np.flatnonzero(k)
            if len(buyers):
                reps = np.minimum(k[buyers], 3)
                idx = np.repeat(buyers, reps)
                amt = np.exp(np.log(spec.basket) + m[person[idx]] + 0.45 * brng.normal(size=len(idx)) - 0.1)
                minor = np.maximum(100, np.round(amt * 100)).astype(np.int64)
                ch = np.where(brng.random(len(idx)) < p_app[idx], np.where(brng.random(len(idx)) < 0.6, 2, 1),
                              np.where(brng.random(len(idx)) < 0.9, 0, 3))
                pct = np.asarray([TIERS[t][3] for t in range(3)])[tier[idx]]
                pts = (minor // 100) * pct // 100
                pm.append(idx)
                pdays.append(day + np.sort(brng.uniform(0.35, 0.9, len(idx))))
                pamt.append(minor)
                pch.append(ch.astype(np.int8))
                ptier.append(pct)
                np.add.at(month_spend[month], idx, minor)
                np.add.at(month_cnt[month], idx, 1)
                np.add.at(buckets[month], idx, pts)
            # welcome points on in-window enrolment
            new = np.flatnonzero(enrol == day)
            if len(new):
                buckets[month, new] += 100
            # exchanges
            bal = buckets.sum(axis=0)
            cand = np.flatnonzero(bal >= 200)
            if len(cand):
                expiring = buckets[month - 11, cand] > 0 if month >= 11 else np.zeros(len(cand), bool)
                z = (-3.2 + 1.3 * pr[cand] + 0.4 * pe[cand] + 0.9 * np.log1p(bal[cand] / 500.0) + 0.8 * expiring
                     + 0.5 * tier[cand] + 0.7 * (day - last_exchange[cand] <= 60) + 0.8 * campaign[day])
                h = 0.02 * _sigmoid(z) * decay[cand] ** 0.5
                go = cand[brng.random(len(cand)) < h]
                for i in go:
                    ap = int(0.6 * bal[i]) // spec.rate
                    if ap <= 0:
                        continue
                    take = ap * spec.rate
                    for mm in range(max(0, month - 12), month + 1):  # FIFO over monthly buckets
                        t = min(take, buckets[mm, i])
                        buckets[mm, i] -= t
                        take -= t
                        if take <= 0:
                            break
                    last_exchange[i] = day
                    ev.exchanges.append((int(i), day + float(brng.uniform(0.3, 0.95)), ap))
        if pm:
            ev.p_member = np.concatenate(pm)
            ev.p_day = np.concatenate(pdays)
            ev.p_amount = np.concatenate(pamt)
            ev.p_channel = np.concatenate(pch)
            ev.p_tier_pct = np.concatenate(ptier)
        ev.final_tier = tier
        ev.tier_since_day = tier_since
        out.append(ev)
    # ---- cross-brand redemptions: AP from an exchange at one brand redeemed at another brand of the person
    member_of: dict[int, list[tuple[int, int]]] = defaultdict(list)  # person -> [(brand pos, membership)]
    for bpos, ev in enumerate(out):
        for i, p in enumerate(ev.person):
            member_of[int(p)].append((bpos, i))
    xrng = np.random.default_rng([seed, 303])
    for bpos, ev in enumerate(out):
        for i, day, ap in ev.exchanges:
            others = [(b, j) for b, j in member_of[int(ev.person[i])] if b != bpos]
            if not others or xrng.random() >= 0.75:
                continue
            b, j = others[int(xrng.integers(len(others)))]
            rday = day + float(xrng.uniform(1, 20))
            tgt = out[b]
            if rday < DAYS and tgt.enrol_day[j] <= rday:
                tgt.redemptions.append((j, rday, ap))
    for ev in out:
        n = len(ev.person)
        active_x = np.zeros(n, dtype=bool)
        for i, _, _ in ev.exchanges:
            active_x[i] = True
        for i, _, _ in ev.redemptions:
            active_x[i] = True
        xr = brand_rng(seed, 404, ev.spec.brand_id)
        ev.ax_consent = (active_x | (xr.random(n) < 0.2)).astype(int)
    return Population(seed=seed, size=size, brands=out, n_persons=n_p)


# --------------------------------------------------------------------------- writing (SQLAlchemy Core)


def _at(day: float) -> datetime:
    return START + timedelta(days=float(day))


def _wallet(seed: int, person: int) -> str:
    return "0x" + hashlib.sha256(f"alliance-sim-wallet:{seed}:{person}".encode()).hexdigest()[:40]


def _uuid(rng: np.random.Generator) -> str:
    return str(uuid.UUID(bytes=rng.bytes(16), version=4))


def write_brand(gw: Any, ev: BrandEvents, seed: int, chunk: int = 50_000) -> dict[str, int]:
    """Write one brand's members, consents, purchases, ledger, tiers and alliance activity.

    ``gw`` is a :class:`gateway.runtime.Gateway` (its engine, settings and signing key).  Ids are
    assigned here, in bulk, after the rows already in the database (the demo adds simulated history
    to gateways that already serve live members); the consent log continues the existing chain.
    """
    from sqlalchemy import func, select

    from gateway import models as gm
    from gateway.db import ids_taken, insert_many
    from gateway.services import consent as consent_svc
    from privacy.hashchain import HashChain
    from privacy.receipts import LawfulBasis, Purpose, jcs_bytes, sign_receipt

    rng = brand_rng(seed, 505, ev.spec.brand_id)
    spec = ev.spec
    n = len(ev.person)
    pref = f"{seed:x}-{spec.brand_id}"
    with gw.engine.begin() as conn:
        if conn.scalar(select(func.count()).where(gm.Purchase.idempotency_key.like(f"sim:{pref}:%"))):
            raise RuntimeError(f"{spec.brand_id}: this population (seed {seed}) is already in the gateway database")
        next_id = {t: int(conn.scalar(select(func.coalesce(func.max(t.c.id), 0)))) + 1
                   for t in (gm.Member.__table__, gm.Purchase.__table__, gm.LedgerTxn.__table__,
                             gm.LedgerEntry.__table__, gm.PointLot.__table__)}
        last_log = conn.execute(select(gm.ConsentLogEntry.seq, gm.ConsentLogEntry.entry_hash)
                                .order_by(gm.ConsentLogEntry.seq.desc()).limit(1)).first()
    member_ids = np.arange(n) + next_id[gm.Member.__table__]
    refs = [_uuid(rng) for _ in range(n)]
    # ------------------------------------------------ ledger (per member, FIFO lots, exact expiry)
    events: dict[int, list[tuple[float, int, str, int, int]]] = defaultdict(list)  # member -> (t, order, kind, amount, key)
    order_p = np.lexsort((ev.p_day, ev.p_member))
    pts_all = (ev.p_amount // 100) * ev.p_tier_pct // 100
    for j in order_p:
        events[int(ev.p_member[j])].append((float(ev.p_day[j]), 1, "earn", int(pts_all[j]), int(j)))
    for i in np.flatnonzero((ev.enrol_day >= 0)):
        events[int(i)].append((float(ev.enrol_day[i]) + 0.3, 0, "welcome", 100, -1))
    for k, (i, day, ap) in enumerate(ev.exchanges):
        events[i].append((day, 2, "exchange", ap, k))
    for k, (i, day, ap) in enumerate(ev.redemptions):
        events[i].append((day, 1, "alliance_redeem", ap * spec.rate, k))
    txns, entries, lots, debits = [], [], [], []
    purchase_txn = np.zeros(len(ev.p_member), dtype=np.int64)
    exch_rows, red_rows = [], []
    balance = np.zeros(n, dtype=np.int64)
    wallet = [None] * n
    tid, eid, lid = next_id[gm.LedgerTxn.__table__], next_id[gm.LedgerEntry.__table__], next_id[gm.PointLot.__table__]

    def post(mid: int, kind: str, amount: int, counter: str, at: datetime, ref: str | None) -> int:
        nonlocal tid, eid
        txns.append({"id": tid, "kind": kind, "member_id": mid, "ref": ref, "created_at": at})
        entries.append({"id": eid, "txn_id": tid, "account": "member", "member_id": mid, "amount": amount})
        entries.append({"id": eid + 1, "txn_id": tid, "account": counter, "member_id": None, "amount": -amount})
        eid += 2
        tid += 1
        return tid - 1

    for i in range(n):
        mid = int(member_ids[i])
        # Every credit expires 365 days after it is posted and postings come in time order, so the
        # open lots are already in expiry order: a deque, oldest first (FIFO debits and expiries).
        open_lots: deque[list] = deque()  # [lot_id, remaining, expires_day, row index]
        evs = sorted(events.get(i, []))

        def expire_until(t: float) -> None:
            while open_lots and open_lots[0][2] <= t:
                lot = open_lots.popleft()
                if lot[1] > 0:
                    txid = post(mid, "expire", -lot[1], "expired", _at(lot[2]), f"lot:{lot[0]}")
                    debits.append({"txn_id": txid, "lot_id": lot[0], "amount": lot[1]})
                    balance[i] -= lot[1]
                    lots[lot[3]]["remaining"] = 0
                    lot[1] = 0

        for t, _, kind, amount, key in evs:
            expire_until(t)
            at = _at(t)
            if kind in ("earn", "welcome", "alliance_redeem"):
                if amount <= 0:
                    continue
                counter = "alliance_in" if kind == "alliance_redeem" else "issued"
                ref = {"earn": f"sim-purchase-{key}", "welcome": "welcome"}.get(kind, f"sim-redemption-{key}")
                txid = post(mid, kind, amount, counter, at, ref)
                lots.append({"id": lid, "member_id": mid, "txn_id": txid, "amount": amount, "remaining": amount,
                             "earned_at": at, "expires_at": _at(t + 365)})
                open_lots.append([lid, amount, t + 365, len(lots) - 1])
                lid += 1
                balance[i] += amount
                if kind == "earn":
                    purchase_txn[key] = txid
                elif kind == "alliance_redeem":
                    wallet[i] = _wallet(seed, int(ev.person[i]))
                    red_rows.append((key, mid, ev.redemptions[key][2], txid, at, wallet[i]))
            else:  # exchange: debit FIFO from unexpired lots, capped at what is available
                available = sum(lot[1] for lot in open_lots)
                ap = min(amount, available // spec.rate)
                if ap <= 0:
                    continue
                take = ap * spec.rate
                ref = hashlib.sha256(f"sim-exchange:{seed}:{spec.brand_id}:{key}".encode()).hexdigest()
                txid = post(mid, "exchange", -take, "alliance_out", at, ref)
                while take:
                    lot = open_lots[0]
                    got = min(lot[1], take)
                    lot[1] -= got
                    take -= got
                    debits.append({"txn_id": txid, "lot_id": lot[0], "amount": got})
                    lots[lot[3]]["remaining"] = lot[1]
                    if lot[1] == 0:
                        open_lots.popleft()
                balance[i] -= ap * spec.rate
                wallet[i] = _wallet(seed, int(ev.person[i]))
                exch_rows.append((key, mid, ap, txid, at, ref, wallet[i]))
        expire_until(DAYS)
    # ------------------------------------------------ members
    tiers = ev.final_tier if ev.final_tier is not None else np.zeros(n, dtype=np.int64)
    counts = np.bincount(ev.p_member, minlength=n) if len(ev.p_member) else np.zeros(n, dtype=np.int64)
    member_rows = [{
        "id": int(member_ids[i]), "member_ref": refs[i], "status": "active", "enrolled_at": _at(float(ev.enrol_day[i])),
        "jurisdiction": "CN", "birth_month": int(ev.birth_month[i]), "passphrase_hash": None,
        "tier": TIERS[int(tiers[i])][0], "tier_since": _at(float(max(ev.tier_since_day[i], ev.enrol_day[i]))) if ev.tier_since_day is not None else _at(float(ev.enrol_day[i])),
        "downgrade_due_at": None, "balance": int(balance[i]), "purchase_count": int(counts[i]),
        "earned_day": None, "earned_today": 0, "wallet_address": wallet[i], "erased_at": None,
    } for i in range(n)]
    tier_rows = [{"member_id": int(member_ids[i]), "from_tier": TIERS[a][0], "to_tier": TIERS[b][0],
                  "reason": "requalification (simulated)", "changed_at": _at(day)} for i, day, a, b in ev.tier_changes]
    # ------------------------------------------------ consents: signed receipts on the hash-chained consent log
    prev_seq, prev_hash = (last_log.seq, last_log.entry_hash) if last_log else (-1, "00" * 32)
    log_rows, consent_rows = [], []
    basis_channel = "app"
    checked = [False]

    class _M:  # the receipt builder reads member_ref and jurisdiction only
        __slots__ = ("member_ref", "jurisdiction")

    def grant(i: int, purpose: Purpose, granted: bool, day: float, basis: LawfulBasis) -> None:
        nonlocal prev_seq, prev_hash
        mm = _M()
        mm.member_ref, mm.jurisdiction = refs[i], "CN"
        at = _at(day)
        # Simulated history is signed in the earlier receipt format (it still verifies, and its flat
        # JCS is built fast below); what a gateway issues today is a Kantara JWS receipt.
        signed = sign_receipt(consent_svc.receipt_facts(gw, mm, purpose, granted, basis, basis_channel, at), gw.signing_key)
        # The consent log stores RFC 8785 JSON of the signed receipt and hashes RFC 8785 of
        # {"payload", "seq"}.  A receipt is a flat object of plain ASCII strings, for which JCS is
        # built directly (privacy.receipts.jcs_bytes); the first entry is checked against the
        # general path (privacy.hashchain), so both always agree.
        payload = ('{"alg":"Ed25519","receipt":' + jcs_bytes(signed.receipt.to_dict()).decode()
                   + ',"signature":"' + signed.signature + '"}')
        seq = prev_seq + 1
        body = ('{"payload":' + payload + ',"seq":' + str(seq) + "}").encode()
        entry_hash = hashlib.sha256(bytes.fromhex(prev_hash) + body).hexdigest()
        if not checked[0]:
            ref_chain = HashChain(head=(prev_seq, prev_hash) if prev_seq >= 0 else None)
            ref_entry = ref_chain.append(json.loads(signed.to_json()))
            assert ref_entry.entry_hash == entry_hash and ref_entry.to_row()["payload_json"] == payload, "JCS fast path disagrees"
            checked[0] = True
        log_rows.append({"seq": seq, "payload": payload, "prev_hash": prev_hash,
                         "entry_hash": entry_hash, "created_at": at, "member_id": int(member_ids[i])})
        prev_seq, prev_hash = seq, entry_hash
        consent_rows_by_key[(i, purpose.value)] = {
            "member_id": int(member_ids[i]), "purpose": purpose.value, "granted": granted,
            "receipt_id": signed.receipt.receipt_id, "log_seq": seq, "updated_at": at}

    consent_rows_by_key: dict[tuple[int, str], dict] = {}
    pending: list[tuple[float, int, Purpose, bool, LawfulBasis]] = []
    for i in range(n):
        cd = float(ev.consent_day[i]) + 0.2 if ev.enrol_day[i] >= 0 else float(ev.enrol_day[i]) + 0.2
        pending.append((cd, i, Purpose.LOYALTY_CORE, True, LawfulBasis.CONTRACT))
        if ev.ft_consent[i]:
            pending.append((cd + 0.001, i, Purpose.FEDERATED_TRAINING, True, LawfulBasis.CONSENT))
            if ev.ft_consent[i] == 2:
                pending.append((float(ev.ft_withdraw_day[i]) + 0.5, i, Purpose.FEDERATED_TRAINING, False, LawfulBasis.CONSENT))
        if ev.mkt_consent[i]:
            pending.append((cd + 0.002, i, Purpose.MARKETING, True, LawfulBasis.CONSENT))
        if ev.ax_consent[i]:
            pending.append((cd + 0.003, i, Purpose.ALLIANCE_EXCHANGE, True, LawfulBasis.CONSENT))
    pending.sort(key=lambda x: (x[0], x[1]))
    for day, i, purpose, granted, basis in pending:
        grant(i, purpose, granted, day, basis)
    consent_rows = list(consent_rows_by_key.values())
    # ------------------------------------------------ purchases, exchanges, redemptions
    first_purchase = next_id[gm.Purchase.__table__]
    purchase_rows = [{
        "id": first_purchase + j, "purchase_ref": f"sim-{pref}-{j}"[:36], "idempotency_key": f"sim:{pref}:{j}",
        "request_hash": "0" * 64, "member_id": int(member_ids[int(ev.p_member[j])]),
        "amount_minor": int(ev.p_amount[j]), "refunded_minor": 0, "currency": "CNY",
        "channel": CHANNELS[int(ev.p_channel[j])], "eco": False, "occurred_at": _at(float(ev.p_day[j])),
        "received_at": _at(float(ev.p_day[j])), "points": int(pts_all[j]), "campaign": None, "clawed_back": 0,
        "txn_id": int(purchase_txn[j]) or None,
    } for j in range(len(ev.p_member))]
    exchange_rows = [{
        "exchange_ref": ref, "idempotency_key": f"sim:{pref}:x{key}", "request_hash": "0" * 64, "member_id": mid,
        "wallet_address": w, "ap_amount": ap, "brand_points": ap * spec.rate, "rate": spec.rate, "rate_version": 1,
        "status": "confirmed", "failure": None, "debit_txn_id": txid, "tx_hash": None,
        "block_number": None, "attempts": 0, "created_at": at, "updated_at": at,
    } for key, mid, ap, txid, at, ref, w in exch_rows]
    redemption_rows = [{
        "redemption_ref": _uuid(rng), "member_id": mid, "owner": w, "nonce": str(key), "deadline": int(at.timestamp()) + 3600,
        "ap_amount": ap, "signature": "simulated", "reward_points": ap * spec.rate, "rate": spec.rate, "rate_version": 1,
        "status": "confirmed", "failure": None, "credit_txn_id": txid, "tx_hash": None,
        "block_number": None, "epoch": None, "attempts": 0, "created_at": at, "updated_at": at,
    } for key, mid, ap, txid, at, w in red_rows]

    def bulk(conn, table, rows):  # noqa: ANN001
        for k in range(0, len(rows), chunk):
            insert_many(conn, table, list(rows[0]), [tuple(row.values()) for row in rows[k : k + chunk]])

    with gw.engine.begin() as conn:
        bulk(conn, gm.Member.__table__, member_rows)
        bulk(conn, gm.ConsentLogEntry.__table__, log_rows)
        bulk(conn, gm.Consent.__table__, consent_rows)
        bulk(conn, gm.LedgerTxn.__table__, txns)
        bulk(conn, gm.LedgerEntry.__table__, entries)
        bulk(conn, gm.PointLot.__table__, lots)
        bulk(conn, gm.LotDebit.__table__, debits)
        bulk(conn, gm.Purchase.__table__, purchase_rows)
        bulk(conn, gm.Exchange.__table__, exchange_rows)
        bulk(conn, gm.Redemption.__table__, redemption_rows)
        bulk(conn, gm.TierChange.__table__, tier_rows)
        for table in next_id:  # rows that went in with the ids chosen above
            ids_taken(conn, table)
    return {"members": n, "purchases": len(purchase_rows), "ledger_txns": len(txns), "ledger_entries": len(entries),
            "point_lots": len(lots), "exchanges": len(exchange_rows), "redemptions": len(redemption_rows),
            "consent_log": len(log_rows), "tier_changes": len(tier_rows)}


# --------------------------------------------------------------------------- alliances


def _bare_gateway(workdir: Path, brand_id: str) -> Any:
    from gateway.runtime import build_gateway
    from gateway.settings import GatewaySettings

    s = GatewaySettings(brand_id=brand_id, brand_name=brand_id.title(), keys_dir=workdir / brand_id / "keys",
                        database_url=f"sqlite:///{workdir / brand_id / 'gateway.sqlite'}", manifest=None,
                        outbox_interval_s=0, anchor_interval_s=0)
    return build_gateway(s)


def populate(workdir: str | Path, *, seed: int = 7, size: str = "default", brands: list[str] | None = None,
             gateways: dict[str, Any] | None = None, log: Any = None) -> dict[str, Any]:
    """Generate the population and write it into one gateway database per brand.

    ``gateways`` maps brand id -> an existing :class:`gateway.runtime.Gateway` (e.g. the brands of a
    :class:`gateway.local.LocalAlliance`, so releases can be anchored on its chain); brands without
    one get a chain-less gateway under ``workdir/<brand>/``.  Writes ``workdir/population.json``
    (the map the ``gateway`` data source reads) and returns it.
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    pop = generate(seed, size, brands)
    t_gen = time.monotonic() - t0
    manifest: dict[str, Any] = {
        "schema": SCHEMA, "seed": seed, "size": size, "persons": pop.n_persons,
        "window_start": START.isoformat(), "window_end": END.isoformat(),
        "train_as_of": TRAIN_AS_OF.isoformat(), "eval_as_of": EVAL_AS_OF.isoformat(),
        "brands": [], "generate_s": round(t_gen, 2),
    }
    for ev in pop.brands:
        bid = ev.spec.brand_id
        gw = (gateways or {}).get(bid) or _bare_gateway(workdir, bid)
        t1 = time.monotonic()
        counts = write_brand(gw, ev, seed)
        if log:
            log(f"{bid}: {counts} in {time.monotonic() - t1:.1f}s")
        manifest["brands"].append({"brand_id": bid, "kind": ev.spec.kind, "db_url": gw.settings.database_url,
                                   "counts": counts, "write_s": round(time.monotonic() - t1, 2)})
    manifest["total_members"] = sum(b["counts"]["members"] for b in manifest["brands"])
    manifest["wall_s"] = round(time.monotonic() - t0, 2)
    (workdir / "population.json").write_text(json.dumps(manifest, indent=2))
    return manifest


def check_invariants(engine: Any) -> dict[str, int]:
    """Ledger invariants of a brand database (every value must be 0)."""
    from sqlalchemy import text

    with engine.connect() as conn:
        unbalanced = conn.scalar(text("SELECT COUNT(*) FROM (SELECT txn_id FROM ledger_entries GROUP BY txn_id HAVING SUM(amount) != 0)"))
        bal_mismatch = conn.scalar(text(
            "SELECT COUNT(*) FROM members m LEFT JOIN (SELECT member_id, SUM(amount) s FROM ledger_entries "
            "WHERE account='member' GROUP BY member_id) e ON e.member_id = m.id WHERE m.balance != COALESCE(e.s, 0)"))
        lot_mismatch = conn.scalar(text(
            "SELECT COUNT(*) FROM members m LEFT JOIN (SELECT member_id, SUM(remaining) s FROM point_lots GROUP BY member_id) l "
            "ON l.member_id = m.id WHERE COALESCE(l.s, 0) != MAX(m.balance, 0)"))
        neg_lots = conn.scalar(text("SELECT COUNT(*) FROM point_lots WHERE remaining < 0 OR remaining > amount"))
        debit_mismatch = conn.scalar(text(
            "SELECT COUNT(*) FROM point_lots l LEFT JOIN (SELECT lot_id, SUM(amount) s FROM lot_debits GROUP BY lot_id) d "
            "ON d.lot_id = l.id WHERE l.amount - COALESCE(d.s, 0) != l.remaining"))
    return {"unbalanced_txns": int(unbalanced), "balance_mismatch": int(bal_mismatch), "lot_mismatch": int(lot_mismatch),
            "bad_lots": int(neg_lots), "lot_debit_mismatch": int(debit_mismatch)}
