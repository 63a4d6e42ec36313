"""Ledger invariants under random sequences of purchases, refunds, actions, exchanges (minted on the
embedded chain) and expiry: every posting sums to zero, Member.balance equals the sum of the member's
entries, the open lots hold exactly max(balance, 0), and the books agree with the chain."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from harness import (
    Clock,
    action,
    balance,
    consent,
    db_balance,
    enrol,
    exchange,
    link_wallet,
    make_database_url,
    maintenance,
    new_wallet,
    purchase,
    reconciliation,
    refund,
    start_world_brand,
)
from sqlalchemy import func, select

from gateway.models import Exchange, LedgerEntry
from gateway.services import reconcile

RATE = 10
_n = itertools.count()

STEP = st.one_of(
    st.tuples(st.just("buy"), st.integers(1, 5_000_000), st.booleans()),
    st.tuples(st.just("refund"), st.integers(0, 50), st.floats(0.05, 1.2)),
    st.tuples(st.just("action"), st.sampled_from(["review", "share", "check_in"])),
    st.tuples(st.just("exchange"), st.integers(1, 400)),
    st.tuples(st.just("time"), st.integers(0, 400)),
    st.tuples(st.just("pay"), st.integers(1, 500_000), st.integers(1, 3_000)),  # a purchase paid in part with points
    st.tuples(st.just("order"), st.integers(0, 50)),  # a reward (or cancel an earlier order, if there is one)
)
GIFT_PRICE = 50


@pytest.fixture(scope="module")
def shop(request, world, module_backend, tmp_path_factory):
    clock = Clock()
    url = make_database_url(request, module_backend, tmp_path_factory.mktemp("ledger"), "ledger")
    brand = start_world_brand(world, f"ledger-{module_backend}", RATE, url, clock=clock, member_token_days=100_000)
    r = brand.client.put("/v1/admin/rewards/prop-gift", json={"kind": "good", "name": "Gift", "points_price": GIFT_PRICE,
                                                            "available_from": clock.now.isoformat()}, headers=brand.as_("operator"))
    assert r.status_code == 200, r.text
    yield brand, clock
    brand.close()


def _check(brand, member) -> int:
    b, entries, lots = db_balance(brand, member["member_ref"])
    assert b == entries, f"Member.balance {b} != sum of entries {entries}"
    assert lots == max(b, 0), f"lots hold {lots}, balance is {b}"
    assert balance(brand, member)["points"] == b
    return b


@settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck))
@given(steps=st.lists(STEP, min_size=1, max_size=12))
def test_ledger_invariants_hold_for_any_sequence(shop, steps):
    brand, clock = shop
    n = next(_n)
    m = enrol(brand, f"+86136{n:08d}")
    consent(brand, m, "alliance_exchange")
    link_wallet(brand, m, new_wallet())
    purchases: list[dict] = []  # {"ref", "amount", "refunded"}
    orders: list[str] = []  # reward orders not cancelled
    for i, step in enumerate(steps):
        clock.advance(minutes=1)
        key = f"{m['member_ref']}-{i}"
        kind = step[0]
        if kind == "buy":
            r = purchase(brand, m["member_ref"], step[1], key, clock.now, eco=step[2])
            assert r.status_code == 201, r.text
            purchases.append({"ref": r.json()["purchase_ref"], "amount": step[1], "refunded": 0})
        elif kind == "refund" and purchases:
            p = purchases[step[1] % len(purchases)]
            amount = max(1, int((p["amount"] - p["refunded"]) * step[2]))
            r = refund(brand, p["ref"], amount, key)
            if p["refunded"] + amount > p["amount"]:
                assert r.status_code == 409 and r.json()["code"] == "conflict", r.text
            else:
                assert r.status_code == 201, r.text
                p["refunded"] += amount
        elif kind == "action":
            assert action(brand, m["member_ref"], step[1], key, clock.now).status_code == 201
        elif kind == "exchange":
            before = _check(brand, m)
            r = exchange(brand, m, step[1], key)
            needed = step[1] * RATE
            if r.status_code == 409:
                assert r.json()["code"] == "insufficient_points", r.text
                assert r.json()["needed"] == needed and r.json()["available"] < needed
                assert _check(brand, m) == before
            else:
                assert r.status_code == 201 and r.json()["status"] == "confirmed", r.text
                assert _check(brand, m) == before - needed
        elif kind == "pay":
            before = _check(brand, m)
            r = purchase(brand, m["member_ref"], step[1], key, clock.now, points_burned=step[2])
            if step[2] > step[1]:  # 100 points = ¥1: a point pays one fen
                assert r.status_code == 400, r.text
            elif step[2] > before:
                assert r.status_code == 409 and r.json()["code"] == "insufficient_points", r.text
            else:
                assert r.status_code == 201, r.text
                assert r.json()["balance"] == before - step[2] + r.json()["points"]
                purchases.append({"ref": r.json()["purchase_ref"], "amount": step[1], "refunded": 0})
        elif kind == "order":
            before = _check(brand, m)
            if orders and step[1] % 2:
                ref = orders.pop(step[1] % len(orders))
                r = brand.client.post(f"/v1/me/reward-orders/{ref}/cancellation", headers=m["auth"])
                assert r.status_code == 200 and r.json()["balance"] == before + GIFT_PRICE, r.text
            else:
                r = brand.client.post("/v1/me/reward-orders", json={"reward": "prop-gift"}, headers=m["auth"] | {"Idempotency-Key": key})
                if GIFT_PRICE > before:
                    assert r.status_code == 409 and r.json()["code"] == "insufficient_points", r.text
                else:
                    assert r.status_code == 201 and r.json()["balance"] == before - GIFT_PRICE, r.text
                    orders.append(r.json()["order_ref"])
        elif kind == "time":
            clock.advance(days=step[1])
            maintenance(brand)
        _check(brand, m)
    with brand.gw.sessions() as session:
        unbalanced = session.execute(select(LedgerEntry.txn_id).group_by(LedgerEntry.txn_id)
                                     .having(func.sum(LedgerEntry.amount) != 0)).all()
        assert unbalanced == []
        # The books part of the reconciliation report, for every member so far (the chain part, which
        # reads every event since deployment, runs once below).
        report = reconcile.ledger_report(session)
        assert report["ok"], report


def test_books_and_chain_agree_after_the_random_sequences(shop):
    brand, _ = shop
    report = reconciliation(brand)
    assert report["ok"], report
    assert report["chain"]["pending"] == {"exchanges": 0, "redemptions": 0}
    with brand.gw.sessions() as session:
        confirmed = session.scalar(select(func.count()).select_from(Exchange).where(Exchange.status == "confirmed"))
    assert report["chain"]["checked"]["mints_on_chain"] == report["chain"]["checked"]["exchanges"] == confirmed
