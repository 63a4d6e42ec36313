"""The API as an integrator reads it: every error an RFC 9457 problem, an OpenAPI that declares what
the routes answer, API keys with a lifecycle, and a chain outage answered as a 503 with Retry-After
and nothing internal, the operation kept for the outbox and looked up later."""

from __future__ import annotations

import itertools
import json
import time

import pytest
from fastapi.testclient import TestClient
from harness import (
    Cable,
    Clock,
    authorise,
    consent,
    enrol,
    exchange,
    link_wallet,
    new_wallet,
    new_world,
    purchase,
    start_local_brand,
)

from contracts.chain import connect
from gateway.app import create_app
from gateway.errors import PROBLEMS

_phones = itertools.count(1)


def phone() -> str:
    return f"+86133{next(_phones):08d}"


@pytest.fixture
def local(tmp_path, clock):
    brand = start_local_brand(tmp_path, "api", clock=clock)
    yield brand
    brand.close()


def test_every_error_is_a_problem_whose_type_resolves(local):
    c = local.client
    m = enrol(local, phone())
    answers = [c.get("/v1/me"), c.get("/v1/me", headers={"Authorization": "Bearer mt_nope"}), c.get("/v1/nowhere"),
               c.delete("/v1/me"), c.post("/v1/enrolments", json={"identifiers": {}}), c.get("/v1/members/x", headers=local.as_("operator")),
               c.post("/v1/me/erasure", headers=local.as_("pos")), c.put("/v1/me/consents/spam", json={"granted": True}, headers=m["auth"]),
               c.post("/v1/enrolments", json={"identifiers": {"phone": "12"}, "name": "N", "passphrase": "long enough pass"})]
    assert [r.status_code for r in answers] == [401, 401, 404, 405, 422, 422, 403, 422, 400]
    for r in answers:
        body = r.json()
        assert r.headers["content-type"] == "application/problem+json", r.headers
        assert {"type", "title", "status", "detail", "code"} <= set(body) and body["status"] == r.status_code, body
        assert "error" not in body
        described = c.get(body["type"])  # /problems/<code>, served by the gateway itself
        assert described.status_code == 200 and described.json()["code"] == body["code"], (body, described.text)
    assert {tuple(e["loc"]) for e in answers[4].json()["errors"]} == {("body", "name"), ("body", "passphrase")}
    assert c.get("/problems/no-such-thing").status_code == 404
    assert set(PROBLEMS) >= {r.json()["code"] for r in answers}


def test_the_openapi_declares_problems_enums_and_replays(local):
    spec = local.client.get("/openapi.json").json()
    assert "HTTPValidationError" not in json.dumps(spec)
    assert spec["components"]["schemas"]["Problem"]["required"] == ["type", "title", "status", "detail", "code"]
    for path, operations in spec["paths"].items():
        for method, op in operations.items():
            responses = op["responses"]
            assert {"413", "422"} <= set(responses), (method, path)
            for status, response in responses.items():
                if int(status) >= 400:
                    content = response["content"]["application/problem+json"]
                    assert content["schema"] == {"$ref": "#/components/schemas/Problem"} and content["example"]["status"] == int(status)
            if op.get("security") or any(p.get("in") == "header" and p["name"] == "Authorization" for p in op.get("parameters", [])):
                assert {"401", "403"} <= set(responses), (method, path)
    params = {p["name"]: p["schema"] for p in spec["paths"]["/v1/me/consents/{purpose}"]["put"]["parameters"]}
    assert params["purpose"] == {"$ref": "#/components/schemas/Purpose"}
    assert spec["components"]["schemas"]["Purpose"]["enum"] == ["loyalty_core", "alliance_exchange", "federated_training",
                                                                "marketing", "overlap_analytics"]
    params = {p["name"]: p["schema"] for p in spec["paths"]["/v1/audit/logs/{kind}"]["get"]["parameters"]}
    assert params["kind"]["enum"] == ["consent-log", "audit-log"]
    for path in ("/v1/purchases", "/v1/actions", "/v1/purchases/{purchase_ref}/refunds", "/v1/me/exchanges", "/v1/me/redemptions"):
        assert "200" in spec["paths"][path]["post"]["responses"], path  # the replay
    assert "429" in spec["paths"]["/v1/purchases"]["post"]["responses"]
    locator = spec["components"]["schemas"]["TillPurchase"]
    assert len(locator["oneOf"]) == 2 and locator["properties"]["occurred_at"]["format"] == "date-time"
    assert "chain_status" in spec["components"]["schemas"]["BrandInfo"]["required"]


