"""Bad input gets a 4xx with a machine-readable reason, never a 500: targeted cases, then random
bodies (hypothesis) thrown at every POST/PUT endpoint. Runs on SQLite and PostgreSQL (PostgreSQL is
stricter: NUL characters, column widths and 64-bit ranges fail there first)."""

from __future__ import annotations

import itertools
import json
from datetime import timedelta

import pytest
from eth_account.messages import encode_defunct
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from harness import (
    Clock,
    authorise,
    consent,
    enrol,
    exchange,
    link_wallet,
    make_database_url,
    new_wallet,
    purchase,
    start_world_brand,
)

_phones = itertools.count(1)


def phone() -> str:
    return f"+86138{next(_phones):08d}"


def send_json(client, method: str, path: str, body, headers: dict | None = None):
    """Send any JSON value, lone surrogates included (escaped, as json.dumps does by default)."""
    return client.request(method, path, content=json.dumps(body).encode(), headers={"Content-Type": "application/json"} | (headers or {}))


def expect(r, status: int, error: str | None = None) -> dict:
    assert r.status_code == status, f"expected {status}, got {r.status_code}: {r.text}"
    body = r.json()
    assert body.get("detail"), f"a {status} must say why: {body}"
    if error is not None:
        assert body.get("code") == error, body
    return body


@pytest.fixture(scope="module")
def env(request, world, module_backend, tmp_path_factory):
    clock = Clock()
    url = make_database_url(request, module_backend, tmp_path_factory.mktemp("input"), "input")
    brand = start_world_brand(world, f"input-{module_backend}", 10, url, clock=clock)
    yield world, brand, clock
    brand.close()


@pytest.fixture
def member(env):
    """A fresh member with 20,000 points, alliance consent and a linked wallet."""
    world, brand, clock = env
    m = enrol(brand, phone())
    consent(brand, m, "alliance_exchange")
    m["wallet"] = new_wallet()
    link_wallet(brand, m, m["wallet"])
    clock.advance(minutes=2)
    r = purchase(brand, m["member_ref"], 1_000_000, f"seed-{m['member_ref']}", clock.now)
    assert r.status_code == 201 and r.json()["balance"] == 20_100, r.text
    return m


def test_malformed_and_unknown_member_refs(env):
    _, brand, clock = env
    op = brand.as_("operator")
    expect(brand.client.get("/v1/members/not-a-uuid", headers=op), 422, "invalid_request")
    expect(brand.client.get("/v1/members/00000000-0000-0000-0000-000000000000", headers=op), 404, "not_found")
    expect(brand.client.post("/v1/members/'; DROP TABLE members;--/status", json={"status": "frozen", "reason": "x"}, headers=op), 422)
    expect(brand.client.get("/v1/members/%00/export", headers=op), 422)
    for ref in ("xyz", "", "0" * 36, None, 12):
        r = brand.client.post("/v1/purchases", headers=brand.as_("pos") | {"Idempotency-Key": "k-ref"},
                              json={"member_ref": ref, "amount_minor": 100, "occurred_at": clock.now.isoformat()})
        expect(r, 422, "invalid_request")
    r = purchase(brand, "00000000-0000-0000-0000-000000000000", 100, "k-unknown", clock.now)
    expect(r, 404, "not_found")


def test_purchase_amounts_out_of_range(env, member):
    _, brand, clock = env
    for i, amount in enumerate([0, -1, -10**9, 10**13, 2**80, 1.5, "ten", "100", None, True, [100], {"v": 1}]):
        r = brand.client.post("/v1/purchases", headers=brand.as_("pos") | {"Idempotency-Key": f"amt-{i}"},
                              json={"member_ref": member["member_ref"], "amount_minor": amount, "occurred_at": clock.now.isoformat()})
        expect(r, 422, "invalid_request")
    assert brand.client.get("/v1/me/balance", headers=member["auth"]).json()["points"] == 20_100


