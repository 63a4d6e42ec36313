"""The brand's programme rules, through HTTP, with time under the test's control (Gateway.clock):
earn rules and multipliers, the daily cap and rate limit, refunds, FIFO expiry, tiers with a grace
period, consent, freezing and erasure. Chain-free gateways (these rules are brand-local); every test
on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta

import pytest
from harness import (
    action,
    balance,
    db_balance,
    enrol,
    login,
    maintenance,
    purchase,
    refund,
    start_local_brand,
)
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import select

from gateway.models import MemberIdentifier, PiiField, PointLot
from gateway.services import rules
from gateway.settings import CurrencyEarn, EarnRules, TierRule


@pytest.fixture
def brand(database_url, tmp_path, clock):
    b = start_local_brand(tmp_path, "rules", database_url, clock=clock, member_token_days=1000)
    yield b
    b.close()


class Till:
    """Purchases at the brand's till, each a minute apart (under the per-member rate limit)."""

    def __init__(self, brand, clock):
        self.brand, self.clock, self.n = brand, clock, 0

    def buy(self, member, amount: int, *, at: datetime | None = None, **extra) -> dict:
        self.n += 1
        self.clock.advance(minutes=1)
        r = purchase(self.brand, member["member_ref"], amount, f"till-{self.n}", at or self.clock.now, **extra)
        assert r.status_code == 201, r.text
        return r.json()


def _ok(brand) -> dict:
    r = brand.client.get("/v1/audit/reconciliation", headers=brand.as_("auditor"))
    assert r.status_code == 200
    report = r.json()
    assert report["ok"], report
    return report


def test_earn_rules_and_multipliers(brand, clock):
    till = Till(brand, clock)
    clock.set(datetime(2026, 3, 3, 10, 0, tzinfo=UTC))  # a Tuesday in March, not the member day (8th)
    m = enrol(brand, "+8613800000001", birthday="1990-07-17")
    first = till.buy(m, 10_000)  # 100.00 -> 100 base points
    assert (first["points"], first["campaign"]) == (200, "first_order")
    plain = till.buy(m, 10_000)
    assert (plain["points"], plain["campaign"]) == (100, None)
    assert till.buy(m, 12_399)["points"] == 123  # floor, integer arithmetic
    eco = till.buy(m, 10_000, eco=True)
    assert (eco["points"], eco["campaign"]) == (200, "eco_choice")
    # Member day: the 8th of the month.
    clock.set(datetime(2026, 3, 8, 9, 0, tzinfo=UTC))
    day = till.buy(m, 10_000)
    assert (day["points"], day["campaign"]) == (200, "member_day")
    # Campaigns do not stack with each other: eco on member day is still x2.
    both = till.buy(m, 10_000, eco=True)
    assert both["points"] == 200 and both["campaign"] in ("eco_choice", "member_day")
    # Birthday month (the purchase's month, not the clock's).
    clock.set(datetime(2026, 7, 2, 9, 0, tzinfo=UTC))
    bday = till.buy(m, 10_000)
    assert (bday["points"], bday["campaign"]) == (200, "birthday_month")
    june = till.buy(m, 10_000, at=datetime(2026, 6, 30, 23, 0, tzinfo=UTC))
    assert (june["points"], june["campaign"]) == (100, None)
    # A till in UTC+8 writes 07:00 on 1 July: in this brand's calendar (UTC) it is still 30 June, so
    # no birthday campaign; the stored time is the same instant, in UTC.
    clock.advance(minutes=1)
    r = brand.client.post("/v1/purchases", headers=brand.as_("pos") | {"Idempotency-Key": "tz-1"},
                          json={"member_ref": m["member_ref"], "amount_minor": 10_000, "occurred_at": "2026-07-01T07:00:00+08:00"})
    assert (r.json()["points"], r.json()["campaign"]) == (100, None)
    stored = [p for p in brand.client.get("/v1/me/export", headers=m["auth"]).json()["purchases"] if p["purchase_ref"] == r.json()["purchase_ref"]]
    assert stored[0]["occurred_at"] == "2026-06-30T23:00:00Z"

    # The tier multiplies the campaign: silver (x1.25) after 2,000.00 in the window.
    s = enrol(brand, "+8613800000002")
    assert till.buy(s, 200_000)["tier"] == "silver"
    silver = till.buy(s, 10_000)
    assert (silver["points"], silver["tier"]) == (125, "silver")
    assert till.buy(s, 10_000, eco=True)["points"] == 250
    assert till.buy(s, 12_345)["points"] == 153  # 123 * 125 // 100
    # Actions earn their fixed points and count as engagement.
    clock.advance(minutes=1)
    r = action(brand, s["member_ref"], "review", "act-1", clock.now)
    assert r.status_code == 201 and r.json()["points"] == 5
    assert action(brand, s["member_ref"], "review", "act-1", clock.now).json()["replayed"] is True
    assert balance(brand, s)["points"] == 100 + 4_000 + 125 + 250 + 153 + 5
    _ok(brand)


