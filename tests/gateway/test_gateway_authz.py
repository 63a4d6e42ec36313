"""Authorisation matrix: every role x every endpoint of the OpenAPI spec.

The spec is iterated, so an endpoint added later without an entry in ENDPOINTS fails the test rather
than go unchecked. Each entry names the roles it admits and builds a request that succeeds for them;
every other role must get 401 (no or unknown credentials) or 403 (a known role that is not admitted),
and a member's own-token endpoints only ever touch that member's data."""

from __future__ import annotations

import base64
import itertools
import json
import uuid
from dataclasses import dataclass
from typing import Callable

import pytest
from eth_account.messages import encode_defunct
from harness import (
    Clock,
    authorise,
    consent,
    enrol,
    exchange,
    last_code,
    link_wallet,
    new_wallet,
    purchase,
    start_enrolment,
    start_world_brand,
    write_release,
)

PUBLIC = frozenset({"anonymous", "member", "other", "operator", "pos", "auditor", "invalid"})
MEMBER = frozenset({"member", "other"})
OPERATOR = frozenset({"operator"})
TILL = frozenset({"pos", "operator"})
READER = frozenset({"auditor", "operator"})
ROLES = ("anonymous", "invalid", "member", "other", "operator", "pos", "auditor")
_seq = itertools.count(1)


def uniq() -> int:
    return next(_seq)


@dataclass
class Ctx:
    """What the requests refer to: M is the target member, O the other member."""

    brand: object
    world: object
    clock: Clock
    m: dict
    o: dict
    wallets: dict  # member_ref -> wallet
    m_purchase: str
    m_exchange: str
    m_redemption: str
    m_order: str
    sink: dict  # a third member, who receives the gifts

    def member_for(self, role: str) -> dict:
        return self.o if role == "other" else self.m

    def throwaway(self) -> dict:
        """A member made for one destructive call (erasure, freezing)."""
        return enrol(self.brand, f"+86139{uniq():08d}")


@dataclass
class Endpoint:
    roles: frozenset
    build: Callable[[Ctx, str], dict]  # -> {"path", "json"?, "params"?, "headers"?, "auth"?}
    ok: tuple = (200,)


def _challenge(ctx: Ctx, role: str) -> dict:
    return {"path": "/v1/me/wallet/challenges", "json": {"address": ctx.wallets[ctx.member_for(role)["member_ref"]].address}}


def _link(ctx: Ctx, role: str) -> dict:
    member = ctx.member_for(role)
    wallet = ctx.wallets[member["member_ref"]]
    if role in MEMBER:
        r = ctx.brand.client.post("/v1/me/wallet/challenges", json={"address": wallet.address}, headers=member["auth"])
        assert r.status_code == 201, r.text
        challenge = r.json()
        signature = "0x" + bytes(wallet.sign_message(encode_defunct(text=challenge["message"])).signature).hex()
        return {"path": "/v1/me/wallet", "json": {"challenge_id": challenge["challenge_id"], "signature": signature}}
    return {"path": "/v1/me/wallet", "json": {"challenge_id": "00000000-0000-0000-0000-000000000000", "signature": "0x" + "11" * 65}}


def _redeem(ctx: Ctx, role: str) -> dict:
    wallet = ctx.wallets[ctx.member_for(role)["member_ref"]]
    return {"path": "/v1/me/redemptions",
            "json": authorise(ctx.world.alliance, wallet, ctx.brand, 1, ctx.world.chain.timestamp() + 3600)}


def _erase_me(ctx: Ctx, role: str) -> dict:
    out = {"path": "/v1/me/erasure"}
    if role in MEMBER:
        out["auth"] = ctx.throwaway()["auth"]
    return out


def _verify(ctx: Ctx, role: str) -> dict:
    phone = f"+86135{uniq():08d}"
    r = start_enrolment(ctx.brand, {"phone": phone}, "Verified Member")
    assert r.status_code == 202, r.text
    return {"path": f"/v1/enrolments/{r.json()['enrolment_id']}/verification",
            "json": {"codes": {"phone": last_code(ctx.brand, "phone", phone)}}}


