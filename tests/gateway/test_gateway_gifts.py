"""Gifts between members and donations to a brand's causes, through HTTP on SQLite and PostgreSQL:
both sides see them, the given points keep their expiry, and the anti-fraud limits hold (no gift from
a new account, daily limits on giving and receiving), also when many gifts arrive at once."""

from __future__ import annotations

import json

import pytest
from harness import Server, db_balance, enrol, purchase, start_local_brand, storm

from gateway.models import AuditLogEntry, PointLot


@pytest.fixture
def brand(database_url, tmp_path, clock):
    b = start_local_brand(tmp_path, "shop", database_url, clock=clock, member_token_days=1000, gift_min_tenure_days=10,
                          gift_daily_points=300, gift_daily_count=3, gift_received_daily_points=400)
    yield b
    assert b.client.get("/v1/audit/reconciliation", headers=b.as_("auditor")).json()["ledger"]["ok"]
    b.close()


def give(brand, member, to: dict, points: int, key: str):
    return brand.client.post("/v1/me/gifts", json={"to_member_ref": to["member_ref"], "points": points},
                             headers=member["auth"] | {"Idempotency-Key": key})


def donate(brand, member, cause: str, points: int, key: str):
    return brand.client.post("/v1/me/donations", json={"cause": cause, "points": points}, headers=member["auth"] | {"Idempotency-Key": key})


def test_a_gift_moves_points_with_their_expiry_and_both_members_see_it(brand, clock):
    alice, bob = enrol(brand, "+8613800000201"), enrol(brand, "+8613800000202")  # 100 welcome points each
    r = give(brand, alice, bob, 40, "g1")
    assert r.status_code == 409 and r.json()["reason"] == "new_account"  # a new account cannot give
    clock.advance(days=10)
    r = give(brand, alice, bob, 40, "g1")
    assert r.status_code == 201, r.text
    gift = r.json()
    assert gift["balance"] == 60 and gift["to_member_ref"] == bob["member_ref"]
    # A retry answers the same and moves nothing more; another request under the key is refused.
    again = give(brand, alice, bob, 40, "g1")
    assert again.status_code == 200 and again.json()["gift_ref"] == gift["gift_ref"] and again.json()["balance"] == 60
    assert give(brand, alice, bob, 41, "g1").status_code == 422
    assert db_balance(brand, alice["member_ref"]) == (60, 60, 60)
    assert db_balance(brand, bob["member_ref"]) == (140, 140, 140)
    # Both see it, under one reference, in their gifts and in their ledger.
    a_lines = brand.client.get("/v1/me/gifts", headers=alice["auth"]).json()
    b_lines = brand.client.get("/v1/me/gifts", headers=bob["auth"]).json()
    assert [(x["direction"], x["points"], x["member_ref"]) for x in a_lines] == [("given", 40, bob["member_ref"])]
    assert [(x["direction"], x["points"], x["member_ref"]) for x in b_lines] == [("received", 40, alice["member_ref"])]
    a_ledger = brand.client.get("/v1/me/ledger", headers=alice["auth"]).json()
    b_ledger = brand.client.get("/v1/me/ledger", headers=bob["auth"]).json()
    assert (a_ledger[-1]["kind"], a_ledger[-1]["amount"]) == ("gift_out", -40)
    assert (b_ledger[-1]["kind"], b_ledger[-1]["amount"]) == ("gift_in", 40)
    assert a_ledger[-1]["ref"] == b_ledger[-1]["ref"] == gift["gift_ref"]
    # The given points expire when Alice's would have: a gift never extends them.
    with brand.gw.sessions() as session:
        lots = session.query(PointLot).order_by(PointLot.id).all()
        alice_lot, bob_gift_lot = lots[0], lots[-1]
        assert bob_gift_lot.amount == 40 and bob_gift_lot.expires_at == alice_lot.expires_at


def test_gifts_refused_with_a_reason(brand, clock):
    alice, bob = enrol(brand, "+8613800000203"), enrol(brand, "+8613800000204")
    frozen = enrol(brand, "+8613800000205")
    clock.advance(days=10)
    r = brand.client.post(f"/v1/members/{frozen['member_ref']}/status", json={"status": "frozen", "reason": "test"}, headers=brand.as_("operator"))
    assert r.status_code == 200, r.text
    no_one = {"member_ref": "01234567-89ab-7def-8123-456789abcdef"}
    for to in (no_one, frozen):  # one answer, whatever the reason: nothing about the account is revealed
        r = give(brand, alice, to, 10, f"x-{to['member_ref']}")
        assert r.status_code == 404 and r.json()["detail"] == "no member with this reference can receive points"
    assert give(brand, alice, alice, 10, "self").status_code == 400
    assert give(brand, alice, bob, 0, "zero").status_code == 422
    r = brand.client.post("/v1/me/gifts", json={"to_member_ref": "not-a-ref", "points": 1}, headers=alice["auth"] | {"Idempotency-Key": "k"})
    assert r.status_code == 422
    r = give(brand, alice, bob, 101, "much")
    assert r.status_code == 409 and r.json()["code"] == "insufficient_points"
    # Only members give: an operator's key cannot.
    r = brand.client.post("/v1/me/gifts", json={"to_member_ref": bob["member_ref"], "points": 1},
                          headers=brand.as_("operator") | {"Idempotency-Key": "op"})
    assert r.status_code == 403
    assert db_balance(brand, alice["member_ref"])[0] == 100