def test_daily_cap_and_rate_limit(brand, clock):
    till = Till(brand, clock)
    m = enrol(brand, "+8613800000003")
    today = clock.advance(days=2)
    big = till.buy(m, 100_000_000)  # 1,000,000.00: 2,000,000 points before the cap
    assert (big["points"], big["capped"], big["tier"]) == (50_000, 1_950_000, "gold")
    more = till.buy(m, 10_000)
    assert (more["points"], more["capped"]) == (0, 150)  # gold: x1.5
    clock.advance(minutes=1)
    assert action(brand, m["member_ref"], "review", "cap-act", clock.now).json()["points"] == 0
    # A late event for yesterday counts against yesterday's cap, not today's ...
    late = till.buy(m, 10_000, at=today - timedelta(days=1))
    assert (late["points"], late["capped"]) == (150, 0)
    # ... and does not reopen today's.
    again = till.buy(m, 10_000)
    assert (again["points"], again["capped"]) == (0, 150)
    # Tomorrow is a new day.
    clock.advance(days=1)
    assert till.buy(m, 10_000)["points"] == 150
    assert balance(brand, m)["points"] == 100 + 50_000 + 150 + 150

    # Rate limit, 10 purchases per member per minute: a burst of 10, then one every 6 s.
    r = enrol(brand, "+8613800000004")
    clock.advance(minutes=5)
    for i in range(10):
        assert purchase(brand, r["member_ref"], 1_000, f"burst-{i}", clock.now).status_code == 201
    limited = purchase(brand, r["member_ref"], 1_000, "burst-10", clock.now)
    assert limited.status_code == 429 and limited.json()["code"] == "rate_limited"
    assert limited.json()["retry_after_s"] == 6 and limited.headers["Retry-After"] == "6"
    # Another member is not limited by this one.
    assert purchase(brand, m["member_ref"], 1_000, "other-member", clock.now).status_code == 201
    clock.advance(seconds=5)
    assert purchase(brand, r["member_ref"], 1_000, "burst-10", clock.now).json()["retry_after_s"] == 1
    clock.advance(seconds=1)
    assert purchase(brand, r["member_ref"], 1_000, "burst-10", clock.now).status_code == 201
    assert purchase(brand, r["member_ref"], 1_000, "burst-11", clock.now).status_code == 429
    # At the sustained rate every purchase fits, for as long as it lasts: at most 10 a minute after the burst.
    for i in range(12, 32):
        clock.advance(seconds=6)
        assert purchase(brand, r["member_ref"], 1_000, f"burst-{i}", clock.now).status_code == 201
    assert purchase(brand, r["member_ref"], 1_000, "burst-32", clock.now).status_code == 429
    # A quiet minute refills the whole burst.
    clock.advance(seconds=60)
    assert [purchase(brand, r["member_ref"], 1_000, f"again-{i}", clock.now).status_code for i in range(11)] == [201] * 10 + [429]
    _ok(brand)