def _overlap_message(ctx, role) -> dict:
    import private_set_intersection.python as psi

    from gateway.services import overlap

    request = psi.client.CreateWithNewKey(False).CreateRequest(["phone:+8613800000001"]).SerializeToString()
    fields = {"ref": str(uuid.uuid4()), "kind": "phone", "at": ctx.clock.now.isoformat(), "initiator": ctx.brand.gw.brand_address,
              "request": base64.b64encode(request).decode()}
    return {"path": "/v1/alliance/overlap", "json": fields | {"signature": overlap._sign(ctx.brand.gw, fields)}}


def _programme_change(ctx, role) -> dict:
    """The programme in force saved again as the next version (what an operator's edit sends)."""
    now = ctx.brand.client.get("/v1/admin/programme", headers=ctx.brand.as_("operator")).json()
    return {"path": "/v1/admin/programme", "json": {"expected_version": now["version"], "note": "matrix", "programme": now["programme"]}}


def _revoke_key(ctx: Ctx, role: str) -> dict:
    r = ctx.brand.client.post("/v1/admin/api-keys", json={"role": "pos", "label": "to revoke"}, headers=ctx.brand.as_("operator"))
    assert r.status_code == 201, r.text
    return {"path": f"/v1/admin/api-keys/{r.json()['id']}"}


def _member_path(suffix: str, destructive: bool = False):
    def build(ctx: Ctx, role: str) -> dict:
        ref = ctx.throwaway()["member_ref"] if destructive and role in OPERATOR else ctx.m["member_ref"]
        return {"path": f"/v1/members/{ref}{suffix}"}
    return build


def _new_order(ctx: Ctx) -> str:
    """A fresh order of M's, of a good not yet shipped."""
    r = ctx.brand.client.post("/v1/me/reward-orders", json={"reward": "matrix-gift"}, headers=ctx.m["auth"] | {"Idempotency-Key": f"n-{uniq()}"})
    assert r.status_code == 201, r.text
    return r.json()["order_ref"]


def _a_delivery(ctx: Ctx) -> str:
    """The webhook id of a delivery queued for the matrix's subscription (each order queues one: the
    sink's, so the members the matrix watches stay untouched)."""
    from gateway.models import WebhookDelivery

    r = ctx.brand.client.post("/v1/me/reward-orders", json={"reward": "matrix-gift"}, headers=ctx.sink["auth"] | {"Idempotency-Key": f"w-{uniq()}"})
    assert r.status_code == 201, r.text
    with ctx.brand.gw.sessions() as session:
        return session.query(WebhookDelivery.msg_id).order_by(WebhookDelivery.id.desc()).first()[0]


WEBHOOK = {"url": "http://127.0.0.1:9/matrix", "event_types": ["reward_order.granted"]}


def _purchase_body(ctx: Ctx) -> dict:
    return {"member_ref": ctx.m["member_ref"], "amount_minor": 1_000, "occurred_at": ctx.clock.now.isoformat()}


