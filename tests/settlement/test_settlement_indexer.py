"""The indexer and the epoch derivations against a real node (anvil): for random alliances and random
event sequences, every position derived from the indexed events equals the contracts' own storage,
and indexing is resumable, idempotent and survives a reorganisation.

The tests that exercise the store run on both of its backends (``new_store``: SQLite and PostgreSQL)."""

from __future__ import annotations

import secrets
from concurrent.futures import ThreadPoolExecutor

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from contracts.chain import connect
from settlement.epochs import EpochPolicy, close_epoch, derive, verify_state
from settlement.indexer import Indexer, event_count
from settlement.simulate import SimAlliance
from settlement.store import ChainEvent, IndexerState, Store

pytestmark = pytest.mark.anvil

OPS = st.one_of(
    st.tuples(st.just("mint"), st.integers(0, 3), st.integers(0, 3), st.integers(1, 60)),
    st.tuples(st.just("batch"), st.integers(0, 3), st.integers(0, 3), st.integers(1, 20)),
    st.tuples(st.just("redeem"), st.integers(0, 3), st.integers(0, 3), st.integers(1, 100)),
    st.tuples(st.just("refund"), st.integers(0, 3), st.integers(0, 3), st.integers(1, 100)),
    st.tuples(st.just("transfer"), st.integers(0, 3), st.integers(0, 3), st.integers(1, 100)),
    st.tuples(st.just("deposit"), st.integers(0, 3), st.integers(0, 3), st.integers(1, 10**9)),
    st.tuples(st.just("withdraw"), st.integers(0, 3), st.integers(0, 3), st.integers(1, 10**9)),
    st.tuples(st.just("close"), st.integers(0, 3), st.integers(0, 3), st.integers(0, 0)),
)


