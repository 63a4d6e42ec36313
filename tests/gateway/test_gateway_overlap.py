"""Audience overlap between two brands by PSI cardinality, gateway to gateway over HTTP: only members
who consent to overlap_analytics at both count, the count is noisy and suppressed below k within a
budget, both brands record the read as a processing, and the brand-to-brand endpoint accepts only
fresh, unreplayed requests signed by an admitted brand's chain key."""

from __future__ import annotations

import base64
from datetime import timedelta

import pytest
from eth_account import Account
from harness import Server, consent, enrol, new_world, start_world_brand

from contracts.chain import free_port
from gateway.services import overlap

PHONES = [f"+86139000{i:05d}" for i in range(45)]
AT_A, AT_B = PHONES[:30], PHONES[10:]  # 20 shared
NO_CONSENT_A, NO_CONSENT_B = PHONES[10:12], PHONES[12:13]  # shared, but not consented at one brand


@pytest.fixture
def brands(tmp_path, clock):
    world = new_world(tmp_path)
    # Epsilon 10: the noise is 0 but once in 11,000 runs, and never beyond 1 in practice; the count is checkable.
    settings = {"overlap_epsilon": 10.0, "overlap_budget_epsilon": 20.0, "overlap_k": 5}
    port = free_port()
    a = start_world_brand(world, "grocery", 100, clock=clock, alliance_peers=[f"http://127.0.0.1:{port}"], **settings)
    b = start_world_brand(world, "airline", 20, clock=clock, overlap_answer=True, **settings)
    for brand, phones, refused in ((a, AT_A, NO_CONSENT_A), (b, AT_B, NO_CONSENT_B)):
        for phone in phones:
            member = enrol(brand, phone)
            if phone not in refused:
                consent(brand, member, "overlap_analytics")
    server = Server(b.gw, port)
    url = server.__enter__()
    yield world, a, b, url
    server.__exit__(None, None, None)
    a.close()
    b.close()


def _processings(brand) -> list[dict]:
    r = brand.client.get("/v1/audit/processings", params={"kind": "overlap"}, headers=brand.as_("auditor"))
    assert r.status_code == 200, r.text
    return r.json()["items"]


def test_two_brands_learn_how_many_members_they_share_and_not_who(brands):
    world, a, b, url_b = brands
    r = a.client.post("/v1/admin/overlap", json={"peer_url": url_b}, headers=a.as_("operator"))
    assert r.status_code == 200, r.text
    result = r.json()
    assert abs(result["shared"] - (20 - 3)) <= 1 and not result["suppressed"] and result["peer"] == b.gw.brand_address
    assert result["bytes_sent"] > 0 and result["bytes_received"] > 0

    # Both recorded the read, each of its own consented members only (every one with its consent entry).
    mine, theirs = _processings(a), _processings(b)
    assert len(mine) == 30 - 2 and len(theirs) == 35 - 1
    assert all(p["purpose"] == "overlap_analytics" and p["consent_seq"] is not None for p in mine + theirs)
    assert {p["ref"] for p in mine} == {p["ref"] for p in theirs} == {f"overlap:{result['ref']}"}

    # Below k nothing is released; the budget per peer is kept (the audit log counts what was spent).
    a.gw.settings.overlap_k = 18
    small = a.client.post("/v1/admin/overlap", json={"peer_url": url_b}, headers=a.as_("operator")).json()
    assert small["shared"] is None and small["suppressed"]
    spent = a.client.post("/v1/admin/overlap", json={"peer_url": url_b}, headers=a.as_("operator"))
    assert spent.status_code == 409 and "budget" in spent.json()["detail"]
    assert a.client.post("/v1/admin/overlap", json={"peer_url": url_b}, headers=a.as_("pos")).status_code == 403
    # Only the alliance's gateways: no other URL is ever fetched.
    elsewhere = a.client.post("/v1/admin/overlap", json={"peer_url": "http://169.254.169.254"}, headers=a.as_("operator"))
    assert elsewhere.status_code == 400 and "not one of this alliance's gateways" in elsewhere.json()["detail"]


