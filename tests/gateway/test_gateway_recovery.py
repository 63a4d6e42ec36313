"""A crash between the ledger write and the chain (before the broadcast, or after it but before the
row is marked), then a restart on the same database and chain: the start-up recovery finishes the
operation, with exactly one mint (or burn) on chain and the ledger right. And a chain that refuses
an exchange gives the member's points back exactly."""

from __future__ import annotations

from contextlib import nullcontext

import pytest
from fastapi.testclient import TestClient
from harness import (
    Clock,
    authorise,
    balance,
    chain_rows,
    consent,
    db_balance,
    enrol,
    exchange,
    link_wallet,
    make_database_url,
    new_wallet,
    new_world,
    purchase,
    queue_exchange,
    queue_redemption,
    reconciliation,
    refund,
    restart,
    start_world_brand,
)
from sqlalchemy import select

from contracts.chain import Transactor
from gateway.models import Exchange, LedgerTxn, PointLot, Redemption
from gateway.services import alliance as chain_ops

RATE = 10


class Crash(Exception):
    """Stands for the process dying at that point."""


class CrashAfterBroadcast(Transactor):
    def broadcast(self, signed):
        super().broadcast(signed)
        raise Crash("died after the broadcast, before marking the row")


@pytest.fixture(scope="module")
def env(request, module_backend, tmp_path_factory):
    workdir = tmp_path_factory.mktemp(f"recovery-{module_backend}")
    world = new_world(workdir)  # a chain of its own: these tests count events since deployment
    clock = Clock()
    url = make_database_url(request, module_backend, workdir, "recovery")
    state = {"brand": start_world_brand(world, "phoenix", RATE, url, clock=clock), "n": 0}
    yield world, state, clock
    state["brand"].close()


def _arm(brand, crash: str) -> None:
    """Make the next chain submission of `brand` crash at the given point (once)."""
    gw = brand.gw
    if crash == "before_broadcast":
        calls = []

        def hook(ref: str) -> None:
            calls.append(ref)
            if len(calls) == 1:
                raise Crash(f"died before broadcasting {ref}")

        gw.before_broadcast = hook
    else:
        gw.transactor = lambda: CrashAfterBroadcast(gw.alliance.chain, gw.chain_account)


def _crashing_client(brand) -> TestClient:
    return TestClient(brand.client.app, raise_server_exceptions=False)


def _member(world, brand, state, clock, points_minor: int = 100_000) -> dict:
    state["n"] += 1
    m = enrol(brand, f"+86135{state['n']:08d}")
    consent(brand, m, "alliance_exchange")
    m["wallet"] = new_wallet()
    link_wallet(brand, m, m["wallet"])
    clock.advance(minutes=1)
    assert purchase(brand, m["member_ref"], points_minor, f"seed-{m['member_ref']}", clock.now).status_code == 201
    return m


def _restart(state) -> object:
    state["brand"] = restart(state["brand"])
    return state["brand"]


def _lots(brand, member_ref: str) -> list[tuple]:
    from gateway.models import Member

    with brand.gw.sessions() as session:
        member_id = session.scalar(select(Member.id).where(Member.member_ref == member_ref))
        return [(lot.id, lot.amount, lot.remaining, lot.expires_at) for lot in
                session.scalars(select(PointLot).where(PointLot.member_id == member_id).order_by(PointLot.id))]