ENDPOINTS: dict[tuple[str, str], Endpoint] = {
    ("GET", "/healthz"): Endpoint(PUBLIC, lambda c, r: {"path": "/healthz"}),
    ("GET", "/v1/brand"): Endpoint(PUBLIC, lambda c, r: {"path": "/v1/brand"}),
    ("GET", "/metrics"): Endpoint(OPERATOR, lambda c, r: {"path": "/metrics"}),
    ("GET", "/v1/redemption-nonce"): Endpoint(PUBLIC, lambda c, r: {
        "path": "/v1/redemption-nonce", "params": {"owner": c.wallets[c.m["member_ref"]].address}}),
    ("GET", "/problems/{code}"): Endpoint(PUBLIC, lambda c, r: {"path": "/problems/insufficient_points"}),
    ("POST", "/v1/enrolments"): Endpoint(PUBLIC, lambda c, r: {"path": "/v1/enrolments", "json": {
        "identifiers": {"phone": f"+86137{uniq():08d}"}, "name": "New Member", "passphrase": "correct horse battery"}}, (202,)),
    ("POST", "/v1/enrolments/{enrolment_id}/verification"): Endpoint(PUBLIC, _verify, (201,)),
    ("POST", "/v1/members"): Endpoint(TILL, lambda c, r: {"path": "/v1/members", "json": {
        "identifiers": {"phone": f"+86136{uniq():08d}"}, "name": "Till Member"}}, (201,)),
    ("POST", "/v1/sessions"): Endpoint(PUBLIC, lambda c, r: {"path": "/v1/sessions", "json": {
        "kind": "phone", "value": c.m["phone"], "passphrase": "correct horse battery"}}),
    ("GET", "/v1/me"): Endpoint(MEMBER, lambda c, r: {"path": "/v1/me"}),
    ("GET", "/v1/members/{member_ref}"): Endpoint(OPERATOR, _member_path("")),
    ("POST", "/v1/members/{member_ref}/status"): Endpoint(OPERATOR, lambda c, r: _member_path("/status", True)(c, r) | {
        "json": {"status": "frozen", "reason": "matrix test"}}),
    ("GET", "/v1/me/consents"): Endpoint(MEMBER, lambda c, r: {"path": "/v1/me/consents"}),
    ("GET", "/v1/me/consents/history"): Endpoint(MEMBER, lambda c, r: {"path": "/v1/me/consents/history"}),
    ("PUT", "/v1/me/consents/{purpose}"): Endpoint(MEMBER, lambda c, r: {"path": "/v1/me/consents/marketing", "json": {"granted": True}}),
    ("POST", "/v1/purchases"): Endpoint(TILL, lambda c, r: {"path": "/v1/purchases", "json": _purchase_body(c),
                                                            "headers": {"Idempotency-Key": f"p-{uniq()}"}}, (201,)),
    ("POST", "/v1/purchases/batch"): Endpoint(TILL, lambda c, r: {"path": "/v1/purchases/batch", "json": {
        "events": [_purchase_body(c) | {"idempotency_key": f"b-{uniq()}"}]}}),
    ("POST", "/v1/purchases/{purchase_ref}/refunds"): Endpoint(TILL, lambda c, r: {
        "path": f"/v1/purchases/{c.m_purchase}/refunds", "json": {"amount_minor": 1}, "headers": {"Idempotency-Key": f"r-{uniq()}"}}, (201,)),
    ("POST", "/v1/actions"): Endpoint(TILL, lambda c, r: {"path": "/v1/actions", "json": {
        "member_ref": c.m["member_ref"], "kind": "check_in", "occurred_at": c.clock.now.isoformat()},
        "headers": {"Idempotency-Key": f"a-{uniq()}"}}, (201,)),
    ("GET", "/v1/me/balance"): Endpoint(MEMBER, lambda c, r: {"path": "/v1/me/balance"}),
    ("GET", "/v1/me/ledger"): Endpoint(MEMBER, lambda c, r: {"path": "/v1/me/ledger"}),
    ("POST", "/v1/me/wallet/challenges"): Endpoint(MEMBER, _challenge, (201,)),
    ("POST", "/v1/me/wallet"): Endpoint(MEMBER, _link),
    ("POST", "/v1/me/exchanges"): Endpoint(MEMBER, lambda c, r: {"path": "/v1/me/exchanges", "json": {"ap_amount": 1},
                                                                 "headers": {"Idempotency-Key": f"x-{uniq()}"}}, (201,)),
    # Always M's exchange: the other member must not find it.
    ("GET", "/v1/me/exchanges/{exchange_ref}"): Endpoint(MEMBER, lambda c, r: {"path": f"/v1/me/exchanges/{c.m_exchange}"}),
    ("GET", "/v1/me/redemptions/{redemption_ref}"): Endpoint(MEMBER, lambda c, r: {"path": f"/v1/me/redemptions/{c.m_redemption}"}),
    ("POST", "/v1/me/redemptions"): Endpoint(MEMBER, _redeem, (201,)),
    ("GET", "/v1/me/export"): Endpoint(MEMBER, lambda c, r: {"path": "/v1/me/export"}),
    ("POST", "/v1/me/erasure"): Endpoint(MEMBER, _erase_me),
    ("GET", "/v1/members/{member_ref}/export"): Endpoint(OPERATOR, _member_path("/export")),
    ("POST", "/v1/members/{member_ref}/erasure"): Endpoint(OPERATOR, _member_path("/erasure", True)),
    ("GET", "/v1/audit/logs/{kind}"): Endpoint(READER, lambda c, r: {"path": "/v1/audit/logs/consent-log"}),
    ("GET", "/v1/audit/logs/{kind}/verification"): Endpoint(READER, lambda c, r: {"path": "/v1/audit/logs/audit-log/verification"}),
    ("GET", "/v1/audit/logs/{kind}/anchors"): Endpoint(READER, lambda c, r: {"path": "/v1/audit/logs/consent-log/anchors"}),
    ("GET", "/v1/audit/logs/{kind}/{seq}/proof"): Endpoint(READER, lambda c, r: {"path": "/v1/audit/logs/consent-log/0/proof"}),
    ("GET", "/v1/audit/reconciliation"): Endpoint(READER, lambda c, r: {"path": "/v1/audit/reconciliation"}),
    ("GET", "/v1/audit/liability"): Endpoint(READER, lambda c, r: {"path": "/v1/audit/liability"}),
    ("GET", "/v1/audit/processings"): Endpoint(READER, lambda c, r: {"path": "/v1/audit/processings"}),
    ("POST", "/v1/campaigns/targets"): Endpoint(OPERATOR, lambda c, r: {"path": "/v1/campaigns/targets", "json": {"top_k": 5}}),
    ("POST", "/v1/admin/api-keys"): Endpoint(OPERATOR, lambda c, r: {"path": "/v1/admin/api-keys", "json": {
        "role": "auditor", "label": "matrix"}}, (201,)),
    ("GET", "/v1/admin/api-keys"): Endpoint(OPERATOR, lambda c, r: {"path": "/v1/admin/api-keys"}),
    ("DELETE", "/v1/admin/api-keys/{key_id}"): Endpoint(OPERATOR, _revoke_key),
    ("POST", "/v1/admin/anchors"): Endpoint(OPERATOR, lambda c, r: {"path": "/v1/admin/anchors", "json": {"kind": "audit-log"}}),
    ("POST", "/v1/admin/maintenance"): Endpoint(OPERATOR, lambda c, r: {"path": "/v1/admin/maintenance"}),
    ("PUT", "/v1/admin/rewards/{code}"): Endpoint(OPERATOR, lambda c, r: {"path": "/v1/admin/rewards/matrix-mug", "json": {
        "kind": "good", "name": "Matrix mug", "points_price": 1, "available_from": "2026-01-01T00:00:00Z"}}),
    ("GET", "/v1/admin/rewards"): Endpoint(OPERATOR, lambda c, r: {"path": "/v1/admin/rewards"}),
    ("GET", "/v1/admin/reward-orders"): Endpoint(OPERATOR, lambda c, r: {"path": "/v1/admin/reward-orders"}),
    ("GET", "/v1/admin/programme"): Endpoint(READER, lambda c, r: {"path": "/v1/admin/programme"}),
    ("GET", "/v1/admin/programme/versions"): Endpoint(READER, lambda c, r: {"path": "/v1/admin/programme/versions"}),
    ("PUT", "/v1/admin/programme"): Endpoint(OPERATOR, _programme_change),
    # The operator may ask; the peer named here does not answer, so the operator's call is a 400.
    ("POST", "/v1/admin/overlap"): Endpoint(OPERATOR, lambda c, r: {"path": "/v1/admin/overlap", "json": {"peer_url": "http://127.0.0.1:9"}},
                                            (400,)),
    # Brand to brand: no API key, the body is signed by an admitted brand's chain key (here the brand's own).
    ("POST", "/v1/alliance/overlap"): Endpoint(PUBLIC, _overlap_message),
    ("POST", "/v1/admin/reward-orders/{order_ref}/status"): Endpoint(OPERATOR, lambda c, r: {
        "path": f"/v1/admin/reward-orders/{_new_order(c) if r in OPERATOR else c.m_order}/status", "json": {"status": "shipped"}}),
    ("GET", "/v1/rewards"): Endpoint(MEMBER, lambda c, r: {"path": "/v1/rewards"}),
    ("GET", "/v1/me/reward-orders"): Endpoint(MEMBER, lambda c, r: {"path": "/v1/me/reward-orders"}),
    ("POST", "/v1/me/reward-orders"): Endpoint(MEMBER, lambda c, r: {"path": "/v1/me/reward-orders", "json": {"reward": "matrix-gift"},
                                                                     "headers": {"Idempotency-Key": f"o-{uniq()}"}}, (201,)),
    # Always an order of M's: the other member must not find it.
    ("POST", "/v1/me/reward-orders/{order_ref}/cancellation"): Endpoint(MEMBER, lambda c, r: {
        "path": f"/v1/me/reward-orders/{_new_order(c) if r == 'member' else c.m_order}/cancellation"}),
    ("PUT", "/v1/admin/causes/{code}"): Endpoint(OPERATOR, lambda c, r: {"path": "/v1/admin/causes/matrix-cause", "json": {"name": "Trees"}}),
    ("GET", "/v1/causes"): Endpoint(MEMBER | READER, lambda c, r: {"path": "/v1/causes"}),
    ("POST", "/v1/me/gifts"): Endpoint(MEMBER, lambda c, r: {"path": "/v1/me/gifts", "json": {"to_member_ref": c.sink["member_ref"], "points": 1},
                                                             "headers": {"Idempotency-Key": f"g-{uniq()}"}}, (201,)),
    ("POST", "/v1/me/donations"): Endpoint(MEMBER, lambda c, r: {"path": "/v1/me/donations", "json": {"cause": "matrix-cause", "points": 1},
                                                                 "headers": {"Idempotency-Key": f"d-{uniq()}"}}, (201,)),
    ("GET", "/v1/me/gifts"): Endpoint(MEMBER, lambda c, r: {"path": "/v1/me/gifts"}),
    ("POST", "/v1/admin/webhooks"): Endpoint(OPERATOR, lambda c, r: {"path": "/v1/admin/webhooks", "json": WEBHOOK}, (201,)),
    ("GET", "/v1/admin/webhooks"): Endpoint(OPERATOR, lambda c, r: {"path": "/v1/admin/webhooks"}),
    ("PUT", "/v1/admin/webhooks/{sub_id}"): Endpoint(OPERATOR, lambda c, r: {"path": "/v1/admin/webhooks/1", "json": WEBHOOK}),
    ("POST", "/v1/admin/webhooks/{sub_id}/secret"): Endpoint(OPERATOR, lambda c, r: {"path": "/v1/admin/webhooks/1/secret"}),
    ("GET", "/v1/admin/webhooks/{sub_id}/deliveries"): Endpoint(OPERATOR, lambda c, r: {"path": "/v1/admin/webhooks/1/deliveries"}),
    ("POST", "/v1/admin/webhook-deliveries/{msg_id}/replay"): Endpoint(OPERATOR, lambda c, r: {
        "path": f"/v1/admin/webhook-deliveries/{_a_delivery(c)}/replay"}),
}