def test_implausible_amounts_and_times(env, member):
    _, brand, clock = env
    ref = member["member_ref"]
    expect(purchase(brand, ref, 10**9, "too-big", clock.now), 400, "bad_request")  # above max_purchase_minor
    expect(purchase(brand, ref, 100, "future", clock.now + timedelta(hours=1)), 400, "bad_request")
    r = brand.client.post("/v1/actions", headers=brand.as_("pos") | {"Idempotency-Key": "future-act"},
                          json={"member_ref": ref, "kind": "review", "occurred_at": (clock.now + timedelta(days=300)).isoformat()})
    expect(r, 400, "bad_request")
    r = brand.client.post("/v1/purchases", headers=brand.as_("pos") | {"Idempotency-Key": "bad-time"},
                          json={"member_ref": ref, "amount_minor": 100, "occurred_at": "yesterday"})
    expect(r, 422)
    for key in ("", "has space", "x" * 101, "semi;colon", "quote'"):
        r = brand.client.post("/v1/purchases", headers=brand.as_("pos") | {"Idempotency-Key": key},
                              json={"member_ref": ref, "amount_minor": 100, "occurred_at": clock.now.isoformat()})
        expect(r, 422, "invalid_request")
    r = brand.client.post("/v1/purchases", headers=brand.as_("pos"),
                          json={"member_ref": ref, "amount_minor": 100, "occurred_at": clock.now.isoformat()})
    expect(r, 422, "invalid_request")  # no Idempotency-Key at all


def test_exchange_amounts_out_of_range(env, member):
    _, brand, _ = env
    for i, amount in enumerate([0, -5, 10**10, 2**70, 0.5, "1", True, None]):
        expect(exchange(brand, member, amount, f"xa-{i}"), 422, "invalid_request")
    assert brand.client.get("/v1/me/balance", headers=member["auth"]).json()["points"] == 20_100


def test_unknown_purpose_and_identifier_kind(env, member):
    _, brand, clock = env
    expect(brand.client.put("/v1/me/consents/spam", json={"granted": True}, headers=member["auth"]), 422, "invalid_request")
    expect(brand.client.put("/v1/me/consents/%00", json={"granted": True}, headers=member["auth"]), 422, "invalid_request")
    expect(brand.client.put("/v1/me/consents/marketing", json={"granted": "maybe"}, headers=member["auth"]), 422)
    expect(brand.client.post("/v1/sessions", json={"kind": "passport", "value": "X1", "passphrase": "whatever"}), 422)
    expect(brand.client.post("/v1/enrolments", json={"identifiers": {"passport": "X1"}, "name": "N", "passphrase": "long enough pass"}), 422)
    r = brand.client.post("/v1/purchases", headers=brand.as_("pos") | {"Idempotency-Key": "kind"},
                          json={"identifier_kind": "passport", "identifier": "X1", "amount_minor": 100, "occurred_at": clock.now.isoformat()})
    expect(r, 422)
    r = brand.client.post("/v1/purchases", headers=brand.as_("pos") | {"Idempotency-Key": "both"},
                          json={"member_ref": member["member_ref"], "identifier_kind": "phone", "identifier": "+8613800000000",
                                "amount_minor": 100, "occurred_at": clock.now.isoformat()})
    expect(r, 422)  # either a member_ref or an identifier, not both
    expect(brand.client.get("/v1/audit/logs/secret-log", headers=brand.as_("auditor")), 422, "invalid_request")
    r = brand.client.post("/v1/actions", headers=brand.as_("pos") | {"Idempotency-Key": "act-kind"},
                          json={"member_ref": member["member_ref"], "kind": "sleep", "occurred_at": clock.now.isoformat()})
    expect(r, 400, "bad_request")


