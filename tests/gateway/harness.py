"""Brands with their gateways on one shared chain, for tests, the demo and benchmarks."""

from __future__ import annotations

import socket
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import uvicorn
from eth_account import Account
from eth_account.messages import encode_defunct
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from contracts.chain import Chain, connect, free_port
from contracts.client import Alliance
from contracts.client import Redemption as RedemptionAuth
from contracts.defaults import EPOCH_S
from contracts.deploy import BrandTerms, deploy_alliance, onboard_brand
from gateway.app import create_app
from gateway.auth import create_api_key
from gateway.db import transaction
from gateway.models import Member
from gateway.runtime import Gateway, build_gateway
from gateway.services import alliance as chain_ops
from gateway.settings import GatewaySettings, Throttle, Throttles

PASSPHRASE = "correct horse battery"


class Clock:
    """A settable clock for `Gateway.clock`: tests move time, never sleep."""

    def __init__(self, start: datetime | None = None):
        self.now = start or datetime(2026, 3, 3, 10, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta) -> datetime:
        self.now = self.now + timedelta(**delta)
        return self.now

    def set(self, moment: datetime) -> datetime:
        self.now = moment
        return self.now


@dataclass
class World:
    """One deployed alliance on one chain, shared by several brands."""

    chain: Chain
    governor: object
    alliance: Alliance
    manifest_path: Path
    workdir: Path

    def gov(self):
        return self.alliance.transactor(self.governor)


def new_world(workdir: Path | None = None, chain: Chain | None = None) -> World:
    workdir = Path(workdir or tempfile.mkdtemp(prefix="alliance-"))
    chain = chain or connect()
    governor = chain.new_account()
    alliance = deploy_alliance(chain, governor, epoch_lengths=(0, EPOCH_S))
    manifest_path = alliance.manifest.save(workdir / "manifest.json")
    return World(chain, governor, alliance, manifest_path, workdir)


@dataclass
class Brand:
    gw: Gateway
    client: TestClient
    keys: dict[str, str]  # role -> API key secret
    workdir: Path | None = None
    extra: dict = field(default_factory=dict)

    def as_(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[role]}"}

    def close(self) -> None:
        self.client.close()
        self.gw.engine.dispose()


# Every test request comes from one client address ("testclient"): let it enrol and log in as often
# as the tests need (the limits themselves are tested in test_gateway_attacks.py).
GENEROUS = Throttles(enrol_per_address=Throttle(burst=100_000, period_s=60), login_per_address=Throttle(burst=100_000, period_s=60),
                     code_per_address=Throttle(burst=100_000, period_s=60))


def _settings(workdir: Path, brand_id: str, name: str, database_url: str | None, manifest_path: Path | None, **settings) -> GatewaySettings:
    # Tests reason in UTC days (the brand's calendar is tested on its own in test_gateway_rules.py).
    settings = {"throttles": GENEROUS, "timezone": "UTC", "notifier": "dev", "notifications_dir": workdir / f"{brand_id}-notifications"} | settings
    return GatewaySettings(brand_id=brand_id, brand_name=name, database_url=database_url or f"sqlite:///{workdir}/{brand_id}.sqlite",
                           keys_dir=workdir / f"{brand_id}-keys", manifest=manifest_path, outbox_interval_s=0,
                           anchor_interval_s=0, **settings)


def _api_keys(gw: Gateway) -> dict[str, str]:
    keys = {}
    with transaction(gw.sessions) as session:
        for role in ("operator", "pos", "auditor"):
            keys[role] = create_api_key(session, role, f"{role}-test", gw.now())[1]
    return keys


def start_brand(alliance: Alliance, governor, manifest_path: Path, workdir: Path, brand_id: str, name: str, rate: int,
                database_url: str | None = None, clock=None, client_kwargs: dict | None = None, **settings) -> Brand:
    s = _settings(workdir, brand_id, name, database_url, manifest_path, **settings)
    gw = build_gateway(s, chain=alliance.chain)
    if clock is not None:
        gw.clock = clock
    alliance.chain.fund(gw.brand_address)
    onboard_brand(alliance, governor, gw.chain_account, BrandTerms(name, rate=rate, credit_limit=10**9, collateral=10**15))
    client = TestClient(create_app(gateway=gw, background=False), **(client_kwargs or {}))
    return Brand(gw, client, _api_keys(gw), workdir)


def start_world_brand(world: World, brand_id: str, rate: int, database_url: str | None = None, **kwargs) -> Brand:
    return start_brand(world.alliance, world.governor, world.manifest_path, world.workdir, brand_id,
                       brand_id.replace("-", " ").title(), rate, database_url=database_url, **kwargs)


