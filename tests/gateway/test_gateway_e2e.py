"""The whole member journey through HTTP, with two brands on one embedded chain:
enrol -> consent -> purchase -> tier change -> link wallet -> exchange at A -> redeem at B, then the
balances on both ledgers (API and database) and on chain, reconciliation, the anchored consent log
and the receipts' signatures."""

from __future__ import annotations

import json

import pytest
from harness import (
    authorise,
    balance,
    consent,
    db_balance,
    enrol,
    exchange,
    link_wallet,
    make_database_url,
    new_wallet,
    new_world,
    purchase,
    reconciliation,
    start_world_brand,
)

from privacy.hashchain import ChainEntry
from privacy.keys import PublicKey
from privacy.merkle import verify_inclusion
from privacy.receipts import KANTARA_FORMAT, load_receipt, verify_receipt


def _verify(receipt: dict, public_key: PublicKey) -> None:
    assert receipt["format"] == KANTARA_FORMAT
    verify_receipt(load_receipt(receipt), public_key)


def test_member_journey_across_two_brands(request, db_backend, tmp_path, clock):
    urls = [make_database_url(request, db_backend, tmp_path, name) for name in ("grocery", "airline")]  # skips first, if it must
    world = new_world(tmp_path)
    chain, alliance = world.chain, world.alliance
    a = start_world_brand(world, "grocery", 100, urls[0], clock=clock)
    b = start_world_brand(world, "airline", 20, urls[1], clock=clock)
    request.addfinalizer(a.close)
    request.addfinalizer(b.close)

    # -- enrol at A: only loyalty_core, welcome points, PII masked
    m = enrol(a, "+8613812345678", birthday="1990-05-17", identifiers={"phone": "+86 138 1234 5678", "email": "alice@example.com"})
    assert m["welcome_points"] == 100 and m["balance"] == 100 and m["tier"] == "member"
    assert m["consents"] == {"loyalty_core": True, "alliance_exchange": False, "federated_training": False,
                             "marketing": False, "overlap_analytics": False}
    me = a.client.get("/v1/me", headers=m["auth"]).json()
    assert me["member_ref"] == m["member_ref"]
    assert "Alice Zhang" not in json.dumps(me) and "alice@example.com" not in json.dumps(me)
    assert me["personal_data"]["phone"].endswith("5678") and "*" in me["personal_data"]["phone"]

    # -- consent: the receipt verifies under the key GET /v1/brand publishes, and a forged one does not
    brand_a = a.client.get("/v1/brand").json()
    key_a = PublicKey.from_pem(brand_a["receipt_public_key_pem"].encode())
    assert brand_a["address"] == a.gw.brand_address and brand_a["rate"] == 100
    granted = consent(a, m, "alliance_exchange")
    assert granted["changed"] is True and granted["receipt"]["receipt"]["state"] == "granted"
    assert granted["receipt"]["receipt"]["piiPrincipalId"] == m["member_ref"]
    _verify(granted["receipt"], key_a)
    forged = json.loads(json.dumps(granted["receipt"]))
    forged["receipt"]["purpose"] = "marketing"
    with pytest.raises(Exception):
        _verify(forged, key_a)
    assert consent(a, m, "alliance_exchange")["changed"] is False  # idempotent

    # -- purchase: first order doubles; 5,000.00 spent reaches silver at once
    r = purchase(a, m["member_ref"], 500_000, "till-1:0001", clock.now)
    assert r.status_code == 201, r.text
    p = r.json()
    assert (p["points"], p["campaign"], p["balance"], p["tier"]) == (10_000, "first_order", 10_100, "silver")
    again = purchase(a, m["member_ref"], 500_000, "till-1:0001", clock.now)
    assert again.status_code == 200 and again.json()["replayed"] is True and again.json()["balance"] == 10_100
    assert a.client.get("/v1/me", headers=m["auth"]).json()["tier"] == "silver"
    export = a.client.get("/v1/me/export", headers=m["auth"]).json()
    assert [(c["from"], c["to"], c["reason"]) for c in export["tier_changes"]] == [("member", "silver", "qualified")]

    # -- link a wallet and exchange 50 AP at A (rate 100: 5,000 brand points)
    wallet = new_wallet()
    link_wallet(a, m, wallet)
    r = exchange(a, m, 50, "ex-1")
    assert r.status_code == 201, r.text
    x = r.json()
    assert (x["status"], x["ap_amount"], x["brand_points"], x["rate"], x["wallet_address"]) == ("confirmed", 50, 5_000, 100, wallet.address)
    assert a.client.get(f"/v1/me/exchanges/{x['exchange_ref']}", headers=m["auth"]).json()["status"] == "confirmed"
    bal_a = balance(a, m)
    assert (bal_a["points"], bal_a["alliance_points"], bal_a["wallet_address"]) == (5_100, 50, wallet.address)

    # -- redeem 30 AP at B, by the wallet's signature; B credits only a member who proved control of it
    mb = enrol(b, "+8613812345678")
    consent(b, mb, "alliance_exchange")
    auth = authorise(alliance, wallet, b, 30, chain.timestamp() + 3600)
    stranger = enrol(b, "+8613900009999", name="Eve Stranger")
    consent(b, stranger, "alliance_exchange")
    stolen = b.client.post("/v1/me/redemptions", json=auth, headers=stranger["auth"])
    assert stolen.status_code == 403 and "link this wallet" in stolen.json()["detail"]
    assert alliance.points.balance_of(wallet.address) == 50  # nothing burned for the stranger
    link_wallet(b, mb, wallet)
    r = b.client.post("/v1/me/redemptions", json=auth, headers=mb["auth"])
    assert r.status_code == 201, r.text
    red = r.json()
    assert (red["status"], red["ap_amount"], red["reward_points"], red["rate"], red["balance"]) == ("confirmed", 30, 600, 20, 700)
    replay = b.client.post("/v1/me/redemptions", json=auth, headers=mb["auth"])
    assert replay.status_code == 200 and replay.json()["replayed"] is True and replay.json()["balance"] == 700

    # -- both ledgers, through the API and in the database
    assert balance(b, mb)["points"] == 700
    assert db_balance(a, m["member_ref"]) == (5_100, 5_100, 5_100)
    assert db_balance(b, mb["member_ref"]) == (700, 700, 700)
    ledger_a = [(line["kind"], line["amount"]) for line in a.client.get("/v1/me/ledger", headers=m["auth"]).json()]
    assert ledger_a == [("welcome", 100), ("earn", 10_000), ("exchange", -5_000)]
    ledger_b = [(line["kind"], line["amount"]) for line in b.client.get("/v1/me/ledger", headers=mb["auth"]).json()]
    assert ledger_b == [("welcome", 100), ("alliance_redeem", 600)]

    # -- on chain: the wallet holds 20, the supply is 20, A issued 50 and B redeemed 30 this epoch
    assert alliance.points.balance_of(wallet.address) == 20
    assert alliance.points.total_supply() == 20
    pos_a, pos_b = alliance.settlement.open_position(a.gw.brand_address), alliance.settlement.open_position(b.gw.brand_address)
    assert (pos_a.issued, pos_a.redeemed) == (50, 0)
    assert (pos_b.issued, pos_b.redeemed) == (0, 30)
    assert alliance.points.is_nonce_used(wallet.address, b.gw.brand_address, auth["nonce"])

    # -- reconciliation: books and chain agree on both gateways
    rec_a, rec_b = reconciliation(a), reconciliation(b)
    assert rec_a["ok"] and rec_b["ok"], (rec_a, rec_b)
    assert rec_a["chain"]["checked"]["exchanges"] == 1 and rec_a["chain"]["checked"]["mints_on_chain"] == 1
    assert rec_b["chain"]["checked"]["redemptions"] == 1 and rec_b["chain"]["checked"]["redemptions_on_chain"] == 1
    assert rec_a["ledger"]["account_totals"] == {"member": 5_100, "issued": -10_100, "alliance_out": 5_000}

    # -- the consent log is anchored; an entry's proof verifies against the root read from the contract
    r = a.client.post("/v1/admin/anchors", json={"kind": "consent-log"}, headers=a.as_("operator"))
    assert r.status_code == 200 and r.json()["anchored"] is True, r.text
    anchored = r.json()
    r = a.client.get("/v1/audit/logs/consent-log/1/proof", headers=a.as_("auditor"))
    assert r.status_code == 200, r.text
    proof = r.json()
    on_chain = alliance.anchor.anchor(a.gw.brand_address, "consent-log", anchored["period"])
    assert on_chain.size == proof["tree_size"] == anchored["size"] == 2
    entry = proof["entry"]
    leaf_entry = ChainEntry.from_row({"seq": entry["seq"], "payload_json": json.dumps(entry["payload"]),
                                      "prev_hash": entry["prev_hash"], "entry_hash": entry["entry_hash"]})
    assert leaf_entry.recomputed_hash() == entry["entry_hash"]
    path = [bytes.fromhex(h) for h in proof["proof"]]
    assert verify_inclusion(leaf_entry.leaf(), proof["leaf_index"], proof["tree_size"], path, on_chain.root)
    assert not verify_inclusion(leaf_entry.leaf(), 0, proof["tree_size"], path, on_chain.root)
    # The anchored entry is the member's alliance_exchange grant, and its receipt is the brand's.
    assert entry["payload"]["receipt"]["services"][0]["purposes"][0]["purpose"] == "alliance_exchange"
    _verify(entry["payload"], key_a)
    assert a.client.get("/v1/audit/logs/consent-log/verification", headers=a.as_("auditor")).json()["ok"] is True
    # Nothing new: a second anchor is refused politely.
    assert a.client.post("/v1/admin/anchors", json={"kind": "consent-log"}, headers=a.as_("operator")).json()["anchored"] is False


def test_the_wallet_never_signs_a_nonce_twice(tmp_path, clock):
    """M1, the wallet's half: the member client handed out the nonce of an expired, never-submitted
    authorisation again (the chain had not seen it used), so two different amounts were signed
    under one nonce. With the wallet's record of what it signed, every authorisation gets a nonce of
    its own, however many were signed and never submitted, and the record survives a restart."""
    from gateway.member import MemberClient, SignedNonces

    world = new_world(tmp_path)
    brand = start_world_brand(world, "cafe", 50, f"sqlite:///{tmp_path / 'cafe.sqlite'}", clock=clock)
    try:
        wallet = new_wallet()
        client = MemberClient(brand.client)
        assert client.authorise(wallet, 5).nonce == client.authorise(wallet, 9).nonce == 0  # without a record
        record = tmp_path / "device" / "signed-nonces.json"
        signed = [client.authorise(wallet, amount, signed=SignedNonces(record)) for amount in (5, 9, 7)]
        assert [a.nonce for a in signed] == [0, 1, 2]
        assert client.authorise(wallet, 3, signed=SignedNonces(record)).nonce == 3  # a new process, the same file
        assert oct(record.stat().st_mode & 0o777) == "0o600"
    finally:
        brand.close()
