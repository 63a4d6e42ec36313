"""Brands with their gateways on one shared chain, for tests, the demo and benchmarks."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from eth_account import Account
from eth_account.messages import encode_defunct
from fastapi.testclient import TestClient

from contracts.chain import Chain
from contracts.client import Alliance
from contracts.deploy import BrandTerms, onboard_brand
from gateway.app import create_app
from gateway.auth import create_api_key
from gateway.db import transaction
from gateway.runtime import Gateway, build_gateway
from gateway.settings import GatewaySettings


@dataclass
class Brand:
    gw: Gateway
    client: TestClient
    keys: dict[str, str]  # role -> API key secret

    def as_(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[role]}"}


def start_brand(alliance: Alliance, governor, manifest_path: Path, workdir: Path, brand_id: str, name: str, rate: int,
                database_url: str | None = None, clock=None, **settings) -> Brand:
    s = GatewaySettings(brand_id=brand_id, brand_name=name, database_url=database_url or f"sqlite:///{workdir}/{brand_id}.sqlite",
                        keys_dir=workdir / f"{brand_id}-keys", manifest=manifest_path, outbox_interval_s=0, anchor_interval_s=0,
                        **settings)
    gw = build_gateway(s, chain=alliance.chain)
    if clock is not None:
        gw.clock = clock
    alliance.chain.fund(gw.brand_address)
    onboard_brand(alliance, governor, gw.chain_account, BrandTerms(name, rate=rate, credit_limit=10**9, collateral=10**15))
    keys = {}
    with transaction(gw.sessions) as session:
        for role in ("operator", "pos", "auditor"):
            keys[role] = create_api_key(session, role, f"{role}-test", gw.now())[1]
    client = TestClient(create_app(gateway=gw, background=False))
    return Brand(gw, client, keys)


def enrol(brand: Brand, phone: str, name: str = "Alice Zhang", passphrase: str = "correct horse battery", **extra) -> dict:
    r = brand.client.post("/v1/members", json={"identifiers": {"phone": phone}, "name": name, "passphrase": passphrase, **extra})
    assert r.status_code == 201, r.text
    body = r.json()
    body["auth"] = {"Authorization": f"Bearer {body['token']}"}
    return body


def link_wallet(brand: Brand, member: dict, wallet) -> None:
    r = brand.client.post("/v1/me/wallet/challenges", json={"address": wallet.address}, headers=member["auth"])
    assert r.status_code == 201, r.text
    challenge = r.json()
    signature = wallet.sign_message(encode_defunct(text=challenge["message"])).signature
    r = brand.client.post("/v1/me/wallet", json={"challenge_id": challenge["challenge_id"], "signature": "0x" + bytes(signature).hex()},
                          headers=member["auth"])
    assert r.status_code == 200, r.text


def consent(brand: Brand, member: dict, purpose: str, granted: bool = True) -> dict:
    r = brand.client.put(f"/v1/me/consents/{purpose}", json={"granted": granted}, headers=member["auth"])
    assert r.status_code == 200, r.text
    return r.json()


def purchase(brand: Brand, member_ref: str, amount_minor: int, key: str, occurred_at: datetime, **extra):
    return brand.client.post("/v1/purchases", headers=brand.as_("pos") | {"Idempotency-Key": key},
                             json={"member_ref": member_ref, "amount_minor": amount_minor, "occurred_at": occurred_at.isoformat(), **extra})


def authorise(alliance: Alliance, wallet, brand: Brand, amount: int, deadline: int, nonce: int | None = None) -> dict:
    auth = alliance.points.authorise(wallet, brand.gw.brand_address, amount, deadline, nonce)
    return auth.to_dict()
