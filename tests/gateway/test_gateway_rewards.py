"""Spending brand points, through HTTP on SQLite and PostgreSQL: the rewards catalogue (versioned and
audited), orders with stock, tier and per-member limits, fulfilment and cancellation, coupons used at
the till once, and purchases paid in part with points, refunded in proportion. After every test the
books balance (each member's balance is the sum of their entries and of their open lots)."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from harness import Server, balance, db_balance, enrol, purchase, refund, start_local_brand, storm

from gateway.models import AuditLogEntry, Coupon
from gateway.services import rewards


@pytest.fixture
def brand(database_url, tmp_path, clock):
    b = start_local_brand(tmp_path, "shop", database_url, clock=clock, member_token_days=1000)
    yield b
    assert b.client.get("/v1/audit/reconciliation", headers=b.as_("auditor")).json()["ledger"]["ok"]
    b.close()


def define(brand, code: str, **spec):
    body = {"kind": "good", "name": code.replace("-", " ").title(), "points_price": 100,
            "available_from": brand.gw.now().isoformat()} | spec
    return brand.client.put(f"/v1/admin/rewards/{code}", json=body, headers=brand.as_("operator"))


def order(brand, member, code: str, key: str):
    return brand.client.post("/v1/me/reward-orders", json={"reward": code}, headers=member["auth"] | {"Idempotency-Key": key})


def fulfil(brand, order_ref: str, status: str):
    return brand.client.post(f"/v1/admin/reward-orders/{order_ref}/status", json={"status": status}, headers=brand.as_("operator"))


class Till:
    def __init__(self, brand, clock):
        self.brand, self.clock, self.n = brand, clock, 0

    def buy(self, member, amount: int, expect: int = 201, **extra):
        self.n += 1
        self.clock.advance(minutes=1)
        r = purchase(self.brand, member["member_ref"], amount, f"till-{self.n}", self.clock.now, **extra)
        assert r.status_code == expect, r.text
        return r.json()


def test_a_catalogue_change_is_a_new_version_in_the_audit_log(brand):
    assert define(brand, "mug", points_price=500, stock=3).json()["version"] == 1
    r = define(brand, "mug", points_price=450, stock=3, description="enamel")
    assert r.status_code == 200 and r.json()["version"] == 2 and r.json()["points_price"] == 450
    with brand.gw.sessions() as session:
        logged = [json.loads(e.payload) for e in session.query(AuditLogEntry).order_by(AuditLogEntry.seq)]
    versions = [(e["details"]["version"], e["details"]["definition"]["points_price"]) for e in logged if e["action"] == "reward.defined"]
    assert versions == [(1, 500), (2, 450)]
    # A reward keeps its kind; coupons need a value and only coupons take coupon fields.
    assert define(brand, "mug", kind="digital").status_code == 409
    assert define(brand, "voucher", kind="coupon").status_code == 400
    assert define(brand, "tote", coupon_value_minor=100).status_code == 400
    assert define(brand, "tote", min_tier="platinum").status_code == 400
    assert define(brand, "tote", points_price=0).status_code == 422
    assert define(brand, "Bad Code!").status_code == 422
    # Only the operator defines.
    assert brand.client.put("/v1/admin/rewards/x1", json={}, headers=brand.as_("pos")).status_code == 403


def test_order_fulfil_and_cancel_a_good(brand, clock):
    m = enrol(brand, "+8613800000101")  # 100 welcome points
    define(brand, "mug", points_price=60, stock=2)
    r = order(brand, m, "mug", "o1")
    assert r.status_code == 201, r.text
    placed = r.json()
    assert placed["status"] == "ordered" and placed["points"] == 60 and placed["balance"] == 40 and placed["coupon"] is None
    # A retry answers the same and takes nothing more; the same key for another reward is refused.
    again = order(brand, m, "mug", "o1")
    assert again.status_code == 200 and again.json()["order_ref"] == placed["order_ref"] and again.json()["balance"] == 40
    define(brand, "pen", points_price=10)
    assert order(brand, m, "pen", "o1").status_code == 422
    # Not enough points for a second one.
    r = order(brand, m, "mug", "o2")
    assert r.status_code == 409 and r.json()["code"] == "insufficient_points"
    # Fulfilment goes forward only; the member cannot cancel once shipped.
    assert fulfil(brand, placed["order_ref"], "delivered").status_code == 409
    assert fulfil(brand, placed["order_ref"], "shipped").json()["status"] == "shipped"
    assert fulfil(brand, placed["order_ref"], "shipped").status_code == 200  # a retry
    r = brand.client.post(f"/v1/me/reward-orders/{placed['order_ref']}/cancellation", headers=m["auth"])
    assert r.status_code == 409
    # The brand cancels: the points come back into the lot they came from, the mug back to stock.
    r = fulfil(brand, placed["order_ref"], "cancelled")
    assert r.status_code == 200 and r.json()["balance"] == 100
    assert db_balance(brand, m["member_ref"]) == (100, 100, 100)
    assert fulfil(brand, placed["order_ref"], "shipped").status_code == 409
    stock = {x["code"]: x["stock"] for x in brand.client.get("/v1/admin/rewards", headers=brand.as_("operator")).json()}
    assert stock["mug"] == 2
    kinds = [line["kind"] for line in brand.client.get("/v1/me/ledger", headers=m["auth"]).json()]
    assert kinds == ["welcome", "reward", "reward_cancel"]
    # Another member's order is not found by this one.
    other = enrol(brand, "+8613800000102")
    mine = order(brand, m, "pen", "o3").json()
    assert brand.client.post(f"/v1/me/reward-orders/{mine['order_ref']}/cancellation", headers=other["auth"]).status_code == 404
    r = brand.client.post(f"/v1/me/reward-orders/{mine['order_ref']}/cancellation", headers=m["auth"])
    assert r.status_code == 200 and r.json()["status"] == "cancelled" and r.json()["balance"] == 100


def test_window_tier_and_per_member_limit(brand, clock):
    m = enrol(brand, "+8613800000103")
    now = brand.gw.now()
    define(brand, "later", points_price=1, available_from=(now + timedelta(days=1)).isoformat())
    define(brand, "gone", points_price=1, available_from=(now - timedelta(days=2)).isoformat(),
           available_until=(now - timedelta(days=1)).isoformat())
    define(brand, "gold-lounge", kind="experience", points_price=1, min_tier="gold")
    define(brand, "sticker", kind="digital", points_price=1, per_member_limit=2)
    define(brand, "hidden", points_price=1, active=False)
    items = {x["code"]: x for x in brand.client.get("/v1/rewards", headers=m["auth"]).json()}
    assert set(items) == {"gold-lounge", "sticker"}
    assert items["gold-lounge"]["orderable"] is False and items["gold-lounge"]["reason"] == "for gold members and above"
    assert items["sticker"]["orderable"] is True and items["sticker"]["affordable"] is True
    for code in ("later", "gone", "hidden", "gold-lounge"):
        r = order(brand, m, code, f"k-{code}")
        assert r.status_code == 409, (code, r.text)
    assert order(brand, m, "nothing", "k-x").status_code == 404
    assert [order(brand, m, "sticker", f"s{i}").status_code for i in range(3)] == [201, 201, 409]
    assert order(brand, m, "sticker", "s0").json()["status"] == "granted"
    items = {x["code"]: x for x in brand.client.get("/v1/rewards", headers=m["auth"]).json()}
    assert items["sticker"]["reason"] == "limited to 2 per member"
    # Once the window opens, the later reward can be ordered.
    clock.advance(days=1, minutes=1)
    assert order(brand, m, "later", "k-later-2").status_code == 201


def test_a_coupon_is_used_once_at_the_till_with_its_minimum_spend_and_expiry(brand, clock):
    till = Till(brand, clock)
    m = enrol(brand, "+8613800000104")
    other = enrol(brand, "+8613800000105")
    define(brand, "ten-off", kind="coupon", points_price=50, coupon_value_minor=1_000, coupon_min_spend_minor=5_000)
    placed = order(brand, m, "ten-off", "c1").json()
    coupon = placed["coupon"]
    assert placed["status"] == "issued" and coupon["status"] == "open"
    assert coupon["expires_at"].startswith((brand.gw.now() + timedelta(days=7)).date().isoformat())  # P-36: 7 days by default
    code = coupon["code"]
    # The code is not in the database: only its hash is, and it derives from the coupon key.
    with brand.gw.sessions() as session:
        row = session.query(Coupon).one()
        assert row.code_hash == rewards.code_hash(code) and code not in json.dumps([str(v) for v in row.__dict__.values()])
    till.buy(m, 4_999, expect=409, coupon_code=code)  # below the minimum spend
    till.buy(other, 6_000, expect=404, coupon_code=code)  # another member's
    till.buy(m, 6_000, expect=404, coupon_code="AAAA-AAAA-AAAA")
    used = till.buy(m, 6_000, coupon_code=code.lower().replace("-", " "))  # as typed at a till
    assert used["discount_minor"] == 1_000 and used["paid_minor"] == 5_000 and used["points"] == 100  # first order x2 on the rest
    till.buy(m, 6_000, expect=409, coupon_code=code)  # used
    listed = brand.client.get("/v1/me/reward-orders", headers=m["auth"]).json()
    assert listed[0]["coupon"]["status"] == "used"
    # A used coupon's order cannot be cancelled; an unused coupon's can, and it is void.
    assert brand.client.post(f"/v1/me/reward-orders/{placed['order_ref']}/cancellation", headers=m["auth"]).status_code == 409
    second = order(brand, m, "ten-off", "c2").json()
    clock.advance(days=7, minutes=1)
    till.buy(m, 6_000, expect=409, coupon_code=second["coupon"]["code"])  # expired
    r = brand.client.post(f"/v1/me/reward-orders/{second['order_ref']}/cancellation", headers=m["auth"])
    assert r.status_code == 200 and r.json()["coupon"]["status"] == "void"


def test_pay_with_points_earns_on_the_rest_and_a_refund_returns_them_in_proportion(brand, clock):
    till = Till(brand, clock)
    m = enrol(brand, "+8613800000106")  # 100 welcome points
    first = till.buy(m, 50_000)  # 1,000 points (first order x2): balance 1,100
    assert first["balance"] == 1_100
    info = brand.client.get("/v1/brand").json()
    assert info["points_per_currency_unit"] == 100 and info["home_currency"] == "CNY"
    # 600 points pay ¥6 of a ¥100 purchase: it earns on ¥94, in the same request.
    paid = till.buy(m, 10_000, points_burned=600)
    assert (paid["points_burned"], paid["paid_minor"], paid["points"]) == (600, 9_400, 94)
    assert paid["balance"] == 1_100 - 600 + 94
    # A retry is the same outcome; the same key with another burn is refused.
    r = purchase(brand, m["member_ref"], 10_000, f"till-{till.n}", clock.now, points_burned=600)
    assert r.status_code == 200 and r.json()["replayed"] and r.json()["balance"] == paid["balance"]
    r = purchase(brand, m["member_ref"], 10_000, f"till-{till.n}", clock.now, points_burned=700)
    assert r.status_code == 422
    # Refused: more than held, more than the price, not a whole number of fen, a foreign currency.
    assert till.buy(m, 10_000, expect=409, points_burned=5_000)["code"] == "insufficient_points"
    assert "more than the" in till.buy(m, 1_000, expect=400, points_burned=1_100)["detail"]
    assert till.buy(m, 10_000, expect=422, points_burned=-1)["code"] == "invalid_request"
    assert till.buy(m, 10_000, expect=400, points_burned=100, currency="USD")["code"] == "bad_request"
    assert balance(brand, m)["points"] == paid["balance"]
    # Refunds: in thirds, the burned points come back 200 at a time, the earned ones go.
    backs = [refund(brand, paid["purchase_ref"], amount, f"rf{i}").json() for i, amount in enumerate((3_333, 3_333, 3_334))]
    assert [b["points_returned"] for b in backs] == [199, 200, 201]
    assert sum(b["points_clawed_back"] for b in backs) == 94
    assert backs[-1]["balance"] == 1_100
    assert db_balance(brand, m["member_ref"]) == (1_100, 1_100, 1_100)


def test_points_pay_whole_multiples_only(tmp_path, clock, database_url):
    # JPY has no minor unit: at 100 points = ¥1, points pay in hundreds.
    from gateway.settings import CurrencyEarn, EarnRules

    b = start_local_brand(tmp_path, "yen", database_url, clock=clock, earn=EarnRules(currencies={"JPY": CurrencyEarn(minor_per_unit=1)}))
    try:
        till = Till(b, clock)
        m = enrol(b, "+8613800000107")  # 100 welcome points
        assert "multiple of 100" in till.buy(m, 500, expect=400, points_burned=50, currency="JPY")["detail"]
        assert till.buy(m, 500, points_burned=100, currency="JPY")["paid_minor"] == 499
    finally:
        b.close()


def test_fifty_members_ordering_the_last_ten_get_exactly_ten(brand):
    define(brand, "last-ten", points_price=10, stock=10)
    shoppers = [enrol(brand, f"+86139000{i:05d}") for i in range(50)]
    requests = [("/v1/me/reward-orders", {"reward": "last-ten"}, m["auth"] | {"Idempotency-Key": "rush"}) for m in shoppers]
    with Server(brand.gw) as url:
        responses = storm(url, requests)
    ok = [r for r in responses if r.status_code == 201]
    refused = [r for r in responses if r.status_code != 201]
    assert len(ok) == 10, sorted(r.status_code for r in responses)
    assert all(r.status_code == 409 and r.json()["reason"] == "out of stock" for r in refused), [r.text for r in refused][:3]
    assert {x["code"]: x["stock"] for x in brand.client.get("/v1/admin/rewards", headers=brand.as_("operator")).json()}["last-ten"] == 0
    spent = sum(100 - db_balance(brand, m["member_ref"])[0] for m in shoppers)
    assert spent == 10 * 10  # only the ten who got one paid


def test_one_coupon_at_two_tills_at_once_is_used_once(brand, clock):
    m = enrol(brand, "+8613800000108")
    define(brand, "five-off", kind="coupon", points_price=10, coupon_value_minor=500)
    code = order(brand, m, "five-off", "c").json()["coupon"]["code"]
    clock.advance(minutes=1)
    body = {"member_ref": m["member_ref"], "amount_minor": 2_000, "occurred_at": clock.now.isoformat(), "coupon_code": code}
    requests = [("/v1/purchases", body, brand.as_("pos") | {"Idempotency-Key": f"till-{i}"}) for i in range(2)]
    with Server(brand.gw) as url:
        responses = storm(url, requests)
    assert sorted(r.status_code for r in responses) == [201, 409], [r.text for r in responses]
    used = next(r.json() for r in responses if r.status_code == 201)
    assert used["discount_minor"] == 500 and used["paid_minor"] == 1_500


def test_the_liability_report_accounts_for_every_point(brand, clock):
    till = Till(brand, clock)
    m, n = enrol(brand, "+8613800000120"), enrol(brand, "+8613800000121")  # 100 welcome points each
    till.buy(m, 50_000)  # 1,000 (first order x2)
    define(brand, "mug", points_price=60)
    order(brand, m, "mug", "l1")
    paid = till.buy(m, 10_000, points_burned=600)  # earns 94
    back = refund(brand, paid["purchase_ref"], 5_000, "l-rf").json()  # 300 burned points back, 47 earned ones clawed back
    clock.advance(days=30)
    brand.client.put("/v1/admin/causes/trees", json={"name": "Trees"}, headers=brand.as_("operator"))
    brand.client.post("/v1/me/donations", json={"cause": "trees", "points": 10}, headers=m["auth"] | {"Idempotency-Key": "l-d"})
    brand.client.post("/v1/me/gifts", json={"to_member_ref": n["member_ref"], "points": 5}, headers=m["auth"] | {"Idempotency-Key": "l-g"})
    r = brand.client.get("/v1/audit/liability", headers=brand.as_("auditor"))
    assert r.status_code == 200, r.text
    report = r.json()
    held = sum(db_balance(brand, x["member_ref"])[0] for x in (m, n))
    assert (report["issued"], report["spent"], report["clawed_back"], report["donated"], report["given"], report["expired"]) == (
        1_294, 60 + 600 - back["points_returned"], back["points_clawed_back"], 10, 5, 0)
    assert report["outstanding"] == held == (report["issued"] + report["alliance_in"] - report["spent"] - report["exchanged_out"]
                                             - report["expired"] - report["clawed_back"] - report["donated"])
    assert report["outstanding_value_minor"] == held  # 100 points = ¥1: a point is worth one fen
    assert report["consumption_bp"] == (report["spent"] + report["donated"]) * 10_000 // 1_294
    assert (report["expiry_benchmark_bp"], report["consumption_benchmark_bp"]) == (800, 8_200)
    # A year later, what was not spent has expired: breakage is all of it.
    clock.advance(days=400)
    assert brand.client.post("/v1/admin/maintenance", headers=brand.as_("operator")).status_code == 200
    report = brand.client.get("/v1/audit/liability", headers=brand.as_("operator")).json()
    assert report["outstanding"] == 0 and report["expired"] == held
    assert report["breakage_bp"] == held * 10_000 // 1_294
    assert brand.client.get("/v1/audit/liability", headers=m["auth"]).status_code == 403


def test_one_grouped_write_burns_earns_and_uses_coupons_in_order(brand, clock):
    """Concurrent till requests share one transaction (purchases.ingest): within it each purchase sees
    the ones before it, as if sent one by one: points earned by an earlier purchase pay a later one,
    a second burn finds what the first left, a coupon presented twice is used once, and a refused
    purchase uses nothing."""
    from gateway.services import purchases

    m = enrol(brand, "+8613800000191")  # 100 welcome points
    define(brand, "voucher", kind="coupon", points_price=10, coupon_value_minor=700)
    code = order(brand, m, "voucher", "v").json()["coupon"]["code"]  # 90 points left
    clock.advance(minutes=1)

    def event(key: str, amount: int, **extra) -> purchases.PurchaseEvent:
        return purchases.PurchaseEvent(idempotency_key=f"grouped:{key}", body_hash=key.ljust(64, "0"), amount_minor=amount,
                                       currency="CNY", channel="store", eco=False, occurred_at=clock.now, member_ref=m["member_ref"],
                                       **extra)

    earned, burned, short, overpaid, couponed, again = purchases.ingest_committed(brand.gw, [
        event("earn", 20_000), event("burn", 5_000, points_burned=300), event("short", 5_000, points_burned=300),
        event("overpaid", 3_000, coupon_code=code, points_burned=2_400), event("coupon", 3_000, coupon_code=code),
        event("again", 3_000, coupon_code=code)])
    assert earned.points == 400 and earned.paid_minor is None  # first order: x2
    assert (burned.points_burned, burned.paid_minor, burned.points) == (300, 4_700, 47)  # paid with points the batch earned
    assert isinstance(short, purchases.GatewayError) and short.code == "insufficient_points"
    assert "237 available" in short.detail  # 90 + 400 - 300 + 47
    # Refused (the points pay more than the coupon leaves to pay): its coupon stays open for the next.
    assert isinstance(overpaid, purchases.GatewayError) and "more than the 2300 left to pay" in overpaid.detail
    assert (couponed.discount_minor, couponed.paid_minor, couponed.points) == (700, 2_300, 23)
    assert isinstance(again, purchases.GatewayError) and "already used" in again.detail
    assert db_balance(brand, m["member_ref"]) == (260,) * 3  # 237 + 23: balance, entries and lots agree
    with brand.gw.sessions() as session:
        coupon = session.query(Coupon).one()
        assert coupon.status == "used" and coupon.purchase_id is not None
    # Each replays alone with its first outcome.
    [replayed] = purchases.ingest_committed(brand.gw, [event("burn", 5_000, points_burned=300)])
    assert replayed.replayed and (replayed.points_burned, replayed.paid_minor) == (300, 4_700)
    assert db_balance(brand, m["member_ref"])[0] == 260
