"""docs/partner-guide.md followed as an integrator would, against an alliance from `alliance up`, with
nothing of this project's client code: plain HTTP with httpx, and the redemption authorisation built
from the guide's own description (its EIP-712 domain and type, the nonce lookup with `reserved`,
an hour's deadline) and signed with eth_account. Then the operator steps: anchoring through the API
and `alliance audit verify` passing."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from eth_account import Account
from eth_account.messages import encode_defunct, encode_typed_data

from integrator import retrying, settled

from contracts.chain import free_port
from scripts.up import AllianceSpec, down, up

pytestmark = [pytest.mark.anvil, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
GUIDE = (ROOT / "docs" / "partner-guide.md").read_text()


def test_an_integrator_following_the_guide_gets_everything_to_work(tmp_path):
    spec = AllianceSpec.model_validate({"workdir": str(tmp_path / "alliance"), "chain": {"port": free_port()},
                                        "federation": {"enabled": False}, "brands": [
        {"id": "grocery", "name": "Grocery", "rate": 100, "port": free_port()},
        {"id": "cafe", "name": "Cafe", "rate": 50, "port": free_port()}]})
    state = up(spec)  # section 1: `alliance up`
    try:
        grocery, cafe = state["brands"]["grocery"]["url"], state["brands"]["cafe"]["url"]
        keys = {b: json.loads(Path(s["keys"]).read_text()) for b, s in state["brands"].items()}
        till = {"Authorization": f"Bearer {keys['grocery']['pos']}"}

        # Section 3, steps 1-3 at both brands: enrol with the codes, consent, link the wallet.
        wallet = Account.create()
        tokens = {}
        for brand, url in (("grocery", grocery), ("cafe", cafe)):
            started = retrying("POST", url + "/v1/enrolments", json={
                "identifiers": {"email": "mei@guide.example"}, "name": "Mei Lin", "passphrase": "guide passphrase 1"})
            assert started.status_code == 202, started.text
            sent = (spec.workdir / "brands" / brand / "notifications" / f"{brand}.jsonl").read_text().splitlines()
            code = [json.loads(m)["code"] for m in sent if json.loads(m)["code"]][-1]
            verified = retrying("POST", f"{url}/v1/enrolments/{started.json()['enrolment_id']}/verification", json={"codes": {"email": code}})
            assert verified.status_code == 201, verified.text
            tokens[brand] = verified.json()["token"]
            me = {"Authorization": f"Bearer {tokens[brand]}"}
            assert retrying("PUT", url + "/v1/me/consents/alliance_exchange", json={"granted": True}, headers=me).status_code == 200
            challenge = retrying("POST", url + "/v1/me/wallet/challenges", json={"address": wallet.address}, headers=me).json()
            signature = wallet.sign_message(encode_defunct(text=challenge["message"])).signature
            linked = retrying("POST", url + "/v1/me/wallet", headers=me,
                              json={"challenge_id": challenge["challenge_id"], "signature": "0x" + bytes(signature).hex()})
            assert linked.status_code in (200, 201), linked.text
        member_ref = retrying("GET", grocery + "/v1/me", headers={"Authorization": f"Bearer {tokens['grocery']}"}).json()["member_ref"]

        # Section 2: a till's purchase with an Idempotency-Key; its retry is a replay and earns nothing more.
        body = {"member_ref": member_ref, "amount_minor": 200_000, "occurred_at": datetime.now(UTC).isoformat()}
        first = retrying("POST", grocery + "/v1/purchases", json=body, headers=till | {"Idempotency-Key": "till-7:0001"})
        again = retrying("POST", grocery + "/v1/purchases", json=body, headers=till | {"Idempotency-Key": "till-7:0001"})
        assert (first.status_code, again.status_code) == (201, 200) and again.json()["replayed"] is True
        other = retrying("POST", grocery + "/v1/purchases", json=body | {"amount_minor": 150_000}, headers=till | {"Idempotency-Key": "till-7:0001"})
        assert (other.status_code, other.json()["code"]) == (422, "idempotency_key_reused")  # the same key with another body
        assert "(422, `idempotency_key_reused`)" in GUIDE

        # Section 3, step 4: exchange brand points into AP.
        me = {"Authorization": f"Bearer {tokens['grocery']}"}
        r = retrying("POST", grocery + "/v1/me/exchanges", json={"ap_amount": 8}, headers=me | {"Idempotency-Key": "xchg-1"})
        assert r.status_code in (201, 202), r.text
        assert (r.json() if r.status_code == 201 else settled(grocery, "exchanges", r.json()["exchange_ref"], tokens["grocery"]))["status"] == "confirmed"

        # Section 3, step 5 and "The redemption authorisation": built from the guide's words alone.
        assert 'Redeem(address owner,address brand,uint256 amount,uint256 nonce,uint256 deadline)' in GUIDE
        brand = retrying("GET", cafe + "/v1/brand").json()["address"]
        signed_before: list[int] = []
        for amount in (3, 2):
            lookup = retrying("GET", cafe + "/v1/redemption-nonce", params={"owner": wallet.address, "reserved": signed_before}).json()
            assert lookup["nonce"] not in signed_before
            message = {"owner": wallet.address, "brand": brand, "amount": amount, "nonce": lookup["nonce"],
                       "deadline": int(time.time()) + 3600}
            typed = {"types": {"EIP712Domain": [{"name": "name", "type": "string"}, {"name": "version", "type": "string"},
                                                {"name": "chainId", "type": "uint256"}, {"name": "verifyingContract", "type": "address"}],
                               "Redeem": [{"name": n, "type": t} for t, n in (("address", "owner"), ("address", "brand"), ("uint256", "amount"),
                                                                               ("uint256", "nonce"), ("uint256", "deadline"))]},
                     "primaryType": "Redeem", "message": message,
                     "domain": {"name": "AlliancePoints", "version": "2", "chainId": lookup["chain_id"],
                                "verifyingContract": lookup["points_contract"]}}
            signature = wallet.sign_message(encode_typed_data(full_message=typed)).signature
            signed_before.append(lookup["nonce"])  # remembered before it is sent: never signed again
            body = message | {"signature": "0x" + bytes(signature).hex()}
            r = retrying("POST", cafe + "/v1/me/redemptions", json=body, headers={"Authorization": f"Bearer {tokens['cafe']}"})
            assert r.status_code in (201, 202), r.text
            done = r.json() if r.status_code == 201 else settled(cafe, "redemptions", r.json()["redemption_ref"], tokens["cafe"])
            assert done["status"] == "confirmed" and done["reward_points"] == amount * 50
            repeat = retrying("POST", cafe + "/v1/me/redemptions", json=body, headers={"Authorization": f"Bearer {tokens['cafe']}"})
            assert repeat.status_code == 200  # the same signed body again: its current state, nothing more
        balance = retrying("GET", cafe + "/v1/me/balance", headers={"Authorization": f"Bearer {tokens['cafe']}"}).json()
        assert balance["points"] == 100 + 5 * 50  # welcome points and the two redemptions

        # Section 4: anchor now, then the audit passes.
        for b, url in (("grocery", grocery), ("cafe", cafe)):
            for kind in ("consent-log", "audit-log"):
                r = retrying("POST", url + "/v1/admin/anchors", json={"kind": kind}, headers={"Authorization": f"Bearer {keys[b]['operator']}"})
                assert r.status_code == 200, r.text
        audit = subprocess.run([sys.executable, "-m", "scripts.cli", "audit", "verify", "-c", str(spec.workdir / "settlement.json"),
                                "--out", str(tmp_path / "audit")], cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert audit.returncode == 0, audit.stdout + audit.stderr
    finally:
        down(spec.workdir)