def start_local_brand(workdir: Path, brand_id: str, database_url: str | None = None, clock=None,
                      client_kwargs: dict | None = None, **settings) -> Brand:
    """A gateway without a chain (brand-local points only): fast, for the business rules."""
    gw = build_gateway(_settings(workdir, brand_id, brand_id.title(), database_url, None, **settings))
    if clock is not None:
        gw.clock = clock
    client = TestClient(create_app(gateway=gw, background=False), **(client_kwargs or {}))
    return Brand(gw, client, _api_keys(gw), workdir)


def restart(brand: Brand, chain: Chain | None = None, clock=None) -> Brand:
    """The same brand started again on the same database, keys and chain (a new process, as far as
    the gateway can tell). Enter `brand.client` as a context manager to run the start-up recovery."""
    brand.client.close()
    brand.gw.engine.dispose()
    gw = build_gateway(brand.gw.settings, chain=chain or (brand.gw.alliance.chain if brand.gw.alliance else None))
    gw.clock = clock or brand.gw.clock
    return Brand(gw, TestClient(create_app(gateway=gw, background=False)), brand.keys, brand.workdir)


def last_code(brand: Brand, kind: str, value: str) -> str | None:
    """The newest one-time code the brand's development notifier sent to this identifier."""
    to = brand.gw.pseudonymiser.normalise(kind, value)
    codes = [m.code for m in brand.gw.notifier.messages(to) if m.code]
    return codes[-1] if codes else None


def start_enrolment(brand: Brand, identifiers: dict, name: str = "Alice Zhang", passphrase: str = PASSPHRASE, **extra):
    return brand.client.post("/v1/enrolments", json={"identifiers": identifiers, "name": name, "passphrase": passphrase, **extra})


def verify_enrolment(brand: Brand, enrolment_id: str, codes: dict):
    return brand.client.post(f"/v1/enrolments/{enrolment_id}/verification", json={"codes": codes})


def enrol(brand: Brand, phone: str, name: str = "Alice Zhang", passphrase: str = PASSPHRASE, **extra) -> dict:
    """A member who enrolled themselves, proving each identifier with its code. A card is registered
    at the till instead (staff enrolment), and the member then logs in."""
    identifiers = extra.pop("identifiers", None) or {"phone": phone}
    if "card" in identifiers:
        r = brand.client.post("/v1/members", headers=brand.as_("pos"),
                              json={"identifiers": identifiers, "name": name, "passphrase": passphrase, **extra})
        assert r.status_code == 201, r.text
        kind = "phone" if "phone" in identifiers else "email"
        return r.json() | {"phone": identifiers.get("phone"), "auth": login(brand, kind, identifiers[kind], passphrase)}
    r = start_enrolment(brand, identifiers, name, passphrase, **extra)
    assert r.status_code == 202, r.text
    started = r.json()
    r = verify_enrolment(brand, started["enrolment_id"], {k: last_code(brand, k, identifiers[k]) for k in started["sent_to"]})
    assert r.status_code == 201, r.text
    body = r.json()
    body["phone"] = identifiers.get("phone")
    body["auth"] = {"Authorization": f"Bearer {body['token']}"}
    return body


def login(brand: Brand, kind: str, value: str, passphrase: str = PASSPHRASE) -> dict[str, str]:
    r = brand.client.post("/v1/sessions", json={"kind": kind, "value": value, "passphrase": passphrase})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['token']}"}


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


def refund(brand: Brand, purchase_ref: str, amount_minor: int, key: str):
    return brand.client.post(f"/v1/purchases/{purchase_ref}/refunds", headers=brand.as_("pos") | {"Idempotency-Key": key},
                             json={"amount_minor": amount_minor})


def action(brand: Brand, member_ref: str, kind: str, key: str, occurred_at: datetime):
    return brand.client.post("/v1/actions", headers=brand.as_("pos") | {"Idempotency-Key": key},
                             json={"member_ref": member_ref, "kind": kind, "occurred_at": occurred_at.isoformat()})


def exchange(brand: Brand, member: dict, ap_amount: int, key: str):
    return brand.client.post("/v1/me/exchanges", json={"ap_amount": ap_amount}, headers=member["auth"] | {"Idempotency-Key": key})


def maintenance(brand: Brand) -> dict:
    r = brand.client.post("/v1/admin/maintenance", headers=brand.as_("operator"))
    assert r.status_code == 200, r.text
    return r.json()


def balance(brand: Brand, member: dict) -> dict:
    r = brand.client.get("/v1/me/balance", headers=member["auth"])
    assert r.status_code == 200, r.text
    return r.json()


def reconciliation(brand: Brand) -> dict:
    r = brand.client.get("/v1/audit/reconciliation", headers=brand.as_("auditor"))
    assert r.status_code == 200, r.text
    return r.json()


def authorise(alliance: Alliance, wallet, brand: Brand, amount: int, deadline: int, nonce: int | None = None) -> dict:
    auth = alliance.points.authorise(wallet, brand.gw.brand_address, amount, deadline, nonce)
    return auth.to_dict()