def test_refunds_claw_back_proportionally(brand, clock):
    till = Till(brand, clock)
    m = enrol(brand, "+8613800000005")
    p = till.buy(m, 10_000)  # 200 points (first order)
    assert p["points"] == 200
    claws = [refund(brand, p["purchase_ref"], amount, f"rf-{i}") for i, amount in enumerate((3_333, 3_333, 3_334))]
    assert [r.status_code for r in claws] == [201, 201, 201]
    assert [r.json()["points_clawed_back"] for r in claws] == [66, 67, 67]
    assert sum(r.json()["points_clawed_back"] for r in claws) == 200  # a full refund takes back exactly what was earned
    assert claws[-1].json()["balance"] == 100
    # Replays answer the same and take nothing more.
    replay = refund(brand, p["purchase_ref"], 3_334, "rf-2")
    assert replay.status_code == 200 and replay.json()["replayed"] is True and replay.json()["balance"] == 100
    # One full refund in one go.
    q = till.buy(m, 12_345)
    assert refund(brand, q["purchase_ref"], 12_345, "rf-full").json()["points_clawed_back"] == q["points"] == 123
    assert db_balance(brand, m["member_ref"]) == (100, 100, 100)
    ledger = brand.client.get("/v1/me/ledger", headers=m["auth"]).json()
    assert [line["kind"] for line in ledger].count("clawback") == 4
    _ok(brand)


def test_clawback_beyond_balance_is_a_debt_paid_first(brand, clock):
    till = Till(brand, clock)
    m = enrol(brand, "+8613800000006")
    p = till.buy(m, 10_000)  # 200 points; the balance is 300
    clock.advance(days=366)  # every lot has expired
    assert maintenance(brand)["points_expired"] == 300
    assert balance(brand, m)["points"] == 0
    clock.advance(minutes=1)
    r = refund(brand, p["purchase_ref"], 10_000, "late-refund")
    assert r.status_code == 201 and r.json()["points_clawed_back"] == 200 and r.json()["balance"] == -200
    assert db_balance(brand, m["member_ref"]) == (-200, -200, 0)
    _ok(brand)
    # Later earnings pay the debt first: no lot until it is paid.
    assert till.buy(m, 10_000)["balance"] == -100
    assert db_balance(brand, m["member_ref"]) == (-100, -100, 0)
    assert till.buy(m, 30_000)["balance"] == 200
    assert db_balance(brand, m["member_ref"]) == (200, 200, 200)
    with brand.gw.sessions() as session:
        lots = [(lot.amount, lot.remaining) for lot in session.scalars(select(PointLot).order_by(PointLot.id))
                if lot.remaining]
    assert lots == [(300, 200)]
    _ok(brand)


def test_fifo_expiry(brand, clock):
    till = Till(brand, clock)
    t0 = clock.now
    m = enrol(brand, "+8613800000007")  # 100 welcome points, expiring t0 + 365 days
    clock.set(t0 + timedelta(days=100))
    till.buy(m, 10_000)  # 200 points expiring t0 + 465 days
    clock.advance(minutes=1)
    p2 = till.buy(m, 5_000)  # 50 points
    # A clawback takes the oldest-expiring lot first: 25 of the welcome lot's 100.
    assert refund(brand, p2["purchase_ref"], 2_500, "half").json()["points_clawed_back"] == 25
    assert balance(brand, m)["points"] == 325
    # Thirty days before the first expiry, the member is told.
    clock.set(t0 + timedelta(days=340))
    soon = balance(brand, m)["expiring_soon"]
    assert [x["points"] for x in soon] == [75]
    assert datetime.fromisoformat(soon[0]["expires_at"].replace("Z", "+00:00")) == t0 + timedelta(days=365)
    assert maintenance(brand)["points_expired"] == 0
    # Past it, maintenance expires exactly that lot's remainder.
    clock.set(t0 + timedelta(days=366))
    result = maintenance(brand)
    assert result["points_expired"] == 75
    assert balance(brand, m)["points"] == 250
    assert maintenance(brand)["points_expired"] == 0  # nothing twice
    assert [line["amount"] for line in brand.client.get("/v1/me/ledger", headers=m["auth"]).json() if line["kind"] == "expire"] == [-75]
    clock.set(t0 + timedelta(days=466))
    assert maintenance(brand)["points_expired"] == 250
    assert db_balance(brand, m["member_ref"]) == (0, 0, 0)
    _ok(brand)