# Where a member is admitted but the answer for the *other* member differs (ownership, not role).
OTHER_MEMBER = {("GET", "/v1/me/exchanges/{exchange_ref}"): 404, ("GET", "/v1/me/redemptions/{redemption_ref}"): 404,
                ("POST", "/v1/me/reward-orders/{order_ref}/cancellation"): 404}


@pytest.fixture(scope="module")
def ctx(world) -> Ctx:
    clock = Clock()
    write_release(world.workdir / "matrix-releases")
    brand = start_world_brand(world, "matrix", 10, clock=clock, releases_dir=world.workdir / "matrix-releases", gift_min_tenure_days=0,
                              webhook_allow_private=True, overlap_answer=True)
    assert brand.client.post("/v1/admin/webhooks", json=WEBHOOK, headers=brand.as_("operator")).json()["id"] == 1
    m = enrol(brand, "+8613800000001", name="Mia Matrix", identifiers={"phone": "+8613800000001", "email": "mia@example.com"})
    o = enrol(brand, "+8613800000002", name="Otto Other")
    m["phone"], o["phone"] = "+8613800000001", "+8613800000002"
    wallets = {}
    for member in (m, o):
        consent(brand, member, "alliance_exchange")
        wallets[member["member_ref"]] = new_wallet()
        link_wallet(brand, member, wallets[member["member_ref"]])
        r = purchase(brand, member["member_ref"], 200_000, f"setup-{member['member_ref']}", clock.now)
        assert r.status_code == 201, r.text
    m_purchase = purchase(brand, m["member_ref"], 100_000, "setup-m2", clock.now).json()["purchase_ref"]
    ex = {}
    for member in (m, o):
        r = exchange(brand, member, 20, f"setup-x-{member['member_ref']}")
        assert r.status_code == 201, r.text
        ex[member["member_ref"]] = r.json()["exchange_ref"]
    r = brand.client.post("/v1/me/redemptions", headers=m["auth"],
                          json=authorise(world.alliance, wallets[m["member_ref"]], brand, 1, world.chain.timestamp() + 3600))
    assert r.status_code == 201, r.text
    m_redemption = r.json()["redemption_ref"]
    r = brand.client.put("/v1/admin/rewards/matrix-gift", json={"kind": "good", "name": "Matrix gift", "points_price": 1,
                                                              "available_from": "2026-01-01T00:00:00Z"}, headers=brand.as_("operator"))
    assert r.status_code == 200, r.text
    assert brand.client.put("/v1/admin/causes/matrix-cause", json={"name": "Trees"}, headers=brand.as_("operator")).status_code == 200
    sink = enrol(brand, "+8613800000003", name="Sam Sink")
    r = brand.client.post("/v1/admin/anchors", json={"kind": "consent-log"}, headers=brand.as_("operator"))
    assert r.json()["anchored"] is True
    partial = Ctx(brand, world, clock, m, o, wallets, m_purchase, ex[m["member_ref"]], m_redemption, "", sink)
    yield Ctx(brand, world, clock, m, o, wallets, m_purchase, ex[m["member_ref"]], m_redemption, _new_order(partial), sink)
    brand.close()