def test_invalid_phone(env):
    _, brand, clock = env
    for bad in ["12", "abc", "+1", "+86 000", "1" * 32, "+999999999999", "\u0660\u0661"]:
        r = brand.client.post("/v1/enrolments", json={"identifiers": {"phone": bad}, "name": "N", "passphrase": "long enough pass"})
        expect(r, 400, "bad_request")
        expect(brand.client.post("/v1/sessions", json={"kind": "phone", "value": bad, "passphrase": "long enough pass"}), 400)
        r = brand.client.post("/v1/purchases", headers=brand.as_("pos") | {"Idempotency-Key": "bad-phone"},
                              json={"identifier_kind": "phone", "identifier": bad, "amount_minor": 100, "occurred_at": clock.now.isoformat()})
        expect(r, 400, "bad_request")
    # A valid identifier locates the member (no member_ref needed).
    p = phone()
    m = enrol(brand, p)
    clock.advance(minutes=2)
    r = brand.client.post("/v1/purchases", headers=brand.as_("pos") | {"Idempotency-Key": "by-phone"},
                          json={"identifier_kind": "phone", "identifier": p.replace("+86", "+86 "), "amount_minor": 100,
                                "occurred_at": clock.now.isoformat()})
    assert r.status_code == 201 and r.json()["member_ref"] == m["member_ref"], r.text


def test_enrolment_and_login_refusals(env):
    _, brand, _ = env
    p = phone()
    enrol(brand, p, identifiers={"phone": p, "email": f"{p[1:]}@example.com"})
    enrolment = lambda body: brand.client.post("/v1/enrolments", json=body)  # noqa: E731
    # An identifier that has an account is answered like a new one (its owner is told by the message).
    assert enrolment({"identifiers": {"phone": p}, "name": "Twin", "passphrase": "long enough pass"}).status_code == 202
    expect(enrolment({"identifiers": {}, "name": "N", "passphrase": "long enough pass"}), 400)
    expect(enrolment({"identifiers": {"email": "not-an-email"}, "name": "N", "passphrase": "long enough pass"}), 400)
    expect(enrolment({"identifiers": {"card": "4539 1488 0343 6467"}, "name": "N", "passphrase": "long enough pass"}), 400)
    expect(enrolment({"identifiers": {"phone": phone()}, "name": "N", "passphrase": "short"}), 422)
    expect(enrolment({"identifiers": {"phone": phone()}, "name": "N", "passphrase": "long enough pass", "birthday": "1990-02-30"}), 422)
    expect(brand.client.post("/v1/sessions", json={"kind": "phone", "value": p, "passphrase": "wrong passphrase"}), 401, "unauthorised")
    expect(brand.client.post("/v1/sessions", json={"kind": "email", "value": "nobody@example.com", "passphrase": "x" * 12}), 401)
    # Staff enrolment (no code) refuses a duplicate openly: the till sees who is a member anyway.
    r = brand.client.post("/v1/members", json={"identifiers": {"phone": p}, "name": "Twin"}, headers=brand.as_("pos"))
    expect(r, 409, "conflict")