def test_tier_upgrade_grace_and_downgrade(brand, clock):
    till = Till(brand, clock)
    t0 = clock.now
    up = enrol(brand, "+8613800000008")
    stay = enrol(brand, "+8613800000009")
    for member in (up, stay):
        assert till.buy(member, 200_000)["tier"] == "silver"  # immediate upgrade
    # A year on, nothing in the window: the review starts a grace period, the tier holds.
    clock.set(t0 + timedelta(days=366))
    assert maintenance(brand)["tiers_downgraded"] == 0
    for member in (up, stay):
        me = brand.client.get("/v1/me", headers=member["auth"]).json()
        assert me["tier"] == "silver"
        assert datetime.fromisoformat(me["downgrade_due_at"].replace("Z", "+00:00")) == t0 + timedelta(days=366 + 90)
    # Requalifying during the grace period cancels it.
    assert till.buy(stay, 200_000)["tier"] == "silver"
    assert brand.client.get("/v1/me", headers=stay["auth"]).json()["downgrade_due_at"] is None
    # Within grace: still silver. After it: down one level, at the review.
    clock.set(t0 + timedelta(days=366 + 89))
    assert maintenance(brand)["tiers_downgraded"] == 0
    clock.set(t0 + timedelta(days=366 + 91))
    assert maintenance(brand)["tiers_downgraded"] == 1
    assert brand.client.get("/v1/me", headers=up["auth"]).json()["tier"] == "member"
    assert brand.client.get("/v1/me", headers=stay["auth"]).json()["tier"] == "silver"
    changes = brand.client.get("/v1/me/export", headers=up["auth"]).json()["tier_changes"]
    assert [(c["from"], c["to"], c["reason"]) for c in changes] == [("member", "silver", "qualified"), ("silver", "member", "grace_period_ended")]
    # The downgraded member earns at the base rate again.
    assert till.buy(up, 10_000)["points"] == 100


def test_consent_defaults_withdrawal_and_frozen_member(brand, clock):
    m = enrol(brand, "+8613800000010")
    assert brand.client.get("/v1/me/consents", headers=m["auth"]).json() == {
        "loyalty_core": True, "alliance_exchange": False, "federated_training": False, "marketing": False, "overlap_analytics": False}
    r = brand.client.put("/v1/me/consents/marketing", json={"granted": True}, headers=m["auth"])
    assert r.status_code == 200 and r.json()["receipt"]["receipt"]["state"] == "granted"
    # Frozen by the operator: sessions end, purchases are refused ...
    op = brand.as_("operator")
    assert brand.client.post(f"/v1/members/{m['member_ref']}/status", json={"status": "frozen", "reason": "review"},
                             headers=op).status_code == 200
    assert brand.client.get("/v1/me", headers=m["auth"]).status_code == 401
    clock.advance(minutes=1)
    assert purchase(brand, m["member_ref"], 1_000, "while-frozen", clock.now).json()["code"] == "member_not_active"
    # ... but the member can still log in to withdraw consent (a right that freezing does not suspend).
    auth = login(brand, "phone", "+8613800000010")
    r = brand.client.put("/v1/me/consents/marketing", json={"granted": False}, headers=auth)
    assert r.status_code == 200 and r.json()["changed"] is True and r.json()["receipt"]["receipt"]["state"] == "withdrawn"
    assert brand.client.get("/v1/me/consents", headers=auth).json()["marketing"] is False
    # Granting is processing, and a frozen account does no new processing.
    r = brand.client.put("/v1/me/consents/federated_training", json={"granted": True}, headers=auth)
    assert r.status_code == 409 and r.json()["code"] == "member_not_active"
    assert brand.client.get("/v1/me/export", headers=auth).status_code == 200
    history = brand.client.get("/v1/me/consents/history", headers=auth).json()
    assert [(h["consent"]["purpose"], h["consent"]["state"]) for h in history] == [
        ("loyalty_core", "granted"), ("marketing", "granted"), ("marketing", "withdrawn")]
    # Withdrawing loyalty_core stops earning at once.
    assert brand.client.post(f"/v1/members/{m['member_ref']}/status", json={"status": "active", "reason": "cleared"},
                             headers=op).status_code == 200
    auth = login(brand, "phone", "+8613800000010")
    brand.client.put("/v1/me/consents/loyalty_core", json={"granted": False}, headers=auth)
    clock.advance(minutes=1)
    r = purchase(brand, m["member_ref"], 1_000, "no-core", clock.now)
    assert r.status_code == 403 and r.json()["code"] == "consent_required"