@pytest.mark.parametrize("crash", ["before_broadcast", "after_broadcast"])
def test_exchange_survives_a_crash(env, crash):
    world, state, clock = env
    alliance = world.alliance
    brand = state["brand"]
    m = _member(world, brand, state, clock)
    start = db_balance(brand, m["member_ref"])[0]
    supply = alliance.points.total_supply()

    _arm(brand, crash)
    r = _crashing_client(brand).post("/v1/me/exchanges", json={"ap_amount": 40},
                                     headers=m["auth"] | {"Idempotency-Key": f"crash-{crash}"})
    assert r.status_code >= 500 or r.json()["status"] == "pending", r.text
    with brand.gw.sessions() as session:
        row = session.scalars(select(Exchange).where(Exchange.idempotency_key == f"member:{m['member_ref']}:crash-{crash}")).one()
        ref, stored_hash = row.exchange_ref, row.tx_hash
    assert row.status == "pending" and stored_hash  # the signed transaction was stored first
    assert db_balance(brand, m["member_ref"])[0] == start - 400  # the debit is committed
    minted_before_restart = len(alliance.points.issued_logs(bytes.fromhex(ref), from_block=alliance.manifest.deployed_block))
    assert minted_before_restart == (0 if crash == "before_broadcast" else 1)

    brand = _restart(state)
    with brand.client:  # the lifespan runs the outbox recovery
        assert brand.client.get(f"/v1/me/exchanges/{ref}", headers=m["auth"]).json()["status"] == "confirmed"
        # The client retries its request: the same exchange comes back, nothing new happens.
        again = exchange(brand, m, 40, f"crash-{crash}")
        assert again.status_code == 200 and again.json()["replayed"] and again.json()["exchange_ref"] == ref
        issued = alliance.points.issued_logs(bytes.fromhex(ref), from_block=alliance.manifest.deployed_block)
        assert len(issued) == 1 and issued[0]["amount"] == 40 and issued[0]["to"] == m["wallet"].address
        assert alliance.points.balance_of(m["wallet"].address) == 40
        assert alliance.points.total_supply() == supply + 40
        bal = balance(brand, m)
        assert (bal["points"], bal["alliance_points"]) == (start - 400, 40)
        assert db_balance(brand, m["member_ref"]) == (start - 400,) * 3
        report = reconciliation(brand)
        assert report["ok"] and report["chain"]["pending"]["exchanges"] == 0, report


@pytest.mark.parametrize("crash", ["before_broadcast", "after_broadcast"])
def test_redemption_survives_a_crash(env, crash):
    world, state, clock = env
    alliance = world.alliance
    brand = state["brand"]
    m = _member(world, brand, state, clock)
    assert exchange(brand, m, 25, "fund").status_code == 201
    start = db_balance(brand, m["member_ref"])[0]
    auth = authorise(alliance, m["wallet"], brand, 10, world.chain.timestamp() + 3600)

    _arm(brand, crash)
    r = _crashing_client(brand).post("/v1/me/redemptions", json=auth, headers=m["auth"])
    assert r.status_code >= 500 or r.json()["status"] == "pending", r.text
    with brand.gw.sessions() as session:
        row = session.scalars(select(Redemption).where(Redemption.owner == m["wallet"].address)).one()
        assert row.status == "pending" and row.tx_hash
        ref = row.redemption_ref
    assert db_balance(brand, m["member_ref"])[0] == start  # credited only once the chain has burned
    assert alliance.points.balance_of(m["wallet"].address) == (25 if crash == "before_broadcast" else 15)

    brand = _restart(state)
    with brand.client:
        replay = brand.client.post("/v1/me/redemptions", json=auth, headers=m["auth"])
        assert replay.status_code == 200 and replay.json()["replayed"] and replay.json()["status"] == "confirmed"
        assert replay.json()["redemption_ref"] == ref
        assert alliance.points.balance_of(m["wallet"].address) == 15
        assert alliance.points.is_nonce_used(m["wallet"].address, brand.gw.brand_address, auth["nonce"])
        assert db_balance(brand, m["member_ref"]) == (start + 100,) * 3
        with brand.gw.sessions() as session:
            credits = session.scalars(select(LedgerTxn).where(LedgerTxn.kind == "alliance_redeem", LedgerTxn.ref == ref)).all()
        assert len(credits) == 1
        report = reconciliation(brand)
        assert report["ok"] and report["chain"]["pending"]["redemptions"] == 0, report