def test_wallet_link_refusals(env):
    world, brand, _ = env
    m = enrol(brand, phone())
    wallet, intruder = new_wallet(), new_wallet()
    # No alliance_exchange consent: no challenge at all.
    expect(brand.client.post("/v1/me/wallet/challenges", json={"address": wallet.address}, headers=m["auth"]), 403, "consent_required")
    consent(brand, m, "alliance_exchange")
    expect(brand.client.post("/v1/me/wallet/challenges", json={"address": "0x1234"}, headers=m["auth"]), 422)
    challenge = brand.client.post("/v1/me/wallet/challenges", json={"address": wallet.address}, headers=m["auth"]).json()
    wrong = "0x" + bytes(intruder.sign_message(encode_defunct(text=challenge["message"])).signature).hex()
    expect(brand.client.post("/v1/me/wallet", json={"challenge_id": challenge["challenge_id"], "signature": wrong}, headers=m["auth"]),
           403, "forbidden")
    garbage = "0x" + "ff" * 65
    expect(brand.client.post("/v1/me/wallet", json={"challenge_id": challenge["challenge_id"], "signature": garbage}, headers=m["auth"]), 400)
    expect(brand.client.post("/v1/me/wallet", json={"challenge_id": "00000000-0000-0000-0000-000000000000", "signature": garbage},
                             headers=m["auth"]), 404, "not_found")
    expect(brand.client.post("/v1/me/wallet", json={"challenge_id": "nope", "signature": garbage}, headers=m["auth"]), 422)
    expect(brand.client.post("/v1/me/wallet", json={"challenge_id": "\u0000", "signature": garbage}, headers=m["auth"]), 422)
    expect(brand.client.post("/v1/me/wallet", json={"challenge_id": challenge["challenge_id"], "signature": "0x12"}, headers=m["auth"]), 422)
    assert brand.client.get("/v1/me", headers=m["auth"]).json()["wallet_address"] is None
    right = "0x" + bytes(wallet.sign_message(encode_defunct(text=challenge["message"])).signature).hex()
    assert brand.client.post("/v1/me/wallet", json={"challenge_id": challenge["challenge_id"], "signature": right},
                             headers=m["auth"]).status_code == 200
    # A challenge is good once.
    expect(brand.client.post("/v1/me/wallet", json={"challenge_id": challenge["challenge_id"], "signature": right}, headers=m["auth"]),
           409, "conflict")


def test_exchange_refusals(env, member):
    world, brand, _ = env
    # Insufficient points: 20,100 points at rate 10 buy at most 2,010 AP.
    body = expect(exchange(brand, member, 2_011, "too-many"), 409, "insufficient_points")
    assert body["available"] == 20_100 and body["needed"] == 20_110
    # Replayed key, different body.
    assert exchange(brand, member, 1, "x-replay").status_code == 201
    expect(exchange(brand, member, 2, "x-replay"), 422, "idempotency_key_reused")
    again = exchange(brand, member, 1, "x-replay")
    assert again.status_code == 200 and again.json()["replayed"] is True
    # Withdrawn consent: refused at once.
    consent(brand, member, "alliance_exchange", granted=False)
    expect(exchange(brand, member, 1, "x-no-consent"), 403, "consent_required")
    # Never consented (only loyalty_core is given at enrolment).
    fresh = enrol(brand, phone())
    expect(exchange(brand, fresh, 1, "x-never"), 403, "consent_required")
    # No wallet.
    other = enrol(brand, phone())
    consent(brand, other, "alliance_exchange")
    expect(exchange(brand, other, 1, "x-no-wallet"), 409, "conflict")
    # The longest key a client may send still fits (it is stored scoped by the member).
    assert exchange(brand, other, 1, "k" * 100).status_code == 409  # no wallet, but no 500 either
    consent(brand, member, "alliance_exchange")
    r = exchange(brand, member, 1, "k" * 100)
    assert r.status_code == 201, r.text
    expect(brand.client.get(f"/v1/me/exchanges/{'0' * 64}", headers=member["auth"]), 404, "not_found")
    expect(brand.client.get(f"/v1/me/exchanges/{'x' * 300}", headers=member["auth"]), 422, "invalid_request")
    expect(brand.client.get("/v1/me/exchanges/ab%00cd", headers=member["auth"]), 422, "invalid_request")