def test_the_member_locator_is_exactly_one_of_its_two_forms(local, clock):
    m = enrol(local, "+8613300000000")
    clock.advance(minutes=1)
    base = {"amount_minor": 1_000, "occurred_at": clock.now.isoformat()}
    for i, locator in enumerate(({}, {"identifier_kind": "phone"}, {"identifier": "+8613300000000"}, {"member_ref": None},
                                 {"member_ref": m["member_ref"], "identifier_kind": "phone"},
                                 {"member_ref": m["member_ref"], "identifier_kind": "phone", "identifier": "+8613300000000"})):
        r = local.client.post("/v1/purchases", json=base | locator, headers=local.as_("pos") | {"Idempotency-Key": f"loc-{i}"})
        assert r.status_code == 422, (locator, r.text)
    for i, locator in enumerate(({"member_ref": m["member_ref"]}, {"identifier_kind": "phone", "identifier": "+8613300000000"})):
        clock.advance(minutes=1)
        r = local.client.post("/v1/purchases", json=base | locator | {"occurred_at": clock.now.isoformat()},
                              headers=local.as_("pos") | {"Idempotency-Key": f"ok-{i}"})
        assert r.status_code == 201, r.text


# ---------------------------------------------------------------- API keys


def test_api_keys_are_listed_revoked_and_expire(local, clock):
    op = local.as_("operator")
    issued = local.client.post("/v1/admin/api-keys", json={"role": "pos", "label": "till 9", "expires_in_days": 2}, headers=op).json()
    till = {"Authorization": f"Bearer {issued['secret']}"}
    assert issued["expires_at"] and issued["last_used_at"] is None
    m = enrol(local, phone())
    clock.advance(minutes=1)
    body = {"member_ref": m["member_ref"], "amount_minor": 100, "occurred_at": clock.now.isoformat()}
    assert local.client.post("/v1/purchases", json=body, headers=till | {"Idempotency-Key": "k1"}).status_code == 201
    listed = {k["id"]: k for k in local.client.get("/v1/admin/api-keys", headers=op).json()}
    assert listed[issued["id"]]["last_used_at"] is not None and "secret" not in listed[issued["id"]]
    assert issued["secret"] not in json.dumps(listed)
    # Expired: refused, even by a worker that had it cached (the cache keeps the expiry).
    clock.advance(days=2)
    r = local.client.post("/v1/purchases", json=body, headers=till | {"Idempotency-Key": "k2"})
    assert r.status_code == 401 and r.json()["code"] == "unauthorised"
    # Revoked: recorded once in the audit log; revoking again changes nothing.
    other = local.client.post("/v1/admin/api-keys", json={"role": "auditor", "label": "temp"}, headers=op).json()
    for _ in range(2):
        r = local.client.delete(f"/v1/admin/api-keys/{other['id']}", headers=op)
        assert r.status_code == 200 and r.json()["revoked_at"]
    assert local.client.delete("/v1/admin/api-keys/999999", headers=op).status_code == 404
    audit = local.client.get("/v1/audit/logs/audit-log", headers=local.as_("auditor")).json()["entries"]
    assert [e["payload"]["details"]["key_id"] for e in audit if e["payload"]["action"] == "apikey.revoked"] == [other["id"]]


def test_a_revoked_key_is_refused_by_every_worker_within_the_cache_bound(local):
    """Two workers on one database (two apps, each with its own cache, as uvicorn's processes have):
    the key revoked through one is refused by the other once its cache entry runs out."""
    bound_s = 0.5
    workers = [TestClient(create_app(gateway=local.gw, background=False)) for _ in range(2)]
    for w in workers:
        w.app.state.api_keys.ttl_s = bound_s
    op = local.as_("operator")
    key = workers[0].post("/v1/admin/api-keys", json={"role": "auditor", "label": "leaked"}, headers=op).json()
    auditor = {"Authorization": f"Bearer {key['secret']}"}
    assert all(w.get("/v1/audit/logs/audit-log/verification", headers=auditor).status_code == 200 for w in workers)
    assert workers[0].delete(f"/v1/admin/api-keys/{key['id']}", headers=op).status_code == 200
    revoked = time.monotonic()
    assert workers[1].get("/v1/audit/logs/audit-log/verification", headers=auditor).status_code == 200  # still cached there
    while workers[1].get("/v1/audit/logs/audit-log/verification", headers=auditor).status_code == 200:
        assert time.monotonic() - revoked <= bound_s + 0.25
        time.sleep(0.05)
    assert workers[0].get("/v1/audit/logs/audit-log/verification", headers=auditor).status_code == 401


# ---------------------------------------------------------------- the chain going away


