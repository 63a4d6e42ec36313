"""Concurrency on PostgreSQL: a real uvicorn server (one worker, its thread pool) on a loopback port,
hit by 50 client threads at once. Parallel exchanges against one member's points, and parallel
redemptions by one wallet against its AP, never overdraw."""

from __future__ import annotations

import threading
import time

import pytest
from harness import (
    Clock,
    Server,
    authorise,
    consent,
    db_balance,
    enrol,
    link_wallet,
    make_database_url,
    new_wallet,
    purchase,
    reconciliation,
    start_world_brand,
    storm,
)
from sqlalchemy import func, select

from gateway.models import LedgerEntry, LedgerTxn, Member

pytestmark = pytest.mark.postgres
PARALLEL = 50
RATE = 10


class BalanceWatch:
    """Samples the member's balance in the database while the storm runs; remembers the lowest."""

    def __init__(self, gw, member_ref: str):
        self.gw, self.ref, self.lowest, self._stop = gw, member_ref, None, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            with self.gw.sessions() as session:
                b = session.scalar(select(Member.balance).where(Member.member_ref == self.ref))
            self.lowest = b if self.lowest is None else min(self.lowest, b)
            time.sleep(0.01)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self.thread.join()


@pytest.fixture(scope="module")
def shop(postgres_databases, request, world, tmp_path_factory):
    clock = Clock()
    url = make_database_url(request, "postgres", tmp_path_factory.mktemp("concurrency"), "concurrency")
    brand = start_world_brand(world, "rush", RATE, url, clock=clock)
    yield brand, clock
    brand.close()


def test_parallel_exchanges_never_overdraw(shop, world):
    brand, clock = shop
    m = enrol(brand, "+8613500000001")
    consent(brand, m, "alliance_exchange")
    wallet = new_wallet()
    link_wallet(brand, m, wallet)
    assert purchase(brand, m["member_ref"], 10_000, "seed", clock.now).json()["balance"] == 300  # 100 welcome + 200
    start = 300
    ap_each = 3  # 30 brand points each: at most 10 of the 50 can succeed
    requests = [("/v1/me/exchanges", {"ap_amount": ap_each}, m["auth"] | {"Idempotency-Key": f"rush-{i}"}) for i in range(PARALLEL)]
    with Server(brand.gw) as url, BalanceWatch(brand.gw, m["member_ref"]) as watch:
        responses = storm(url, requests)
    codes = sorted(r.status_code for r in responses)
    ok = [r for r in responses if r.status_code == 201]
    failed = [r for r in responses if r.status_code != 201]
    assert all(r.status_code == 409 and r.json()["code"] == "insufficient_points" for r in failed), codes
    assert all(r.json()["status"] == "confirmed" for r in ok)
    assert len(ok) * ap_each * RATE <= start
    assert len(ok) == start // (ap_each * RATE)  # and nothing was refused that could have been served
    assert watch.lowest is not None and watch.lowest >= 0
    b, entries, lots = db_balance(brand, m["member_ref"])
    assert b == entries == lots == start - len(ok) * ap_each * RATE
    assert world.alliance.points.balance_of(wallet.address) == len(ok) * ap_each
    assert len({r.json()["exchange_ref"] for r in ok}) == len(ok)


def test_parallel_redemptions_never_redeem_more_than_held(shop, world):
    brand, clock = shop
    alliance = world.alliance
    m = enrol(brand, "+8613500000002")
    consent(brand, m, "alliance_exchange")
    wallet = new_wallet()
    link_wallet(brand, m, wallet)
    purchase(brand, m["member_ref"], 10_000, "seed-2", clock.now)
    r = brand.client.post("/v1/me/exchanges", json={"ap_amount": 15}, headers=m["auth"] | {"Idempotency-Key": "fund"})
    assert r.status_code == 201, r.text
    held = alliance.points.balance_of(wallet.address)
    assert held == 15
    points_before = db_balance(brand, m["member_ref"])[0]
    supply_before = alliance.points.total_supply()
    deadline = world.chain.timestamp() + 3600
    each = 3  # 50 x 3 = 150 AP asked for, 15 held: 5 can succeed
    auths = [authorise(alliance, wallet, brand, each, deadline, nonce=i) for i in range(PARALLEL)]
    requests = [("/v1/me/redemptions", auth, m["auth"]) for auth in auths]
    with Server(brand.gw) as url:
        responses = storm(url, requests)
    ok = [r for r in responses if r.status_code == 201]
    failed = [r for r in responses if r.status_code != 201]
    assert all(r.status_code == 409 and r.json()["code"] == "chain_rejected" for r in failed), sorted(r.status_code for r in responses)
    redeemed = held - alliance.points.balance_of(wallet.address)
    assert len(ok) * each == redeemed <= held
    assert redeemed == held  # every AP the wallet had went, no more
    assert alliance.points.total_supply() == supply_before - redeemed
    # Brand points credited == AP redeemed x rate, exactly once each.
    b, entries, lots = db_balance(brand, m["member_ref"])
    assert b == entries == lots == points_before + redeemed * RATE
    with brand.gw.sessions() as session:
        credited = session.scalar(select(func.coalesce(func.sum(LedgerEntry.amount), 0)).join(LedgerTxn, LedgerTxn.id == LedgerEntry.txn_id)
                                  .where(LedgerTxn.kind == "alliance_redeem", LedgerEntry.account == "member",
                                         LedgerEntry.member_id == LedgerTxn.member_id))
    assert credited == redeemed * RATE
    assert sum(r.json()["reward_points"] for r in ok) == redeemed * RATE
    report = reconciliation(brand)
    assert report["ok"], report
    assert report["chain"]["checked"]["redemptions"] == report["chain"]["checked"]["redemptions_on_chain"] == len(ok)