def test_redemption_refusals(env, member):
    world, brand, _ = env
    chain, alliance = world.chain, world.alliance
    assert exchange(brand, member, 50, "fund-ap").status_code == 201
    wallet = member["wallet"]
    soon = chain.timestamp() + 3600
    redeem = lambda auth: brand.client.post("/v1/me/redemptions", json=auth, headers=member["auth"])  # noqa: E731

    # Signed by another key than the owner's.
    thief = new_wallet()
    forged = authorise(alliance, thief, brand, 5, soon) | {"owner": wallet.address}
    expect(redeem(forged), 403, "forbidden")
    # For another brand.
    elsewhere = alliance.points.authorise(wallet, new_wallet().address, 5, soon).to_dict()
    expect(redeem(elsewhere), 400, "bad_request")
    # Expired deadline (by the gateway's clock, before any gas is spent).
    expect(redeem(authorise(alliance, wallet, brand, 5, int(env[2].now.timestamp()) - 10)), 400, "bad_request")
    # Tampered amount after signing.
    auth = authorise(alliance, wallet, brand, 5, soon)
    expect(redeem(auth | {"amount": 6}), 403, "forbidden")
    expect(redeem(auth | {"signature": "0x" + "00" * 65}), 400)
    # More AP than the wallet holds: the chain refuses it, nothing is credited.
    before = brand.client.get("/v1/me/balance", headers=member["auth"]).json()
    expect(redeem(authorise(alliance, wallet, brand, 51, soon)), 409, "chain_rejected")
    after = brand.client.get("/v1/me/balance", headers=member["auth"]).json()
    assert (after["points"], after["alliance_points"]) == (before["points"], before["alliance_points"]) == (before["points"], 50)
    # A deadline beyond what the database holds: refused with a reason, signature and all.
    far = authorise(alliance, wallet, brand, 5, 2**64 - 1)
    expect(redeem(far), 422, "invalid_request")
    # Out-of-range fields never reach the chain.
    for field, value in (("amount", 0), ("amount", -1), ("nonce", -1), ("nonce", 2**256), ("deadline", 0), ("owner", "0x12")):
        expect(redeem(auth | {field: value}), 422, "invalid_request")
    # The valid one still goes through, once; its replay with another amount is refused.
    r = redeem(auth)
    assert r.status_code == 201 and r.json()["status"] == "confirmed", r.text
    expect(redeem(authorise(alliance, wallet, brand, 7, soon, nonce=auth["nonce"])), 409, "conflict")


def test_refund_refusals_and_idempotency(env, member):
    _, brand, clock = env
    clock.advance(minutes=2)
    p = purchase(brand, member["member_ref"], 10_000, "ref-base", clock.now).json()
    refund = lambda amount, key: brand.client.post(  # noqa: E731
        f"/v1/purchases/{p['purchase_ref']}/refunds", json={"amount_minor": amount}, headers=brand.as_("pos") | {"Idempotency-Key": key})
    expect(refund(10_001, "too-much"), 409, "conflict")
    expect(refund(0, "zero"), 422)
    expect(refund(-5, "neg"), 422)
    assert refund(4_000, "part").status_code == 201
    expect(refund(5_000, "part"), 422, "idempotency_key_reused")
    expect(refund(6_001, "rest-plus-one"), 409, "conflict")
    assert refund(6_000, "rest").status_code == 201
    expect(refund(1, "after-full"), 409, "conflict")
    r = brand.client.post("/v1/purchases/00000000-0000-0000-0000-000000000000/refunds", json={"amount_minor": 1},
                          headers=brand.as_("pos") | {"Idempotency-Key": "ghost"})
    expect(r, 404, "not_found")
    r = brand.client.post("/v1/purchases/ab%00/refunds", json={"amount_minor": 1}, headers=brand.as_("pos") | {"Idempotency-Key": "nul"})
    expect(r, 422, "invalid_request")


def test_purchase_idempotency_key_reuse(env, member):
    _, brand, clock = env
    clock.advance(minutes=2)
    assert purchase(brand, member["member_ref"], 1_000, "same-key", clock.now).status_code == 201
    expect(purchase(brand, member["member_ref"], 1_001, "same-key", clock.now), 422, "idempotency_key_reused")
    expect(purchase(brand, member["member_ref"], 1_000, "same-key", clock.now, eco=True), 422, "idempotency_key_reused")
    r = brand.client.post("/v1/actions", headers=brand.as_("pos") | {"Idempotency-Key": "act"},
                          json={"member_ref": member["member_ref"], "kind": "review", "occurred_at": clock.now.isoformat()})
    assert r.status_code == 201
    r = brand.client.post("/v1/actions", headers=brand.as_("pos") | {"Idempotency-Key": "act"},
                          json={"member_ref": member["member_ref"], "kind": "share", "occurred_at": clock.now.isoformat()})
    expect(r, 422, "idempotency_key_reused")


