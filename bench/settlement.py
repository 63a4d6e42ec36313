"""Settlement service benchmark: prints one JSON object.

On a fresh anvil node: an alliance of 20 brands; about 100,000 events (mintBatch of 100 members per
transaction, and single redemptions) indexed into a fresh SQLite store (``index_100k_s``,
``index_events_per_s``); 50,000 more mints so there are 100,000 exchanges; an epoch of the 20 brands
closed with its proofs before and after (``close_epoch_20_brands_s``: derive from every one of the ~200,000 events,
compare with the contracts, close, index, prove again); 100,000 ledger entries (the brands' exchanges and
redemptions as the simulation recorded them) reconciled against the chain's events
(``reconcile_100k_s``); and the process's peak resident memory.
"""

from __future__ import annotations

import json
import resource
import secrets
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from contracts.chain import Anvil, connect  # noqa: E402
from settlement.epochs import close_epoch  # noqa: E402
from settlement.indexer import Indexer, event_count  # noqa: E402
from settlement.reconcile import Entry, ListLedger, reconcile, redemption_key  # noqa: E402
from settlement.simulate import SimAlliance  # noqa: E402
from settlement.store import Store  # noqa: E402

BRANDS = 20
MEMBERS = 100
BATCHES_FIRST = 495  # 495 x 100 mints = 99,000 events (Issued + Transfer)
REDEMPTIONS = 500  # 1,000 events (Redeemed + Transfer)
BATCHES_MORE = 505  # up to 100,000 exchanges in all


def mint(sim: SimAlliance, ledgers: dict, batches: int, offset: int) -> None:
    for k in range(batches):
        brand = sim.brands[(offset + k) % BRANDS]
        grants = [(m.address, 1 + (k + i) % 7, secrets.token_bytes(32)) for i, m in enumerate(sim.members)]
        sim.mint_batch(brand, grants)
        ledgers[brand.address] += [Entry("exchange", ref.hex(), amount, to) for to, amount, ref in grants]
    sim.flush()


def main() -> None:
    with Anvil() as url, tempfile.TemporaryDirectory() as tmp:
        chain = connect(url)
        sim = SimAlliance.deploy(chain, BRANDS, members=MEMBERS, collateral=10**16, credit_limit=10**11)
        ledgers = {b.address: [] for b in sim.brands}
        mint(sim, ledgers, BATCHES_FIRST, 0)
        for k in range(REDEMPTIONS):
            member, brand = sim.members[k % MEMBERS], sim.brands[(k * 7 + 3) % BRANDS]
            r = sim.redeem(member, brand, 1)
            ledgers[brand.address].append(Entry("redemption", redemption_key(r.owner, r.nonce), 1, r.owner))
        sim.flush()

        store = Store(f"sqlite:///{tmp}/index.sqlite")
        indexer = Indexer(sim.alliance, store)
        run = indexer.run()
        with store.session() as s:
            first_events = event_count(s)

        mint(sim, ledgers, BATCHES_MORE, BATCHES_FIRST)
        indexer.run()  # the close itself then indexes only its own events
        report = close_epoch(sim.alliance, sim.governor, store, force=True, indexer=indexer)
        assert report.closed and report.ok, [c.name for c in report.before + report.after if not c.ok]
        assert len(report.record.brands) == BRANDS

        ledger_list = [ListLedger(b, entries) for b, entries in ledgers.items()]
        entries = sum(len(v) for v in ledgers.values())
        started = time.perf_counter()
        result = reconcile(store, ledger_list)
        reconcile_s = time.perf_counter() - started
        assert result.ok, result.to_dict()["issues"]
        with store.session() as s:
            total_events = event_count(s)

    print(json.dumps({
        "index_events_per_s": round(run.events_per_s, 1),
        "index_100k_s": round(run.seconds * 100_000 / max(run.events, 1), 3),
        "close_epoch_20_brands_s": round(report.seconds, 3),
        "reconcile_100k_s": round(reconcile_s * 100_000 / entries, 3),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "detail": {"indexed_events": first_events, "index_seconds": round(run.seconds, 3), "events_in_store_at_close": total_events,
                   "ledger_entries_reconciled": entries, "reconcile_seconds": round(reconcile_s, 3), "brands": BRANDS,
                   "chain": "anvil", "store": "sqlite"},
    }))


if __name__ == "__main__":
    main()