def test_erasure_leaves_nothing_personal_and_books_balanced(brand, clock):
    till = Till(brand, clock)
    personal = {"phone": "+86 138 0000 0011", "email": "Zhang.Wei.Private@Example.com", "card": "4539 1488 0343 6467"}
    m = enrol(brand, "unused", name="Zhang Weiwei", birthday="1988-11-23", identifiers=personal)
    till.buy(m, 50_000)
    clock.advance(minutes=1)
    p = till.buy(m, 20_000)
    refund(brand, p["purchase_ref"], 5_000, "erase-refund")
    brand.client.put("/v1/me/consents/marketing", json={"granted": True}, headers=m["auth"])
    needles = ["Zhang Weiwei", "Zhang", "Weiwei", "+8613800000011", "13800000011", "0000 0011", "zhang.wei.private@example.com",
               "Zhang.Wei.Private", "4539148803436467", "4539 1488 0343 6467", "6467", "1988-11-23", "19881123"]

    def found(text: str) -> list[str]:
        return [n for n in needles if n.lower() in text.lower()]

    op = brand.as_("operator")
    before = json.dumps(brand.client.get("/v1/me/export", headers=m["auth"]).json())
    assert set(found(before)) >= {"Zhang Weiwei", "+8613800000011", "1988-11-23"}  # the search works
    r = brand.client.post("/v1/me/erasure", headers=m["auth"])
    assert r.status_code == 200 and r.json()["key_absent"] is True
    # The old token is gone with the rest; the operator's copy holds nothing personal.
    assert brand.client.get("/v1/me/export", headers=m["auth"]).status_code == 401
    export = brand.client.get(f"/v1/members/{m['member_ref']}/export", headers=op).json()
    text = json.dumps(export, ensure_ascii=False)
    assert found(text) == [], found(text)
    assert export["personal_data"] == {} and export["identifiers"] == [] and export["member"]["birth_month"] is None
    assert export["member"]["status"] == "erased" and not any(export["consents"].values())
    assert export["balance"] == sum(line["amount"] for line in export["ledger"])
    profile = brand.client.get(f"/v1/members/{m['member_ref']}", headers=op).json()
    assert found(json.dumps(profile)) == [] and profile["personal_data"] == {}
    # Nothing left in the vault tables or the key store either; the ledger still balances.
    with brand.gw.sessions() as session:
        for model in (PiiField, MemberIdentifier):
            assert session.scalars(select(model)).all() == [], model.__tablename__
    assert brand.gw.keystore.get(m["member_ref"]) is None
    _ok(brand)
    # Nobody can log in with the old identifiers; a second erasure is refused; purchases too.
    for kind, value in (("phone", "+8613800000011"), ("email", personal["email"]), ("card", personal["card"])):
        r = brand.client.post("/v1/sessions", json={"kind": kind, "value": value, "passphrase": "correct horse battery"})
        assert r.status_code == 401, r.text
    assert brand.client.post(f"/v1/members/{m['member_ref']}/erasure", headers=op).status_code == 409
    clock.advance(minutes=1)
    assert purchase(brand, m["member_ref"], 1_000, "after-erasure", clock.now).status_code == 409
    # The audit log records the erasure, and itself holds nothing personal.
    audit = brand.client.get("/v1/audit/logs/audit-log", headers=brand.as_("auditor")).json()
    assert any(e["payload"]["action"] == "member.erased" for e in audit["entries"])
    consent_log = brand.client.get("/v1/audit/logs/consent-log", headers=brand.as_("auditor")).json()
    assert found(json.dumps(audit)) == [] and found(json.dumps(consent_log)) == []