def test_frozen_member(env, member):
    _, brand, clock = env
    op = brand.as_("operator")
    r = brand.client.post(f"/v1/members/{member['member_ref']}/status", json={"status": "frozen", "reason": "fraud check"}, headers=op)
    assert r.status_code == 200 and r.json()["status"] == "frozen"
    clock.advance(minutes=2)
    expect(purchase(brand, member["member_ref"], 1_000, "frozen-1", clock.now), 409, "member_not_active")
    r = brand.client.post("/v1/actions", headers=brand.as_("pos") | {"Idempotency-Key": "frozen-act"},
                          json={"member_ref": member["member_ref"], "kind": "review", "occurred_at": clock.now.isoformat()})
    expect(r, 409, "member_not_active")
    batch = brand.client.post("/v1/purchases/batch", headers=brand.as_("pos"), json={"events": [
        {"member_ref": member["member_ref"], "amount_minor": 100, "occurred_at": clock.now.isoformat(), "idempotency_key": "fb-1"}]})
    assert batch.status_code == 200 and batch.json()["rejected"] == 1 and batch.json()["results"][0]["code"] == "member_not_active"
    expect(brand.client.post(f"/v1/members/{member['member_ref']}/status", json={"status": "deleted", "reason": "x"}, headers=op), 422)
    expect(brand.client.post(f"/v1/members/{member['member_ref']}/status", json={"status": "active", "reason": ""}, headers=op), 422)


def test_batch_isolates_bad_events(env, member):
    _, brand, clock = env
    clock.advance(minutes=2)
    good = {"member_ref": member["member_ref"], "amount_minor": 1_000, "occurred_at": clock.now.isoformat()}
    events = [good | {"idempotency_key": "bt-1"},
              good | {"idempotency_key": "bt-2", "member_ref": "00000000-0000-0000-0000-000000000000"},
              good | {"idempotency_key": "bt-3", "amount_minor": 10**9},
              good | {"idempotency_key": "bt-1", "amount_minor": 999}]
    r = brand.client.post("/v1/purchases/batch", headers=brand.as_("pos"), json={"events": events})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [x["ok"] for x in results] == [True, False, False, False]
    assert [x["code"] for x in results[1:]] == ["not_found", "bad_request", "idempotency_key_reused"]
    expect(brand.client.post("/v1/purchases/batch", headers=brand.as_("pos"), json={"events": []}), 422)


def test_odd_bodies_and_parameters(env, member):
    _, brand, _ = env
    c = brand.client
    expect(c.post("/v1/enrolments", content=b"{not json", headers={"Content-Type": "application/json"}), 422)
    expect(c.post("/v1/enrolments", json=[1, 2, 3]), 422)
    expect(c.post("/v1/enrolments", json="just a string"), 422)
    expect(c.post("/v1/me/exchanges", content=b"ap_amount=1", headers=member["auth"] | {"Idempotency-Key": "form",
                                                                                    "Content-Type": "application/x-www-form-urlencoded"}), 422)
    aud = brand.as_("auditor")
    expect(c.get("/v1/audit/logs/consent-log/999999/proof", headers=aud), 404, "not_found")
    expect(c.get("/v1/audit/logs/consent-log/-1/proof", headers=aud), 422)
    expect(c.get(f"/v1/audit/logs/consent-log/{2**70}/proof", headers=aud), 422)
    expect(c.get("/v1/audit/logs/consent-log/x/proof", headers=aud), 422)
    expect(c.get("/v1/audit/logs/consent-log", params={"start": 2**70}, headers=aud), 422)
    assert c.get("/v1/audit/logs/consent-log", params={"start": 2**62}, headers=aud).json()["entries"] == []
    expect(c.get("/v1/audit/logs/consent-log", params={"limit": 0}, headers=aud), 422)
    expect(c.get("/v1/redemption-nonce", params={"owner": "nobody"}), 422)
    expect(c.post("/v1/admin/api-keys", json={"role": "root", "label": "x"}, headers=brand.as_("operator")), 422)
    r = c.post("/v1/admin/api-keys", json={"role": "auditor", "label": "nul\u0000label"}, headers=brand.as_("operator"))
    expect(r, 422, "invalid_request")
    # Lone surrogates are valid JSON escapes but not Unicode text.
    r = send_json(c, "POST", "/v1/sessions", {"kind": "phone", "value": "+8613800000000", "passphrase": "\ud800" * 12})
    assert r.status_code in (401, 422), r.text
    r = send_json(c, "POST", "/v1/enrolments", {"identifiers": {"phone": phone()}, "name": "Sur\ud800rogate", "passphrase": "pass\ud800word!!"})
    assert r.status_code in (400, 422), r.text
    r = send_json(c, "POST", "/v1/enrolments", {"identifiers": {"email": "a\udfff@example.com"}, "name": "N", "passphrase": "long enough pass"})
    assert r.status_code in (400, 422), r.text