def _headers(ctx: Ctx, role: str) -> dict:
    if role == "anonymous":
        return {}
    if role == "invalid":
        return {"Authorization": "Bearer mt_not-a-real-token"}
    if role in MEMBER:
        return ctx.member_for(role)["auth"]
    return ctx.brand.as_(role)


def _call(ctx: Ctx, method: str, template: str, role: str):
    spec = ENDPOINTS[(method, template)]
    req = spec.build(ctx, role)
    headers = _headers(ctx, role) if "auth" not in req else req["auth"]
    ctx.clock.advance(minutes=2)  # keeps the member under the purchase rate limit
    return ctx.brand.client.request(method, req["path"], json=req.get("json"), params=req.get("params"),
                                    headers=headers | req.get("headers", {}))


def _snapshot(ctx: Ctx, member: dict) -> str:
    """Everything the gateway holds about a member, as the operator sees it."""
    r = ctx.brand.client.get(f"/v1/members/{member['member_ref']}/export", headers=ctx.brand.as_("operator"))
    assert r.status_code == 200, r.text
    return json.dumps(r.json(), sort_keys=True)


def _spec_endpoints(ctx: Ctx) -> list[tuple[str, str]]:
    paths = ctx.brand.client.app.openapi()["paths"]
    return sorted((method.upper(), path) for path, ops in paths.items() for method in ops)