def test_the_brand_to_brand_endpoint_takes_only_fresh_signed_requests_of_admitted_brands(brands, clock):
    world, a, b, url_b = brands
    import private_set_intersection.python as psi

    request = psi.client.CreateWithNewKey(False).CreateRequest(overlap.padded(["phone:+8613900000011"])).SerializeToString()
    assert b"+86139" not in request  # what leaves is encrypted points, not identifiers

    def message(signer=a.gw, **change):
        fields = {"ref": "5f0c3a52-6d1e-4f0e-9a51-3a0c2f5c1d11", "kind": "phone", "at": clock.now.isoformat(),
                  "initiator": signer.brand_address, "request": base64.b64encode(request).decode()} | change
        return fields | {"signature": overlap._sign(signer, fields)}

    # A brand answers only once it has chosen to: the grocery has not.
    assert a.client.post("/v1/alliance/overlap", json=message()).status_code == 403
    ok = b.client.post("/v1/alliance/overlap", json=message())
    assert ok.status_code == 200, ok.text
    assert b.client.post("/v1/alliance/overlap", json=message()).status_code == 409  # a replay

    stranger = type("Stranger", (), {"chain_account": Account.create(), "brand_address": None})()
    stranger.brand_address = stranger.chain_account.address
    forged = b.client.post("/v1/alliance/overlap", json=message(stranger, ref="5f0c3a52-6d1e-4f0e-9a51-3a0c2f5c1d12"))
    assert forged.status_code == 403 and "not a brand admitted" in forged.json()["detail"]
    tampered = message(ref="5f0c3a52-6d1e-4f0e-9a51-3a0c2f5c1d13") | {"kind": "email"}
    assert b.client.post("/v1/alliance/overlap", json=tampered).status_code == 403
    stale = message(ref="5f0c3a52-6d1e-4f0e-9a51-3a0c2f5c1d14", at=(clock.now - timedelta(minutes=10)).isoformat())
    assert b.client.post("/v1/alliance/overlap", json=stale).status_code == 403
    # Hostile PSI messages are refused with a reason, never a 500.
    empty, junk = psi.Request(), psi.Request()
    junk.encrypted_elements.extend([b"\x02" + b"\xff" * 32, b"not a point"])
    for n, bad in enumerate((empty, junk, b"not protobuf at all")):
        raw = bad if isinstance(bad, bytes) else bad.SerializeToString()
        fields = message(ref=f"5f0c3a52-6d1e-4f0e-9a51-3a0c2f5c1e1{n}")
        fields = {k: v for k, v in fields.items() if k != "signature"} | {"request": base64.b64encode(raw).decode()}
        r = b.client.post("/v1/alliance/overlap", json=fields | {"signature": overlap._sign(a.gw, fields)})
        assert r.status_code == 400, (n, r.status_code, r.text)
    assert len({p["ref"] for p in _processings(b)}) == 1  # only the one answered request was a processing


def test_the_protocol_split_across_threads_counts_exactly_what_one_call_counts(monkeypatch):
    """Each PSI step runs in chunks on the machine's cores with one key: the request is element for
    element the one a single call makes, and the count is exact."""
    import private_set_intersection.python as psi

    monkeypatch.setattr(overlap, "THREADS", 3)  # more chunks than this machine has cores, unevenly sized
    mine = overlap.padded([f"phone:+8613800{i:06d}" for i in range(2_500)])
    theirs = overlap.padded([f"phone:+8613800{i:06d}" for i in range(1_266, 4_000)])
    client, server = psi.client.CreateWithNewKey(False), psi.server.CreateWithNewKey(False)
    request = overlap.psi_request(client, mine)
    assert list(request.encrypted_elements) == list(client.CreateRequest(mine).encrypted_elements)
    setup, response = overlap.psi_answer(server, request, theirs)
    assert len(response.encrypted_elements) == len(mine)
    assert overlap.psi_count(client, setup, response) == 1_234 == client.GetIntersectionSize(setup, server.ProcessRequest(request))