def test_daily_limits_on_giving_and_receiving(brand, clock):
    buyer = enrol(brand, "+8613800000210")
    farms = [enrol(brand, f"+86138000002{11 + i}") for i in range(5)]
    clock.advance(days=10)
    for i, farm in enumerate(farms):  # 1,000 points each
        assert purchase(brand, farm["member_ref"], 50_000, f"p{i}", clock.now).status_code == 201
    f = farms[0]
    # Per giver: 300 points a day, in at most 3 gifts or donations.
    assert give(brand, f, buyer, 250, "a1").status_code == 201
    r = give(brand, f, buyer, 60, "a2")
    assert r.status_code == 409 and r.json()["reason"] == "daily_points" and r.json()["left"] == 50
    assert give(brand, f, buyer, 50, "a3").status_code == 201
    # Per recipient: 400 points a day, whoever gives them (the buyer gathering farmed points).
    assert give(brand, farms[1], buyer, 100, "b1").status_code == 201
    r = give(brand, farms[2], buyer, 1, "c1")
    assert r.status_code == 409 and r.json()["reason"] == "recipient_daily_points"
    # Counts per day of the brand's calendar: the next day opens again.
    clock.advance(days=1)
    assert [give(brand, farms[3], buyer, 10, f"d{i}").status_code for i in range(4)] == [201, 201, 201, 409]
    assert give(brand, farms[3], buyer, 10, "d9").json()["reason"] == "daily_count"
    assert db_balance(brand, buyer["member_ref"])[0] == 100 + 400 + 30


def test_donations_to_a_listed_cause(brand, clock):
    m = enrol(brand, "+8613800000220")
    clock.advance(days=10)
    r = brand.client.put("/v1/admin/causes/trees", json={"name": "Plant trees", "description": "one tree per 100 points"},
                         headers=brand.as_("operator"))
    assert r.status_code == 200 and r.json()["version"] == 1
    assert brand.client.put("/v1/admin/causes/trees", json={"name": "x"}, headers=brand.as_("pos")).status_code == 403
    assert donate(brand, m, "oceans", 10, "d0").status_code == 404
    r = donate(brand, m, "trees", 30, "d1")
    assert r.status_code == 201 and r.json()["cause"] == "trees" and r.json()["balance"] == 70
    assert donate(brand, m, "trees", 30, "d1").json()["replayed"] is True
    listed = brand.client.get("/v1/causes", headers=m["auth"]).json()
    assert [(c["code"], c["donated"]) for c in listed] == [("trees", 30)]
    assert [line["direction"] for line in brand.client.get("/v1/me/gifts", headers=m["auth"]).json()] == ["donated"]
    assert brand.client.get("/v1/me/ledger", headers=m["auth"]).json()[-1]["kind"] == "donation"
    # A cause taken off the list takes no more donations; the change is audited.
    brand.client.put("/v1/admin/causes/trees", json={"name": "Plant trees", "active": False}, headers=brand.as_("operator"))
    assert donate(brand, m, "trees", 10, "d2").status_code == 404
    assert brand.client.get("/v1/causes", headers=m["auth"]).json() == []
    with brand.gw.sessions() as session:
        logged = [json.loads(e.payload) for e in session.query(AuditLogEntry)]
    assert [(e["details"]["version"], e["details"]["active"]) for e in logged if e["action"] == "cause.defined"] == [(1, True), (2, False)]


def test_concurrent_gifts_cannot_pass_the_limits_together(database_url, tmp_path, clock):
    # 20 farmed accounts give 100 points each to one account at the same moment, and that account
    # gives to them: at most 400 arrive (the recipient's daily limit); no deadlock, books balanced.
    b = start_local_brand(tmp_path, "crowd", database_url, clock=clock, gift_min_tenure_days=0, gift_received_daily_points=400)
    try:
        target = enrol(b, "+8613800000230")
        givers = [enrol(b, f"+86138000003{i:02d}") for i in range(20)]
        with Server(b.gw) as url:
            requests = [("/v1/me/gifts", {"to_member_ref": target["member_ref"], "points": 100}, g["auth"] | {"Idempotency-Key": "k"})
                        for g in givers]
            requests += [("/v1/me/gifts", {"to_member_ref": g["member_ref"], "points": 5}, target["auth"] | {"Idempotency-Key": f"t{i}"})
                         for i, g in enumerate(givers[:5])]
            answers = storm(url, requests)
        codes = [r.status_code for r in answers]
        assert codes[:20].count(201) == 4 and codes[:20].count(409) == 16, codes
        assert set(codes[20:]) <= {201, 409}
        given_back = 5 * codes[20:].count(201)
        assert db_balance(b, target["member_ref"])[0] == 100 + 400 - given_back
        assert b.client.get("/v1/audit/reconciliation", headers=b.as_("auditor")).json()["ledger"]["ok"]
    finally:
        b.close()


def test_gifts_in_the_export_and_after_an_erasure(brand, clock):
    alice, bob = enrol(brand, "+8613800000240"), enrol(brand, "+8613800000241")
    clock.advance(days=10, hours=5, minutes=7)
    gift = give(brand, alice, bob, 25, "e1").json()
    exported = brand.client.get("/v1/me/export", headers=alice["auth"]).json()
    assert [(g["gift_ref"], g["direction"], g["points"]) for g in exported["gifts"]] == [(gift["gift_ref"], "given", 25)]
    assert brand.client.post("/v1/me/erasure", headers=alice["auth"]).status_code == 200
    # Bob keeps his gift and its points; when it happened is kept to the day only.
    [line] = brand.client.get("/v1/me/gifts", headers=bob["auth"]).json()
    assert line["gift_ref"] == gift["gift_ref"] and line["points"] == 25
    assert line["at"].endswith("T00:00:00Z") and db_balance(brand, bob["member_ref"])[0] == 125