def test_every_endpoint_in_the_spec_is_in_the_matrix(ctx):
    missing = [e for e in _spec_endpoints(ctx) if e not in ENDPOINTS]
    assert not missing, f"add these endpoints to the authorisation matrix: {missing}"


@pytest.mark.parametrize("role", ROLES)
def test_role_matrix(ctx, role):
    failures = []
    m_before, o_before = _snapshot(ctx, ctx.m), _snapshot(ctx, ctx.o)
    for method, template in _spec_endpoints(ctx):
        if (method, template) not in ENDPOINTS:
            continue  # reported by the test above
        spec = ENDPOINTS[(method, template)]
        r = _call(ctx, method, template, role)
        body = r.json() if "json" in r.headers.get("content-type", "") else {}
        if role in spec.roles:
            expected = OTHER_MEMBER.get((method, template), spec.ok) if role == "other" else spec.ok
            expected = expected if isinstance(expected, tuple) else (expected,)
            if r.status_code not in expected:
                failures.append(f"{role} {method} {template}: expected {expected}, got {r.status_code} {r.text[:200]}")
            if role in MEMBER and (template == "/v1/me" or template.startswith("/v1/me/")):
                mine, theirs = ctx.member_for(role), ctx.o if role == "member" else ctx.m
                if theirs["member_ref"] in r.text:
                    failures.append(f"{role} {method} {template}: the answer names the other member")
                if r.status_code < 300 and isinstance(body, dict) and "member_ref" in body and template != "/v1/me/erasure":
                    if body["member_ref"] != mine["member_ref"]:
                        failures.append(f"{role} {method} {template}: answered for {body['member_ref']}")
        else:
            expected = 401 if role in ("anonymous", "invalid") else 403
            code = "unauthorised" if expected == 401 else "forbidden"
            if r.status_code != expected or body.get("code") != code:
                failures.append(f"{role} {method} {template}: expected {expected} {code}, got {r.status_code} {r.text[:200]}")
    assert not failures, "\n".join(failures)
    # The other member's calls (and every refused one) left M untouched; nobody but O touched O.
    if role not in ("member", "operator", "pos"):
        assert _snapshot(ctx, ctx.m) == m_before, f"{role} changed the target member's data"
    if role in ("member", "anonymous", "invalid", "auditor"):
        assert _snapshot(ctx, ctx.o) == o_before, f"{role} changed the other member's data"