@pytest.mark.parametrize("crash", ["before_broadcast", "after_broadcast"])
def test_a_batch_survives_a_crash(env, crash):
    """Two batches (a mintBatch of two exchanges, a redeemBatch of two redemptions) stored, then the
    process dies before the first broadcast, or between the two: after the restart every row is
    confirmed once, each mint and burn happened once, each credit was booked once."""
    world, state, clock = env
    alliance = world.alliance
    brand = state["brand"]
    ms = [_member(world, brand, state, clock) for _ in range(4)]
    for i, m in enumerate(ms[:2]):
        assert exchange(brand, m, 25, f"fund-batch-{crash}-{i}").status_code == 201
    starts = [db_balance(brand, m["member_ref"])[0] for m in ms]
    deadline = world.chain.timestamp() + 3600
    xrefs = [queue_exchange(brand, m, 30, f"batch-{crash}-{i}") for i, m in enumerate(ms[2:])]
    auths = [authorise(alliance, m["wallet"], brand, 10, deadline) for m in ms[:2]]
    rrefs = [queue_redemption(brand, m, auth) for m, auth in zip(ms[:2], auths)]

    _arm(brand, crash)
    with pytest.raises(Crash) if crash == "before_broadcast" else nullcontext():
        assert chain_ops.retry_pending(brand.gw) == {"pending": 4}  # (after_broadcast: the crash is a send failure)
    exchanges, redemptions = chain_rows(brand, Exchange, xrefs), chain_rows(brand, Redemption, rrefs)
    assert {r.status for r in exchanges + redemptions} == {"pending"}
    assert len({r.tx_hash for r in exchanges}) == 1 and len({r.tx_hash for r in redemptions}) == 1  # stored, one per batch
    minted = [len(alliance.points.issued_logs(bytes.fromhex(ref), from_block=alliance.manifest.deployed_block)) for ref in xrefs]
    assert minted == ([0, 0] if crash == "before_broadcast" else [1, 1])  # the mints went first
    assert [alliance.points.balance_of(m["wallet"].address) for m in ms[:2]] == [25, 25]  # no redemption went out

    brand = _restart(state)
    with brand.client:  # the lifespan runs the outbox recovery
        assert {r.status for r in chain_rows(brand, Exchange, xrefs) + chain_rows(brand, Redemption, rrefs)} == {"confirmed"}
    for ref in xrefs:
        assert len(alliance.points.issued_logs(bytes.fromhex(ref), from_block=alliance.manifest.deployed_block)) == 1
    assert [alliance.points.balance_of(m["wallet"].address) for m in ms] == [15, 15, 30, 30]
    assert [db_balance(brand, m["member_ref"]) for m in ms] == \
        [(starts[0] + 100,) * 3, (starts[1] + 100,) * 3, (starts[2] - 300,) * 3, (starts[3] - 300,) * 3]
    with brand.gw.sessions() as session:
        credits = session.scalars(select(LedgerTxn.ref).where(LedgerTxn.kind == "alliance_redeem", LedgerTxn.ref.in_(rrefs))).all()
    assert sorted(credits) == sorted(rrefs)
    report = reconciliation(brand)
    assert report["ok"] and report["chain"]["pending"] == {"exchanges": 0, "redemptions": 0}, report


