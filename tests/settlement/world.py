"""A whole local alliance with gateways (embedded chain) in the state the settlement service audits:
members enrolled, consents given and withdrawn, exchanges and redemptions across brands, two federated
training reads and a campaign at the grocery (carol withdraws federated_training between the reads),
consent and audit logs anchored twice, one epoch closed."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from eth_account import Account

from contracts.deploy import BrandTerms
from federation import data, features, models
from federation.releases import write_release
from gateway.local import LocalAlliance, LocalBrand
from settlement.audit import GatewayAccess
from settlement.store import Store

BRANDS = {
    "grocery": BrandTerms("Harbour Grocery", rate=100, credit_limit=1_000_000, collateral=50_000_000_000),
    "airline": BrandTerms("Skyway Airlines", rate=20, credit_limit=1_000_000, collateral=50_000_000_000),
    "cafe": BrandTerms("Bean Cafe", rate=50, credit_limit=1_000_000, collateral=50_000_000_000),
}


@dataclass
class GatewayWorld:
    local: LocalAlliance
    brands: dict[str, LocalBrand]
    store: Store
    wallets: dict[str, object] = field(default_factory=dict)

    def access(self, brand_id: str, database: bool = True) -> GatewayAccess:
        b = self.brands[brand_id]
        return GatewayAccess(brand_id, b.address, b.http, b.api_keys["auditor"], None,
                             b.gateway.settings.database_url if database else None)

    def accesses(self) -> list[GatewayAccess]:
        return [self.access(b) for b in self.brands]

    def db_path(self, brand_id: str) -> Path:
        return Path(self.brands[brand_id].gateway.settings.database_url.removeprefix("sqlite:///"))

    def anchor(self, brand_id: str, kind: str = "consent-log"):
        b = self.brands[brand_id]
        return b.http.post("/v1/admin/anchors", json={"kind": kind}, headers=b.headers("operator"))


def build(workdir: Path, chain_url: str = "embedded") -> GatewayWorld:
    local = LocalAlliance.start(workdir, chain_url=chain_url)
    releases = workdir / "releases"
    write_test_release(releases)
    brands = {bid: local.add_brand(bid, terms, releases_dir=releases) for bid, terms in BRANDS.items()}
    people = ["alice", "bob", "carol", "dan"]
    wallets = {p: Account.create() for p in people}
    sessions = {}
    for i, name in enumerate(people):
        for bid in brands:
            sessions[name, bid] = brands[bid].enrol({"phone": f"+86138{i:08d}"}, name.title(), f"{name}-passphrase-2026", "1990-05-17")
    grocery = brands["grocery"]
    for i, name in enumerate(people):
        ref = sessions[name, "grocery"].balance()["member_ref"]
        r = grocery.http.post("/v1/purchases", headers=grocery.headers("pos", **{"Idempotency-Key": f"till:{i}"}),
                              json={"member_ref": ref, "amount_minor": 200_000 + 10_000 * i,
                                    "occurred_at": datetime.now(UTC).isoformat()})
        assert r.status_code == 201, r.text
    for name in ("alice", "bob", "carol"):
        sessions[name, "grocery"].consent("alliance_exchange")
        sessions[name, "grocery"].link_wallet(wallets[name])
        sessions[name, "grocery"].exchange(10)
    for bid in brands:
        brands[bid].http.post("/v1/admin/anchors", json={"kind": "consent-log"}, headers=brands[bid].headers("operator"))
    for name, bid, amount in (("alice", "airline", 6), ("bob", "cafe", 5), ("alice", "cafe", 2), ("carol", "grocery", 3)):
        client = sessions[name, bid]
        client.consent("alliance_exchange")
        if client.linked_wallet() != wallets[name].address:
            client.link_wallet(wallets[name])
        client.redeem(client.authorise(wallets[name], amount))
    sessions["bob", "grocery"].consent("alliance_exchange", granted=False)
    sessions["dan", "cafe"].consent("marketing")
    # Processings under the other purposes: two training rounds read the grocery's features (carol
    # withdraws in between), then the grocery's operator targets a campaign.
    for name in ("alice", "bob", "carol"):
        sessions[name, "grocery"].consent("federated_training")
    for name in ("alice", "dan"):
        sessions[name, "grocery"].consent("marketing")
    grocery_db = grocery.gateway.settings.database_url
    data.read_for_training(grocery_db, [datetime.now(UTC)], "run:1:round:1:train")
    sessions["carol", "grocery"].consent("federated_training", granted=False)
    data.read_for_training(grocery_db, [datetime.now(UTC)], "run:1:round:2:train")
    r = grocery.http.post("/v1/campaigns/targets", json={"top_k": 10}, headers=grocery.headers("operator"))
    assert r.status_code == 200 and r.json()["count"] == 2, r.text
    for bid in brands:
        for kind in ("consent-log", "audit-log"):
            brands[bid].http.post("/v1/admin/anchors", json={"kind": kind}, headers=brands[bid].headers("operator"))
    local.close_epoch()
    # Open-epoch activity after the close.
    sessions["alice", "grocery"].exchange(4)
    store = Store(f"sqlite:///{workdir / 'settlement.sqlite'}")
    return GatewayWorld(local, brands, store, wallets)


def write_test_release(release_dir: Path) -> Path:
    """A released logistic regression over the alliance features (random weights: scores, not quality)."""
    params = {"w": np.random.default_rng(0).normal(size=len(features.FEATURE_NAMES)).astype(np.float32), "b": np.zeros(1, np.float32)}
    path, _ = write_release(release_dir, model_bytes=models.serialise_logreg(params, list(features.FEATURE_NAMES)),
                            model_format="alliance.logreg/1", fields={
                                "task": "redeem", "model": "logreg", "strategy": "fedavg", "data_source": "gateway",
                                "feature_names": list(features.FEATURE_NAMES), "num_rounds": 1, "rounds_completed": 1,
                                "participating_brands": list(BRANDS), "privacy": {"guarantee": "none"},
                                "secure_aggregation": {"enabled": False}, "metrics_per_round": [], "final_metrics": {}})
    return path


def new_secret() -> str:
    return secrets.token_urlsafe(12)