def play(sim: SimAlliance, ops) -> None:
    """Apply ops, keeping each valid: amounts are cut to what balances and collateral allow."""
    balances = {m.address: 0 for m in sim.members}
    refundable = []  # redemptions of the open epoch not yet refunded
    for op, i, j, n in ops:
        brand = sim.brands[i % len(sim.brands)]
        member = sim.members[j % len(sim.members)]
        if op == "mint":
            sim.mint(brand, member.address, n)
            balances[member.address] += n
        elif op == "batch":
            sim.mint_batch(brand, [(m.address, n, secrets.token_bytes(32)) for m in sim.members])
            for m in sim.members:
                balances[m.address] += n
        elif op == "redeem" and balances[member.address]:
            amount = max(1, balances[member.address] * n // 100)
            sim.flush()
            refundable.append((brand, sim.redeem(member, brand, amount)))
            balances[member.address] -= amount
        elif op == "refund" and refundable:
            rb, r = refundable.pop()
            amount = max(1, r.amount * n // 100)
            sim.flush()
            sim.refund(rb, r, amount)
            balances[r.owner] += amount
        elif op == "transfer" and balances[member.address]:
            to = sim.members[(j + i + 1) % len(sim.members)]
            amount = max(1, balances[member.address] * n // 100)
            sim.flush()
            sim.transfer(member, to.address, amount)
            balances[member.address] -= amount
            balances[to.address] += amount
        elif op == "deposit":
            sim.deposit(brand, n)
        elif op == "withdraw":
            sim.flush()
            free = sim.alliance.settlement.open_position(brand.address).free_collateral
            if free:
                sim.withdraw(brand, min(n, free))
        elif op == "close":
            sim.close_epoch()
            refundable.clear()
    sim.flush()


def rows(store: Store) -> list[tuple]:
    with store.session() as s:
        return list(s.execute(select(ChainEvent.tx_hash, ChainEvent.log_index, ChainEvent.name, ChainEvent.amount, ChainEvent.args)
                              .order_by(ChainEvent.block_number, ChainEvent.log_index)))


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(n_brands=st.integers(1, 4), ops=st.lists(OPS, min_size=1, max_size=14), split=st.floats(0, 1))
def test_derived_positions_equal_the_contracts(anvil_url, new_store, n_brands, ops, split):
    chain = connect(anvil_url)
    sim = SimAlliance.deploy(chain, n_brands, members=3, fund_members=True, collateral=10**13)
    play(sim, ops)
    store = new_store()
    # Interrupted and resumed: stop part way, then run to the head.
    head = chain.w3.eth.block_number
    stop_at = sim.alliance.manifest.deployed_block + int(split * (head - sim.alliance.manifest.deployed_block))
    Indexer(sim.alliance, store, chunk_blocks=3).run(to_block=stop_at)
    Indexer(sim.alliance, store, chunk_blocks=3).run()
    d = derive(store, sim.alliance.manifest.value_per_point)
    failed = [c for c in d.checks() + verify_state(sim.alliance, d) if not c.ok]
    assert not failed, failed
    # The per-brand cumulative figures equal accountOf, directly.
    for b in sim.brands:
        acc = sim.alliance.settlement.account(b.address)
        assert (acc.issued, acc.redeemed, acc.collateral) == (d.issued.get(b.address, 0), d.redeemed.get(b.address, 0),
                                                              d.collateral.get(b.address, 0))
    assert d.supply == sim.alliance.points.total_supply()
    # The same rows as one uninterrupted run into a fresh store; and a second run adds nothing.
    fresh = new_store()
    Indexer(sim.alliance, fresh).run()
    assert rows(fresh) == rows(store)
    before = rows(store)
    with store.transaction() as s:  # forget the cursor: everything is read again, nothing is doubled
        s.query(IndexerState).delete()
    Indexer(sim.alliance, store).run()
    assert rows(store) == before


def test_close_epoch_proves_positions_before_and_after(anvil_url, new_store):
    chain = connect(anvil_url)
    sim = SimAlliance.deploy(chain, 3, members=4)
    for k, b in enumerate(sim.brands):
        sim.mint_batch(b, [(m.address, 10 + k, secrets.token_bytes(32)) for m in sim.members])
    sim.flush()
    sim.redeem(sim.members[0], sim.brands[2], 7)
    store = new_store()
    not_due = close_epoch(sim.alliance, sim.governor, store, policy=EpochPolicy(max_age_s=10**9, max_volume_ap=10**6))
    assert not not_due.closed and not_due.ok
    report = close_epoch(sim.alliance, sim.governor, store, policy=EpochPolicy(max_age_s=None, max_volume_ap=50))
    assert report.closed and report.ok, [c for c in report.before + report.after if not c.ok]
    assert report.record.brands[sim.brands[2].address].redeemed == 7
    assert report.record.pool == report.record.supply * sim.alliance.manifest.value_per_point
    empty = close_epoch(sim.alliance, sim.governor, store, policy=EpochPolicy(max_age_s=0))
    assert not empty.closed and "nothing to settle" in empty.reason


def test_derivation_detects_a_doctored_store(anvil_url, new_store):
    """The checks can fail: an event altered in the store no longer matches the contract."""
    chain = connect(anvil_url)
    sim = SimAlliance.deploy(chain, 2, members=2)
    sim.mint_batch(sim.brands[0], [(m.address, 9, secrets.token_bytes(32)) for m in sim.members])
    sim.close_epoch()
    store = new_store()
    Indexer(sim.alliance, store).run()
    with store.transaction() as s:
        s.execute(ChainEvent.__table__.update().where(ChainEvent.name == "Issued").values(amount=ChainEvent.amount + 1))
    d = derive(store, sim.alliance.manifest.value_per_point)
    failed = {c.name for c in d.checks() + verify_state(sim.alliance, d) if not c.ok}
    assert any("settled as derived" in n for n in failed) and any("accountOf" in n for n in failed)


def test_indexer_rewinds_after_a_reorg(anvil_url, new_store):
    chain = connect(anvil_url)
    sim = SimAlliance.deploy(chain, 1, members=2)
    sim.mint(sim.brands[0], sim.members[0].address, 5)
    sim.flush()
    store = new_store()
    indexer = Indexer(sim.alliance, store)
    indexer.run()
    snap = chain.snapshot()
    sim.mint(sim.brands[0], sim.members[0].address, 11)
    sim.flush()
    indexer.run()
    chain.revert(snap)
    sim.brands[0].sender._nonce = None
    sim.mint(sim.brands[0], sim.members[1].address, 3)
    chain.w3.provider.make_request("evm_mine", [])
    sim.flush()
    run = indexer.run()
    assert run.rewound_to is not None
    d = derive(store, sim.alliance.manifest.value_per_point)
    assert not [c for c in verify_state(sim.alliance, d) if not c.ok]
    assert d.issued[sim.brands[0].address] == 8


def test_two_indexers_share_one_cursor(anvil_url, new_store):
    """Two indexers on one store (two `settle index` runs, or one beside `follow`): starting together
    on an empty store neither fails creating the cursor, and a range that finishes late never moves
    the cursor back."""
    chain = connect(anvil_url)
    sim = SimAlliance.deploy(chain, 2, members=2)
    for k in range(6):
        sim.mint(sim.brands[k % 2], sim.members[k % 2].address, k + 1)
        sim.flush()
    store = new_store()
    indexers = [Indexer(sim.alliance, store, chunk_blocks=1) for _ in range(2)]
    with ThreadPoolExecutor(2) as pool:
        runs = list(pool.map(lambda indexer: indexer.run(), indexers))
    head = runs[0].to_block
    assert indexers[0].last_block() == head
    fresh = new_store()
    Indexer(sim.alliance, fresh).run()
    assert rows(store) == rows(fresh)

    indexers[1]._store([], head - 3)  # a slow indexer's old range, committed after the other's
    assert indexers[0].last_block() == head
    with store.session() as session:
        assert session.get(IndexerState, indexers[0].key).last_hash == chain.w3.eth.get_block(head)["hash"].to_0x_hex()


def test_indexing_rate_on_anvil(anvil_url, tmp_path):
    """10,000 events: the indexer keeps well above the 2,000 events/s target."""
    chain = connect(anvil_url)
    sim = SimAlliance.deploy(chain, 2, members=100)
    for k in range(50):
        sim.mint_batch(sim.brands[k % 2], [(m.address, 1, secrets.token_bytes(32)) for m in sim.members])
    sim.flush()
    store = Store(f"sqlite:///{tmp_path / 's.sqlite'}")
    run = Indexer(sim.alliance, store).run()
    with store.session() as s:
        assert event_count(s) == run.events >= 10_000
    assert run.events_per_s >= 2_000, run.to_dict()


def test_embedded_chain_close(tmp_path):
    chain = connect("embedded")
    sim = SimAlliance.deploy(chain, 2, members=2)
    sim.mint_batch(sim.brands[0], [(m.address, 4, secrets.token_bytes(32)) for m in sim.members])
    sim.redeem(sim.members[1], sim.brands[1], 3)
    store = Store(f"sqlite:///{tmp_path / 's.sqlite'}")
    report = close_epoch(sim.alliance, sim.governor, store, force=True)
    assert report.closed and report.ok
    with store.session() as s:
        assert s.scalar(select(func.count()).where(ChainEvent.name == "BrandSettled")) == 2


def test_a_rotated_brand_is_derived_as_one_brand(tmp_path):
    """Governance moves a brand to a new account mid-epoch: its deposits, mints and redemptions under
    both accounts derive as one brand, equal to the contract's record, before and after the close."""
    from contracts.client import Alliance
    from contracts.chain import Transactor
    from settlement.simulate import FUND, Sender, SimBrand

    chain = connect("embedded")
    sim = SimAlliance.deploy(chain, 2, members=2)
    old = sim.brands[0]
    sim.mint(old, sim.members[0].address, 30)
    sim.deposit(old, 7)
    new_account = chain.new_account(FUND)
    alliance: Alliance = sim.alliance
    alliance.registry.rotate(Transactor(chain, sim.governor), old.address, new_account.address)
    new = SimBrand(old.name, new_account, Sender(chain, new_account), old.rate)
    sim.brands[0] = new
    sim.mint(new, sim.members[1].address, 12)
    sim.redeem(sim.members[0], new, 5)
    sim.withdraw(new, 3)
    store = Store(f"sqlite:///{tmp_path / 's.sqlite'}")
    report = close_epoch(sim.alliance, sim.governor, store, force=True)
    assert report.closed and report.ok, [c.to_dict() for c in report.before + report.after if not c.ok]
    settled = report.record.brands[old.address]
    assert (settled.issued, settled.redeemed) == (42, 5)
    assert settled.reported["issued"] == 42  # the contract reported it under the new account


def test_close_waits_for_the_contracts_minimum_epoch_length(tmp_path):
    """A close the contract would refuse (EpochTooShort) is not sent, even forced: the report says why."""
    chain = connect("embedded")
    sim = SimAlliance.deploy(chain, 1, members=1, epoch_lengths=(3600, 86_400))
    sim.mint(sim.brands[0], sim.members[0].address, 5)
    store = Store(f"sqlite:///{tmp_path / 's.sqlite'}")
    early = close_epoch(sim.alliance, sim.governor, store, force=True)
    assert not early.closed and early.ok and "before 3600 s" in early.reason
    chain.advance_time(3600)
    assert close_epoch(sim.alliance, sim.governor, store, force=True).closed