def test_a_stored_batch_that_reverts_fails_each_row_with_the_reason(env):
    """A batch stored before a crash is refused when it is finally mined (the brand was suspended
    meanwhile): the rows lost nothing on chain, are proven one by one, and each fails with the
    contracts' reason and its points back."""
    world, state, clock = env
    alliance = world.alliance
    brand = state["brand"]
    ms = [_member(world, brand, state, clock) for _ in range(3)]
    starts = [db_balance(brand, m["member_ref"])[0] for m in ms]
    refs = [queue_exchange(brand, m, 20, f"reverting-{i}") for i, m in enumerate(ms)]
    _arm(brand, "before_broadcast")
    with pytest.raises(Crash):
        chain_ops.retry_pending(brand.gw)
    alliance.registry.suspend(world.gov(), brand.gw.brand_address, "test: suspended")
    try:
        brand = _restart(state)
        with brand.client:
            pass
    finally:
        alliance.registry.reinstate(world.gov(), brand.gw.brand_address)
    rows = chain_rows(brand, Exchange, refs)
    assert [r.status for r in rows] == ["failed"] * 3
    assert all("BrandNotActive" in r.failure for r in rows), [r.failure for r in rows]
    assert [db_balance(brand, m["member_ref"]) for m in ms] == [(s,) * 3 for s in starts]
    assert [alliance.points.balance_of(m["wallet"].address) for m in ms] == [0, 0, 0]
    assert reconciliation(brand)["ok"]


def test_refused_exchange_gives_the_same_points_back(env):
    world, state, clock = env
    alliance = world.alliance
    brand = state["brand"]
    m = _member(world, brand, state, clock)
    clock.advance(days=10)
    clock.advance(minutes=1)
    purchase(brand, m["member_ref"], 50_000, "later", clock.now)  # a second lot, expiring later
    lots_before = _lots(brand, m["member_ref"])
    start = db_balance(brand, m["member_ref"])[0]
    alliance.registry.suspend(world.gov(), brand.gw.brand_address, "test: suspended")
    try:
        r = exchange(brand, m, 150, "refused")  # 1,500 points: takes from both lots
        assert r.status_code == 409 and r.json()["code"] == "chain_rejected", r.text
        assert "BrandNotActive" in r.json()["detail"]
    finally:
        alliance.registry.reinstate(world.gov(), brand.gw.brand_address)
    with brand.gw.sessions() as session:
        row = session.scalars(select(Exchange).where(Exchange.idempotency_key == f"member:{m['member_ref']}:refused")).one()
        assert row.status == "failed" and "BrandNotActive" in row.failure
        kinds = [t.kind for t in session.scalars(select(LedgerTxn).where(LedgerTxn.ref == row.exchange_ref).order_by(LedgerTxn.id))]
    assert kinds == ["exchange", "exchange_reversal"]
    assert _lots(brand, m["member_ref"]) == lots_before  # the same lots, the same expiry
    assert db_balance(brand, m["member_ref"]) == (start,) * 3
    assert alliance.points.balance_of(m["wallet"].address) == 0
    # Replaying the refused request answers the same refusal, and never debits twice.
    again = exchange(brand, m, 150, "refused")
    assert again.status_code in (200, 409)
    assert db_balance(brand, m["member_ref"])[0] == start
    # Reinstated: the member can exchange again.
    assert exchange(brand, m, 15, "after").status_code == 201


def test_refused_pending_exchange_after_a_clawback(env):
    """An exchange left pending by a crash, a refund that claws back more than the member still holds
    (a debt), then the chain refuses the exchange: the reversal pays the debt first, and the lots
    still hold exactly max(balance, 0)."""
    world, state, clock = env
    alliance = world.alliance
    brand = state["brand"]
    m = _member(world, brand, state, clock, points_minor=10_000)  # 100 welcome + 200 first order = 300
    clock.advance(minutes=1)
    p = purchase(brand, m["member_ref"], 20_000, "more", clock.now).json()  # +200 = 500
    _arm(brand, "before_broadcast")
    r = _crashing_client(brand).post("/v1/me/exchanges", json={"ap_amount": 50}, headers=m["auth"] | {"Idempotency-Key": "all-in"})
    assert r.status_code >= 500
    assert db_balance(brand, m["member_ref"]) == (0, 0, 0)
    assert refund(brand, p["purchase_ref"], 20_000, "undo").json()["balance"] == -200
    alliance.registry.suspend(world.gov(), brand.gw.brand_address, "test: suspended")
    try:
        brand = _restart(state)
        with brand.client:  # recovery: the stored mint would revert now, so the exchange fails
            pass
    finally:
        alliance.registry.reinstate(world.gov(), brand.gw.brand_address)
    with brand.gw.sessions() as session:
        row = session.scalars(select(Exchange).where(Exchange.idempotency_key == f"member:{m['member_ref']}:all-in")).one()
    assert row.status == "failed"
    assert db_balance(brand, m["member_ref"]) == (300, 300, 300)
    report = reconciliation(brand)
    assert report["ok"], report