# ---------------------------------------------------------------- random bodies

JSON_LEAVES = (st.none() | st.booleans() | st.integers(min_value=-(2**80), max_value=2**80) | st.floats(allow_nan=False)
               | st.text(alphabet=st.characters(codec=None, exclude_categories=()), max_size=40)
               | st.sampled_from(["", "0x" + "ab" * 20, "0x" + "11" * 65, "+8613812345678", "2026-03-03T10:00:00Z", "\u0000",
                                  "00000000-0000-0000-0000-000000000000", "phone", "email", "card", "frozen", "consent-log",
                                  "review", "x" * 300]))
JSON = st.recursive(JSON_LEAVES, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=3),
                    max_leaves=8)


def _post_endpoints(app) -> list[tuple[str, str, dict]]:
    out = []
    for path, ops in app.openapi()["paths"].items():
        for method, op in ops.items():
            if method in ("post", "put") and "requestBody" in op:
                out.append((method.upper(), path, op))
    return sorted(out, key=lambda e: (e[1], e[0]))


def _fields(app, op) -> list[str]:
    schema = op["requestBody"]["content"]["application/json"]["schema"]
    if "$ref" in schema:
        schema = app.openapi()["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return sorted(schema.get("properties", {}))


def test_random_bodies_never_500(env, member):
    """Bodies built from the endpoint's own field names with random values, and wholly random JSON."""
    world, brand, clock = env
    app = brand.client.app
    endpoints = _post_endpoints(app)
    assert len(endpoints) >= 12
    auth = {"/v1/me": member["auth"], "/v1/purchases": brand.as_("pos"), "/v1/actions": brand.as_("pos")}

    def headers_for(path: str) -> dict:
        for prefix, h in auth.items():
            if path.startswith(prefix):
                return h | {"Idempotency-Key": "fuzz"}
        return brand.as_("operator") | {"Idempotency-Key": "fuzz"}

    def concrete(path: str) -> str:
        return (path.replace("{member_ref}", member["member_ref"]).replace("{purpose}", "marketing")
                .replace("{purchase_ref}", "00000000-0000-0000-0000-000000000000")
                .replace("{enrolment_id}", "00000000-0000-0000-0000-000000000000"))

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
    @given(data=st.data())
    def check(data):
        method, path, op = data.draw(st.sampled_from(endpoints))
        fields = _fields(app, op)
        if fields and data.draw(st.booleans()):
            body = data.draw(st.fixed_dictionaries({}, optional={f: JSON for f in fields}))
        else:
            body = data.draw(JSON)
        r = send_json(brand.client, method, concrete(path), body, headers_for(path))
        assert r.status_code < 500, f"{method} {path} {body!r} -> {r.status_code} {r.text}"

    check()
