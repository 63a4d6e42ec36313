"""The brand's one chain sender (gateway/services/outbox.py): what is pending goes out in one
transaction per batch, a row the contracts refuse fails alone with their reason while its batch goes
through, concurrent requests share transactions, and one process at a time sends (the lease)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import pytest
from harness import (
    Clock,
    authorise,
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
    start_world_brand,
)
from sqlalchemy import select, update

from gateway.db import transaction
from gateway.models import ChainTx, Exchange, LedgerTxn, Redemption, SenderLease
from gateway.runtime import build_gateway
from gateway.services import alliance as chain_ops
from gateway.services.outbox import NotLeader

RATE = 10


@pytest.fixture(scope="module")
def env(request, module_backend, tmp_path_factory):
    workdir = tmp_path_factory.mktemp(f"sender-{module_backend}")
    world = new_world(workdir)
    clock = Clock()
    brand = start_world_brand(world, "sender", RATE, make_database_url(request, module_backend, workdir, "sender"), clock=clock)
    yield world, brand, clock, {"n": 0}
    brand.close()


def _member(brand, clock, state) -> dict:
    state["n"] += 1
    m = enrol(brand, f"+86136{state['n']:08d}")
    consent(brand, m, "alliance_exchange")
    m["wallet"] = new_wallet()
    link_wallet(brand, m, m["wallet"])
    clock.advance(minutes=1)
    assert purchase(brand, m["member_ref"], 100_000, f"seed-{m['member_ref']}", clock.now).status_code == 201
    return m


def test_pending_exchanges_and_redemptions_go_out_in_one_transaction_each(env):
    world, brand, clock, state = env
    points = world.alliance.points
    ms = [_member(brand, clock, state) for _ in range(5)]
    starts = [db_balance(brand, m["member_ref"])[0] for m in ms]

    refs = [queue_exchange(brand, m, 20, f"batch-{i}") for i, m in enumerate(ms)]
    assert chain_ops.retry_pending(brand.gw) == {"confirmed": 5}
    rows = chain_rows(brand, Exchange, refs)
    assert {r.status for r in rows} == {"confirmed"} and len({r.tx_hash for r in rows}) == 1  # one mintBatch
    assert [points.balance_of(m["wallet"].address) for m in ms] == [20] * 5

    # Four good authorisations and one for more AP than the wallet holds: the batch redeems the four
    # and skips the fifth with RedemptionRejected, which fails that row alone.
    deadline = world.chain.timestamp() + 3600
    auths = [authorise(world.alliance, m["wallet"], brand, 5, deadline) for m in ms[:4]]
    auths.append(authorise(world.alliance, ms[4]["wallet"], brand, 500, deadline))
    refs = [queue_redemption(brand, m, auth) for m, auth in zip(ms, auths)]
    assert chain_ops.retry_pending(brand.gw) == {"confirmed": 4, "failed": 1}
    rows = chain_rows(brand, Redemption, refs)
    assert len({r.tx_hash for r in rows}) == 1  # the refused one rode in the same transaction
    assert [r.status for r in rows] == ["confirmed"] * 4 + ["failed"]
    assert rows[4].failure == "InsufficientPoints"
    assert not points.is_nonce_used(ms[4]["wallet"].address, brand.gw.brand_address, auths[4]["nonce"])
    assert [points.balance_of(m["wallet"].address) for m in ms] == [15] * 4 + [20]
    assert [db_balance(brand, m["member_ref"]) for m in ms] == \
        [(s - 200 + 50,) * 3 for s in starts[:4]] + [(starts[4] - 200,) * 3]
    with brand.gw.sessions() as session:
        credits = session.scalars(select(LedgerTxn.ref).where(LedgerTxn.kind == "alliance_redeem", LedgerTxn.ref.in_(refs))).all()
    assert sorted(credits) == sorted(refs[:4])  # each credited once, the refused one never
    # The refused authorisation is not used on chain: the member may present it again.
    assert reconciliation(brand)["ok"]


def test_a_row_the_contracts_refuse_is_split_out_of_its_batch(env):
    """Batches are halved until the refused row stands alone: it fails with the contracts' reason
    and gives its points back; every other row of the batch is minted once."""
    world, brand, clock, state = env
    ms = [_member(brand, clock, state) for _ in range(6)]
    starts = [db_balance(brand, m["member_ref"])[0] for m in ms]
    refs = [queue_exchange(brand, m, 10, f"split-{i}") for i, m in enumerate(ms)]
    with transaction(brand.gw.sessions) as session:  # a row the contract cannot mint exactly
        session.execute(update(Exchange).where(Exchange.exchange_ref == refs[3]).values(brand_points=101))
    assert chain_ops.retry_pending(brand.gw) == {"confirmed": 5, "failed": 1}
    rows = chain_rows(brand, Exchange, refs)
    assert rows[3].status == "failed" and rows[3].failure.startswith("InexactExchange")
    assert all(r.status == "confirmed" for i, r in enumerate(rows) if i != 3)
    assert 2 <= len({r.tx_hash for i, r in enumerate(rows) if i != 3}) <= 3
    points = world.alliance.points
    assert [points.balance_of(m["wallet"].address) for m in ms] == [10, 10, 10, 0, 10, 10]
    assert db_balance(brand, ms[3]["member_ref"]) == (starts[3],) * 3
    for ref in refs:
        assert len(points.issued_logs(bytes.fromhex(ref), from_block=world.alliance.manifest.deployed_block)) == (ref != refs[3])


def test_concurrent_requests_share_transactions(env):
    world, brand, clock, state = env
    ms = [_member(brand, clock, state) for _ in range(12)]
    for i, m in enumerate(ms):
        assert exchange(brand, m, 10, f"fund-{i}").status_code == 201
    deadline = world.chain.timestamp() + 3600
    auths = [authorise(world.alliance, m["wallet"], brand, 4, deadline) for m in ms]

    def redeem(i: int):
        return brand.client.post("/v1/me/redemptions", json=auths[i], headers=ms[i]["auth"])

    with ThreadPoolExecutor(len(ms)) as pool:
        answers = list(pool.map(redeem, range(len(ms))))
    assert [r.status_code for r in answers] == [201] * len(ms), [r.text for r in answers]
    assert {r.json()["status"] for r in answers} == {"confirmed"}
    hashes = {r.json()["tx_hash"] for r in answers}
    assert len(hashes) < len(ms)  # requests that arrived while a transaction was out went in the next
    with brand.gw.sessions() as session:
        assert session.scalar(select(ChainTx.nonce).where(ChainTx.hash.in_(hashes)).limit(1)) is not None
    assert [world.alliance.points.balance_of(m["wallet"].address) for m in ms] == [6] * len(ms)


def test_one_process_sends_at_a_time(env):
    """Two processes of one gateway (two gateways on one database and one key): while one holds the
    lease the other does not sign; once the holder stops renewing, the other takes over and sends."""
    world, brand, clock, state = env
    other = build_gateway(brand.gw.settings, chain=world.alliance.chain)
    other.clock = brand.gw.clock
    try:
        m = _member(brand, clock, state)
        ref = queue_exchange(brand, m, 10, "lease")
        with chain_ops.sender(brand.gw).exclusive():
            with pytest.raises(NotLeader):
                chain_ops.sender(other).round()
            assert chain_ops.retry_pending(other) == {}
            assert chain_rows(brand, Exchange, [ref])[0].tx_hash is None  # nothing signed by the other
        # Given back at the end of the holder's work: the other takes it at once.
        assert chain_ops.retry_pending(other) == {"confirmed": 1}
        # A holder that dies keeps the lease until it expires; then the other sends.
        ref = queue_exchange(brand, m, 10, "lease-2")
        with chain_ops.sender(brand.gw).exclusive():
            pass
        chain_ops.sender(brand.gw)._take_lease()  # held again, and never renewed nor released: it died
        assert chain_ops.retry_pending(other) == {}
        with transaction(brand.gw.sessions) as session:
            session.execute(update(SenderLease).values(expires_at=brand.gw.now().replace(year=2000)))
        assert chain_ops.retry_pending(other) == {"confirmed": 1}
        with brand.gw.sessions() as session:
            assert session.get(SenderLease, 1).holder == chain_ops.sender(other).holder
    finally:
        other.engine.dispose()
        chain_ops.sender(brand.gw)._leased_until = datetime.min.replace(tzinfo=UTC)  # it knows it lost the lease


def test_a_dedicated_sender_sends_for_the_workers(env):
    """`alliance gateway sender` (Sender.run) sends what the workers store, also rows no request
    waits for, and requests made meanwhile get their answers; stopped, it leaves the lease free."""
    import threading
    import time

    world, brand, clock, state = env
    dedicated = build_gateway(brand.gw.settings, chain=world.alliance.chain)
    dedicated.clock = brand.gw.clock
    stop = threading.Event()
    runner = threading.Thread(target=chain_ops.sender(dedicated).run, args=(stop,))
    try:
        ms = [_member(brand, clock, state) for _ in range(6)]
        ref = queue_exchange(brand, ms[0], 5, "nobody-waits")  # stored; no request waits, no worker sends it
        runner.start()
        for _ in range(200):
            if chain_rows(brand, Exchange, [ref])[0].status != "pending":
                break
            time.sleep(0.05)
        assert chain_rows(brand, Exchange, [ref])[0].status == "confirmed"  # the dedicated sender sent it
        with ThreadPoolExecutor(len(ms)) as pool:
            answers = list(pool.map(lambda i: exchange(brand, ms[i], 5, f"dedicated-{i}"), range(len(ms))))
        assert [r.status_code for r in answers] == [201] * len(ms), [r.text for r in answers]
        assert {r.json()["status"] for r in answers} == {"confirmed"}
        assert [world.alliance.points.balance_of(m["wallet"].address) for m in ms] == [10] + [5] * (len(ms) - 1)
    finally:
        stop.set()
        runner.join(10)
        dedicated.engine.dispose()
        chain_ops.sender(brand.gw)._leased_until = datetime.min.replace(tzinfo=UTC)
    assert not runner.is_alive()
    # Stopped, it gave the lease back: the worker sends again at once.
    m = _member(brand, clock, state)
    assert exchange(brand, m, 5, "after").json()["status"] == "confirmed"