# ---------------------------------------------------------------- a reward paid with alliance points


def _define_reward(brand, code: str, **spec) -> None:
    body = {"kind": "good", "name": code, "points_price": 150, "stock": 1, "available_from": brand.gw.now().isoformat()} | spec
    r = brand.client.put(f"/v1/admin/rewards/{code}", json=body, headers=brand.as_("operator"))
    assert r.status_code == 200, r.text


def _order_with_ap(client, m, code: str, auth: dict, key: str):
    return client.post("/v1/me/reward-orders", json={"reward": code, "pay_with_ap": auth}, headers=m["auth"] | {"Idempotency-Key": key})


def _order_row(brand, m, key: str):
    from gateway.models import RewardOrder

    with brand.gw.sessions() as session:
        return session.scalars(select(RewardOrder).where(RewardOrder.idempotency_key == f"member:{m['member_ref']}:{key}")).one()


def _stock(brand, code: str) -> int | None:
    from gateway.models import Reward

    with brand.gw.sessions() as session:
        return session.scalar(select(Reward.stock).where(Reward.code == code))


def _reward_debits(brand, order_ref: str) -> int:
    with brand.gw.sessions() as session:
        return len(session.scalars(select(LedgerTxn).where(LedgerTxn.kind == "reward", LedgerTxn.ref == order_ref)).all())


@pytest.mark.parametrize("crash", ["before_broadcast", "after_broadcast"])
def test_a_reward_paid_with_ap_survives_a_crash(env, crash):
    """The order waits for the chain holding its item; the crash leaves nothing granted and the points
    untouched; the restart's outbox finishes the redemption and grants the reward in that same step,
    once; a retry answers the order as it now is."""
    world, state, clock = env
    alliance = world.alliance
    brand = state["brand"]
    m = _member(world, brand, state, clock)
    assert exchange(brand, m, 25, "fund-reward").status_code == 201
    code = f"mug-{crash.replace('_', '-')}"
    _define_reward(brand, code)  # 150 points = 15 AP at this brand's rate
    start = db_balance(brand, m["member_ref"])[0]
    auth = authorise(alliance, m["wallet"], brand, 20, world.chain.timestamp() + 3600)

    _arm(brand, crash)
    r = _order_with_ap(_crashing_client(brand), m, code, auth, f"ap-{crash}")
    assert r.status_code >= 500 or r.json()["status"] == "awaiting_payment", r.text
    row = _order_row(brand, m, f"ap-{crash}")
    assert row.status == "awaiting_payment" and row.debit_txn_id is None
    assert _stock(brand, code) == 0  # held for this order
    assert db_balance(brand, m["member_ref"])[0] == start and _reward_debits(brand, row.order_ref) == 0
    assert alliance.points.balance_of(m["wallet"].address) == (25 if crash == "before_broadcast" else 5)

    brand = _restart(state)
    with brand.client:
        again = _order_with_ap(brand.client, m, code, auth, f"ap-{crash}")
        assert again.status_code == 200 and again.json()["replayed"], again.text
        out = again.json()
        assert out["order_ref"] == row.order_ref and out["status"] == "ordered"
        assert out["paid_with_ap"]["status"] == "confirmed" and out["paid_with_ap"]["reward_points"] == 200
        assert out["balance"] == start + 200 - 150  # 20 AP credited at 10, 150 of them spent on the mug
        assert alliance.points.balance_of(m["wallet"].address) == 5
        assert _reward_debits(brand, row.order_ref) == 1 and _stock(brand, code) == 0
        assert db_balance(brand, m["member_ref"]) == (start + 50,) * 3
        assert reconciliation(brand)["ok"]