@pytest.fixture(scope="module")
def outage(anvil_url, tmp_path_factory):
    """An alliance on anvil; the brand's gateway reaches the node through a Cable."""
    from harness import start_brand

    workdir = tmp_path_factory.mktemp("outage")
    world = new_world(workdir, connect(anvil_url))
    cable = Cable(int(anvil_url.rsplit(":", 1)[1]))
    chain = connect(f"http://127.0.0.1:{cable.port}")
    clock = Clock()
    from contracts.client import Alliance

    alliance = Alliance(chain, world.alliance.manifest)
    brand = start_brand(alliance, world.governor, world.manifest_path, workdir, "cut", "Cut Cafe", 10, clock=clock)
    m = enrol(brand, phone())
    consent(brand, m, "alliance_exchange")
    wallet = new_wallet()
    link_wallet(brand, m, wallet)
    clock.advance(minutes=1)
    assert purchase(brand, m["member_ref"], 1_000_000, "fund", clock.now).status_code == 201
    assert exchange(brand, m, 50, "fund-ap").status_code == 201
    yield world, brand, cable, m, wallet, anvil_url
    cable.plug()
    brand.close()


def _is_clean_503(r) -> dict:
    body = r.json()
    assert r.status_code == 503 and body["code"] == "chain_unavailable" and int(r.headers["Retry-After"]) > 0, r.text
    for internal in ("127.0.0.1", "http://", "Traceback", "ConnectionError", "HTTPConnectionPool", "Errno"):
        assert internal not in r.text, (internal, r.text)
    return body


def test_a_chain_outage_is_a_503_with_retry_after_and_nothing_is_lost(outage):
    world, brand, cable, m, wallet, _ = outage
    auth = authorise(world.alliance, wallet, brand, 5, world.chain.timestamp() + 3600)
    before = brand.client.get("/v1/me/balance", headers=m["auth"]).json()
    cable.unplug()
    try:
        # With the chain away from the start, nothing that needs it is accepted, nothing is debited.
        _is_clean_503(exchange(brand, m, 1, "during-outage"))
        _is_clean_503(brand.client.post("/v1/me/redemptions", json=auth, headers=m["auth"]))
        _is_clean_503(brand.client.get("/v1/redemption-nonce", params={"owner": wallet.address}))
        during = brand.client.get("/v1/me/balance", headers=m["auth"]).json()
        assert (during["points"], during["alliance_points"]) == (before["points"], None)  # the page answers, without the chain figure
        # The public facts say the chain is unreachable instead of dropping fields.
        facts = brand.client.get("/v1/brand").json()
        assert facts["chain_status"] == "unreachable" and facts["rate"] is None and facts["points_contract"]
    finally:
        cable.plug()
    assert brand.client.get("/v1/brand").json()["chain_status"] == "ok"


@pytest.mark.parametrize("operation", ["redemption", "exchange"])
def test_the_chain_dropping_mid_request_is_a_503_and_the_outbox_completes_it(outage, operation):
    """The connection goes between the gateway's commit and the broadcast: the member gets a 503 with
    the operation's ref (no longer a 500), looks it up while pending, and the outbox completes it once."""
    world, brand, cable, m, wallet, _ = outage

    def unplug_once(ref: str) -> None:
        brand.gw.before_broadcast = None
        cable.unplug()

    brand.gw.before_broadcast = unplug_once
    try:
        if operation == "redemption":
            r = brand.client.post("/v1/me/redemptions", headers=m["auth"],
                                  json=authorise(world.alliance, wallet, brand, 3, world.chain.timestamp() + 3600))
            path = "/v1/me/redemptions/{}"
        else:
            r = exchange(brand, m, 2, f"mid-{time.monotonic_ns()}")
            path = "/v1/me/exchanges/{}"
        ref = _is_clean_503(r)["ref"]
        assert brand.client.get(path.format(ref), headers=m["auth"]).json()["status"] == "pending"
    finally:
        brand.gw.before_broadcast = None
        cable.plug()
    assert brand.client.post("/v1/admin/maintenance", headers=brand.as_("operator")).json()["chain_operations"] == {"confirmed": 1}
    done = brand.client.get(path.format(ref), headers=m["auth"]).json()
    assert done["status"] == "confirmed" and done["tx_hash"]
    assert brand.client.get("/v1/audit/reconciliation", headers=brand.as_("auditor")).json()["ok"]


def test_brand_facts_say_why_chain_figures_are_missing(local, world, tmp_path):
    facts = local.client.get("/v1/brand").json()
    assert facts["chain_status"] == "not_configured" and facts["rate"] is None and facts["chain_id"] is None
    from harness import _settings

    from gateway.runtime import build_gateway

    gw = build_gateway(_settings(tmp_path, "outsider", "Outsider", None, world.manifest_path), chain=world.chain)
    facts = TestClient(create_app(gateway=gw, background=False)).get("/v1/brand").json()
    assert facts["chain_status"] == "not_admitted" and facts["rate"] is None and facts["chain_id"] == world.chain.chain_id
    gw.engine.dispose()
