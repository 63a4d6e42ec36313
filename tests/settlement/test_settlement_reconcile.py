"""Reconciliation finds every injected discrepancy (missing, duplicated, altered, extra) and nothing
else (against a store on SQLite and on PostgreSQL); and a gateway's real database reconciles clean, and
stops doing so when a row is altered."""

from __future__ import annotations

import secrets
import sqlite3

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contracts.chain import connect
from settlement.indexer import Indexer
from settlement.reconcile import Entry, GatewayDatabase, ListLedger, reconcile, redemption_key
from settlement.simulate import SimAlliance
from settlement.store import Store

from stores import STORE_BACKENDS, store_url


@pytest.fixture(scope="module", params=STORE_BACKENDS)
def chain_world(request, anvil_url, tmp_path_factory):
    """Two brands; the true ledgers are what the simulation did, recorded independently of the indexer.
    The chain events are indexed into a store on each backend in turn."""
    chain = connect(anvil_url)
    sim = SimAlliance.deploy(chain, 2, members=6)
    ledgers = {b.address: [] for b in sim.brands}
    for k, b in enumerate(sim.brands):
        grants = [(m.address, 5 + i + k, secrets.token_bytes(32)) for i, m in enumerate(sim.members)]
        sim.mint_batch(b, grants)
        ledgers[b.address] += [Entry("exchange", ref.hex(), amount, to) for to, amount, ref in grants]
    sim.flush()
    for i, m in enumerate(sim.members):
        b = sim.brands[i % 2]
        r = sim.redeem(m, b, 2 + i)
        ledgers[b.address].append(Entry("redemption", redemption_key(r.owner, r.nonce), r.amount, r.owner))
    sim.flush()
    store = Store(store_url(request, request.param, tmp_path_factory.mktemp("recon")))
    Indexer(sim.alliance, store).run()
    yield sim, store, ledgers
    store.dispose()


def test_true_ledgers_reconcile_clean(chain_world):
    sim, store, ledgers = chain_world
    result = reconcile(store, [ListLedger(b, entries) for b, entries in ledgers.items()])
    assert result.ok and result.to_dict()["issues"] == 0
    assert sum(b.counts["ledger_done"] for b in result.brands) == 18  # 2 x 6 mints + 6 redemptions


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_every_injected_discrepancy_and_nothing_else(chain_world, data):
    sim, store, ledgers = chain_world
    brand = data.draw(st.sampled_from(sorted(ledgers)))
    entries = list(ledgers[brand])
    order = data.draw(st.permutations(range(len(entries))))
    n_drop, n_dup, n_alter = (data.draw(st.integers(0, 3)) for _ in range(3))
    n_extra = data.draw(st.integers(0, 2))
    drop, dup, alter = order[:n_drop], order[n_drop:n_drop + n_dup], order[n_drop + n_dup:n_drop + n_dup + n_alter]
    expected = set()
    ledger = []
    for i, e in enumerate(entries):
        if i in drop:
            expected.add(("missing_in_ledger", e.key))
            continue
        if i in alter:
            if data.draw(st.booleans()):
                e = Entry(e.kind, e.key, e.amount + data.draw(st.integers(1, 1000)), e.account)
            else:
                e = Entry(e.kind, e.key, e.amount, sim.members[0].address if e.account != sim.members[0].address else sim.members[1].address)
            expected.add(("different", e.key))
        ledger.append(e)
        if i in dup:
            ledger.append(e)
            expected.add(("duplicate_in_ledger", e.key))
    for _ in range(n_extra):
        fake = Entry("exchange", secrets.token_bytes(32).hex(), 7, sim.members[2].address)
        ledger.append(fake)
        expected.add(("missing_on_chain", fake.key))
    result = reconcile(store, [ListLedger(brand, ledger)])
    found = {(i["kind"], i["key"]) for i in result.brands[0].issues}
    assert found == expected
    assert result.ok == (not expected)


def test_gateway_database_reconciles_clean_then_finds_an_altered_row(gateway_world, tmp_path):
    w = gateway_world
    Indexer(w.local.alliance, w.store).run()
    ledgers = [GatewayDatabase(b.gateway.settings.database_url, b.address, bid) for bid, b in w.brands.items()]
    clean = reconcile(w.store, ledgers)
    assert clean.ok, clean.to_dict()
    assert sum(b.counts["exchanges"] for b in clean.brands) == 4 and sum(b.counts["redemptions"] for b in clean.brands) == 4
    path = w.db_path("grocery")
    live, backup = sqlite3.connect(path), sqlite3.connect(":memory:")
    live.backup(backup)
    try:
        ref = live.execute("SELECT exchange_ref FROM exchanges ORDER BY id LIMIT 1").fetchone()[0]
        live.execute("UPDATE exchanges SET ap_amount = ap_amount + 1 WHERE exchange_ref = ?", (ref,))
        live.commit()
        result = reconcile(w.store, ledgers)
        grocery = next(b for b in result.brands if b.name == "grocery")
        assert [(i["kind"], i["key"]) for i in grocery.issues] == [("different", ref)]
    finally:
        backup.backup(live)
        live.close()
    assert reconcile(w.store, ledgers).ok