def test_a_reward_paid_with_ap_the_chain_refuses_grants_nothing(env):
    world, state, clock = env
    alliance = world.alliance
    brand = state["brand"]
    m = _member(world, brand, state, clock)
    assert exchange(brand, m, 30, "fund-refused").status_code == 201
    _define_reward(brand, "lamp", kind="coupon", coupon_value_minor=500, stock=1)
    start = db_balance(brand, m["member_ref"])[0]
    auth = authorise(alliance, m["wallet"], brand, 15, world.chain.timestamp() + 3600)
    alliance.registry.suspend(world.gov(), brand.gw.brand_address, "test: suspended")
    try:
        r = _order_with_ap(brand.client, m, "lamp", auth, "refused")
        assert r.status_code == 409 and r.json()["code"] == "chain_rejected" and "BrandNotActive" in r.json()["detail"], r.text
    finally:
        alliance.registry.reinstate(world.gov(), brand.gw.brand_address)
    row = _order_row(brand, m, "refused")
    assert row.status == "cancelled" and row.debit_txn_id is None
    assert _stock(brand, "lamp") == 1  # back in stock
    assert db_balance(brand, m["member_ref"]) == (start,) * 3 and alliance.points.balance_of(m["wallet"].address) == 30
    listed = brand.client.get("/v1/me/reward-orders", headers=m["auth"]).json()
    assert [(o["status"], o["coupon"]) for o in listed if o["order_ref"] == row.order_ref] == [("cancelled", None)]
    # The same authorisation (its nonce unused on chain) pays a new order once the brand is back.
    ok = _order_with_ap(brand.client, m, "lamp", auth, "after")
    assert ok.status_code == 201 and ok.json()["status"] == "issued" and ok.json()["coupon"]["code"], ok.text
    assert ok.json()["balance"] == start and alliance.points.balance_of(m["wallet"].address) == 15  # 150 credited, 150 spent
    assert reconciliation(brand)["ok"]


def test_a_reward_paid_with_ap_refuses_bad_payments_before_the_chain(env):
    world, state, clock = env
    alliance = world.alliance
    brand = state["brand"]
    m = _member(world, brand, state, clock)
    assert exchange(brand, m, 40, "fund-bad").status_code == 201
    _define_reward(brand, "kettle", stock=5)
    deadline = world.chain.timestamp() + 3600
    start = db_balance(brand, m["member_ref"])[0]
    # Too few AP for the price: a reason, nothing held.
    short = _order_with_ap(brand.client, m, "kettle", authorise(alliance, m["wallet"], brand, 14, deadline), "short")
    assert short.status_code == 400 and "15 AP" in short.json()["detail"], short.text
    # Signed by a wallet this member has not linked here.
    other = new_wallet()
    stranger = _order_with_ap(brand.client, m, "kettle", authorise(alliance, other, brand, 20, deadline), "stranger")
    assert stranger.status_code in (400, 403), stranger.text
    # An authorisation already presented as a plain redemption cannot pay for an order too.
    used = authorise(alliance, m["wallet"], brand, 15, deadline)
    assert brand.client.post("/v1/me/redemptions", json=used, headers=m["auth"]).status_code == 201
    twice = _order_with_ap(brand.client, m, "kettle", used, "twice")
    assert twice.status_code == 409, twice.text
    assert _stock(brand, "kettle") == 5
    assert db_balance(brand, m["member_ref"])[0] == start + 150  # only the plain redemption
    assert alliance.points.balance_of(m["wallet"].address) == 25
    # An order awaiting its payment is not the operator's to move.
    from gateway.models import RewardOrder

    with brand.gw.sessions() as session:
        assert session.scalars(select(RewardOrder).where(RewardOrder.status == "awaiting_payment")).first() is None
    assert reconciliation(brand)["ok"]