def _member_row(session, m) -> Member:
    return session.scalars(select(Member).where(Member.member_ref == m["member_ref"])).one()


def queue_exchange(brand, m, ap: int, key: str) -> str:
    """An exchange accepted and committed, its chain operation left to the sender (no request waits)."""
    with transaction(brand.gw.sessions) as session:
        row, _ = chain_ops.request_exchange(session, brand.gw, _member_row(session, m), ap, f"test:{key}", "0" * 64, brand.gw.now())
        return row.exchange_ref


def queue_redemption(brand, m, auth: dict) -> str:
    with transaction(brand.gw.sessions) as session:
        row, _ = chain_ops.accept_redemption(session, brand.gw, _member_row(session, m),
                                            chain_ops.verify_redemption(brand.gw, RedemptionAuth.from_dict(auth), brand.gw.now()), brand.gw.now())
        return row.redemption_ref


def chain_rows(brand: Brand, model, refs: list[str]) -> list:
    """The exchange or redemption rows of these refs, in their order."""
    column = model.exchange_ref if model.__tablename__ == "exchanges" else model.redemption_ref
    with brand.gw.sessions() as session:
        rows = {getattr(r, column.key): r for r in session.scalars(select(model).where(column.in_(refs)))}
    return [rows[ref] for ref in refs]


def db_balance(brand: Brand, member_ref: str) -> tuple[int, int, int]:
    """(Member.balance, sum of the member's ledger entries, sum of open lots) read from the database."""
    from gateway.models import LedgerEntry, Member, PointLot

    with brand.gw.sessions() as session:
        m = session.scalars(select(Member).where(Member.member_ref == member_ref)).one()
        entries = session.scalar(select(func.coalesce(func.sum(LedgerEntry.amount), 0))
                                 .where(LedgerEntry.member_id == m.id, LedgerEntry.account == "member"))
        lots = session.scalar(select(func.coalesce(func.sum(PointLot.remaining), 0)).where(PointLot.member_id == m.id))
        return m.balance, int(entries), int(lots)


def make_database_url(request, backend: str, directory: Path, name: str = "gateway") -> str:
    """A fresh database for a test: a file for SQLite, a new database on the test server for PostgreSQL."""
    if backend == "sqlite":
        return f"sqlite:///{directory}/{name}.sqlite"
    return request.getfixturevalue("postgres_databases").create("gateway_test")


def new_wallet():
    return Account.create()


def write_release(release_dir: Path, feature_names: list[str] | None = None, seed: int = 0) -> Path:
    """A released logistic regression over the alliance features (random weights: scores, not quality)."""
    import numpy as np

    from federation import features, models
    from federation.releases import write_release as write

    names = list(feature_names or features.FEATURE_NAMES)
    params = {"w": np.random.default_rng(seed).normal(size=len(names)).astype(np.float32), "b": np.zeros(1, np.float32)}
    path, _ = write(release_dir, model_bytes=models.serialise_logreg(params, names), model_format="alliance.logreg/1", fields={
        "task": "redeem", "model": "logreg", "strategy": "fedavg", "data_source": "gateway", "feature_names": names,
        "num_rounds": 1, "rounds_completed": 1, "participating_brands": ["test"], "privacy": {"guarantee": "none"},
        "secure_aggregation": {"enabled": False}, "metrics_per_round": [], "final_metrics": {}})
    return path


class Cable:
    """A TCP relay between the gateway and its chain node that can be unplugged and plugged back:
    the node keeps running, the gateway loses its connection (as when the network drops)."""

    def __init__(self, target_port: int):
        self.target_port = target_port
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.plugged = True
        self.live: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            client, _ = self.server.accept()
            if not self.plugged:
                client.close()
                continue
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            self.live += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        for s in (a, b):
            try:
                s.close()
            except OSError:
                pass

    def unplug(self) -> None:
        self.plugged = False
        for s in self.live:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.live.clear()

    def plug(self) -> None:
        self.plugged = True


class Server:
    """The gateway served by uvicorn in a background thread."""

    def __init__(self, gw, port: int | None = None):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(create_app(gateway=gw, background=False), host="127.0.0.1", port=self.port,
                                log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.05)
        return self.url

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def storm(url: str, requests: list[tuple[str, dict, dict]]) -> list[httpx.Response]:
    """Send every request at the same moment, each from its own thread and connection."""
    barrier = threading.Barrier(len(requests))

    def one(req):
        path, body, headers = req
        with httpx.Client(base_url=url, timeout=120) as client:
            barrier.wait()
            return client.post(path, json=body, headers=headers)

    with ThreadPoolExecutor(max_workers=len(requests)) as pool:
        return list(pool.map(one, requests))
