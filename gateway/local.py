"""A whole alliance in one process, on embedded defaults: the in-process chain, one gateway per brand
with its own SQLite database, reached over HTTP through in-process clients. The demo, the tests and
the benchmarks start alliances this way; production runs each gateway as its own service."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

from eth_account.signers.local import LocalAccount
from fastapi.testclient import TestClient

from contracts.chain import EMBEDDED, Chain, connect
from contracts.client import Alliance
from contracts.defaults import EPOCH_S
from contracts.deploy import BrandTerms, deploy_alliance, onboard_brand

from .app import create_app
from .auth import create_api_key
from .db import transaction
from .member import MemberClient
from .runtime import Gateway, build_gateway
from .settings import GatewaySettings


@dataclass
class LocalBrand:
    gateway: Gateway
    http: TestClient
    api_keys: dict[str, str]  # role -> secret

    @property
    def address(self) -> str:
        return self.gateway.brand_address

    def headers(self, role: str, **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_keys[role]}", **extra}

    def member(self, token: str | None = None) -> MemberClient:
        return MemberClient(self.http, token)

    def enrol(self, identifiers: dict[str, str], name: str, passphrase: str, birthday: str | None = None) -> MemberClient:
        """A member enrolling from their own device: the codes sent to their identifiers are read
        where the development notifier left them (this is a local alliance), then given back."""
        client = self.member()
        started = client.enrol(identifiers, name, passphrase, birthday)
        client.verify(started["enrolment_id"], {kind: self.last_code(identifiers[kind]) for kind in started["sent_to"]})
        return client

    def last_code(self, identifier: str) -> str:
        normalised = self.gateway.pseudonymiser.normalise("email" if "@" in identifier else "phone", identifier)
        sent = [m for m in self.gateway.notifier.messages(normalised) if m.code]
        if not sent:
            raise LookupError("no code was sent to this identifier")
        return sent[-1].code


@dataclass
class LocalAlliance:
    chain: Chain
    governor: LocalAccount
    alliance: Alliance
    workdir: Path
    brands: dict[str, LocalBrand] = field(default_factory=dict)

    @classmethod
    def start(cls, workdir: Path, chain_url: str = EMBEDDED, fresh: bool = True) -> "LocalAlliance":
        if fresh and workdir.exists():
            shutil.rmtree(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        chain = connect(chain_url)
        governor = chain.new_account()
        # Epochs may close at once: the demo and the tests settle right after they trade.
        alliance = deploy_alliance(chain, governor, epoch_lengths=(0, EPOCH_S))
        alliance.manifest.save(workdir / "deployment.json")
        return cls(chain, governor, alliance, workdir)

    def add_brand(self, brand_id: str, terms: BrandTerms, database_url: str | None = None, **settings) -> LocalBrand:
        s = GatewaySettings(brand_id=brand_id, brand_name=terms.name, keys_dir=self.workdir / brand_id / "keys",
                            database_url=database_url or f"sqlite:///{self.workdir / brand_id / 'gateway.sqlite'}",
                            manifest=self.workdir / "deployment.json", outbox_interval_s=0, anchor_interval_s=0,
                            notifier="dev", notifications_dir=self.workdir / brand_id / "notifications", **settings)
        gw = build_gateway(s, chain=self.chain)
        self.chain.fund(gw.brand_address)
        onboard_brand(self.alliance, self.governor, gw.chain_account, terms)
        with transaction(gw.sessions) as session:
            keys = {role: create_api_key(session, role, f"{role}-local", gw.now())[1] for role in ("operator", "pos", "auditor")}
        brand = LocalBrand(gw, TestClient(create_app(gateway=gw, background=False)), keys)
        self.brands[brand_id] = brand
        return brand

    def close_epoch(self) -> list[dict]:
        receipt = self.alliance.settlement.close_epoch(self.alliance.transactor(self.governor))
        return self.alliance.settlement.events(receipt, "BrandSettled")