def test_member_cannot_reach_other_members_objects(ctx):
    o = ctx.o
    client = ctx.brand.client
    # Another member's exchange does not exist for O; operator endpoints by member_ref refuse members.
    assert client.get(f"/v1/me/exchanges/{ctx.m_exchange}", headers=o["auth"]).status_code == 404
    for method, path in [("GET", f"/v1/members/{ctx.m['member_ref']}"), ("GET", f"/v1/members/{ctx.m['member_ref']}/export"),
                         ("POST", f"/v1/members/{ctx.m['member_ref']}/erasure")]:
        r = client.request(method, path, headers=o["auth"])
        assert r.status_code == 403 and r.json()["code"] == "forbidden", (path, r.text)
    # Extra fields naming another member are refused, never followed.
    r = client.post("/v1/me/exchanges", json={"ap_amount": 1, "member_ref": ctx.m["member_ref"]},
                    headers=o["auth"] | {"Idempotency-Key": "o-sneaky"})
    assert r.status_code == 422
    r = client.put("/v1/me/consents/marketing", json={"granted": True, "member_ref": ctx.m["member_ref"]}, headers=o["auth"])
    assert r.status_code == 422
    # A member token is not a till: it cannot credit anyone.
    r = client.post("/v1/purchases", json=_purchase_body(ctx), headers=o["auth"] | {"Idempotency-Key": "o-till"})
    assert r.status_code == 403
    # O's wallet challenge cannot be used by M, and M's exchanges by O's idempotency key stay O's.
    r = client.post("/v1/me/wallet/challenges", json={"address": ctx.wallets[o["member_ref"]].address}, headers=o["auth"])
    challenge = r.json()
    sig = "0x" + bytes(ctx.wallets[o["member_ref"]].sign_message(encode_defunct(text=challenge["message"])).signature).hex()
    r = client.post("/v1/me/wallet", json={"challenge_id": challenge["challenge_id"], "signature": sig}, headers=ctx.m["auth"])
    assert r.status_code == 404
    me = client.get("/v1/me", headers=ctx.m["auth"]).json()
    assert me["wallet_address"] == ctx.wallets[ctx.m["member_ref"]].address