def test_maintenance_never_overwrites_a_concurrent_purchase(brand, clock, monkeypatch):
    """Expiry posts to a member while a purchase for the same member commits: the member row is
    locked before the balance is read, so neither update is lost (PostgreSQL runs them concurrently;
    SQLite serialises whole write transactions)."""
    from gateway.routes.admin import run_maintenance
    from gateway.services import ledger

    t0 = clock.now
    m = enrol(brand, "+8613800000012")  # 100 welcome points, expiring at t0 + 365 days
    clock.set(t0 + timedelta(days=366))
    reached, release = threading.Event(), threading.Event()
    original = ledger.post

    def paused_post(session, member, kind, *args, **kwargs):
        if kind == "expire" and not reached.is_set():
            reached.set()
            release.wait(timeout=5)
        return original(session, member, kind, *args, **kwargs)

    monkeypatch.setattr(ledger, "post", paused_post)
    result, bought = {}, []
    upkeep = threading.Thread(target=lambda: result.update(run_maintenance(brand.gw, "test")))
    upkeep.start()
    assert reached.wait(timeout=30)
    buyer = threading.Thread(target=lambda: bought.append(purchase(brand, m["member_ref"], 10_000, "racing", clock.now)))
    buyer.start()
    buyer.join(timeout=1.5)  # a purchase that does not wait for the expiry's lock finishes here
    release.set()
    upkeep.join(timeout=30)
    buyer.join(timeout=30)
    assert result["points_expired"] == 100
    assert bought[0].status_code == 201, bought[0].text
    assert db_balance(brand, m["member_ref"]) == (200, 200, 200)
    _ok(brand)


PCT = st.integers(100, 400)


@given(first=PCT, birthday=PCT, eco=PCT, day=PCT, tier_pct=PCT, amount=st.integers(1, 10**9),
       applies=st.tuples(st.booleans(), st.booleans(), st.booleans(), st.booleans()))
def test_the_highest_campaign_applies_on_top_of_the_tier(first, birthday, eco, day, tier_pct, amount, applies):
    earn = EarnRules(first_order_multiplier_pct=first, birthday_month_multiplier_pct=birthday, eco_multiplier_pct=eco,
                     member_day=8, member_day_multiplier_pct=day)
    at = datetime(2026, 5, 8 if applies[3] else 9, 12, tzinfo=UTC)
    got = rules.purchase_points(earn, CurrencyEarn(), TierRule(name="t", min_spend_minor=0, min_purchases=0, min_actions=0,
                                                               earn_multiplier_pct=tier_pct),
                                amount, first_order=applies[0], birth_month=5 if applies[1] else 6, eco=applies[2], occurred_at=at)
    offered = [(pct, name) for pct, name, on in ((first, "first_order", applies[0]), (birthday, "birthday_month", applies[1]),
                                                 (eco, "eco_choice", applies[2]), (day, "member_day", applies[3])) if on and pct > 100]
    best = max((pct for pct, _ in offered), default=100)
    assert got.campaign == next((name for pct, name in offered if pct == best), None)  # the first listed on a tie
    assert got.base == amount // 100 and got.multiplier_pct == tier_pct * best // 100
    assert got.points == got.base * got.multiplier_pct // 100


@given(per_minute=st.integers(1, 120), gaps_ms=st.lists(st.integers(0, 20_000), min_size=1, max_size=300))
def test_the_rate_limit_allows_a_burst_then_the_sustained_rate(per_minute, gaps_ms):
    interval = rules.MINUTE_US // per_minute
    tat, now, accepted = 0, 10**15, []
    for gap in gaps_ms:
        now += gap * 1000
        tat, wait = rules.pace(tat, now, per_minute)
        if wait:
            assert rules.pace(tat, now + wait - 1, per_minute)[1] == 1  # the wait is exact: a µs earlier does not fit ...
            assert rules.pace(tat, now + wait, per_minute)[1] == 0  # ... and then it does
        else:
            accepted.append(now)
    # In any stretch of time: at most a burst, plus one per interval elapsed.
    for i, start in enumerate(accepted):
        for j in range(i, len(accepted)):
            assert j - i + 1 <= per_minute + (accepted[j] - start) // interval
