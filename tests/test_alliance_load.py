"""Load and faults through the multi-process alliance (`alliance up`; the grocery on SQLite and the
cafe on PostgreSQL, each with two uvicorn workers and its dedicated chain sender): 1,000 members, 20,000 purchases,
2,000 exchanges and 1,000 cross-brand redemptions, while a gateway is killed with kill -9, the chain
node is stopped for a while, and the whole alliance goes `down` and `up` in the middle of the work.
Clients retry as the partner guide says (transport errors and 5xx, with the same idempotency key or
signature). Afterwards every ledger reconciles with the chain and nothing is lost or doubled."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from eth_account import Account

from integrator import retrying, settled

from contracts.chain import connect, free_port
from contracts.client import Alliance
from contracts.manifest import Manifest
from gateway.member import MemberClient, SignedNonces
from scripts.up import AllianceSpec, down, read_state, up

pytestmark = [pytest.mark.anvil, pytest.mark.postgres, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
MEMBERS, PURCHASES, TRADERS, EXCHANGES_EACH, REDEMPTIONS_EACH = 1_000, 20_000, 200, 10, 5
MANY = '{"burst": 100000, "period_s": 60}'
SETTINGS = {"PURCHASES_PER_MEMBER_PER_MINUTE": "1000000", "THROTTLES__ENROL_PER_ADDRESS": MANY, "THROTTLES__CODE_PER_ADDRESS": MANY,
            "THROTTLES__LOGIN_PER_ADDRESS": MANY, "OUTBOX_INTERVAL_S": "1"}
def test_load_and_faults_lose_and_double_nothing(tmp_path, postgres_url):
    # As deployed: two workers per gateway (the grocery on SQLite, the cafe, where every redemption goes, on
    # PostgreSQL) and the brand's dedicated chain sender for both.
    production = {"grocery": {"workers": 2}, "cafe": {"database_url": postgres_url, "workers": 2}}
    spec = AllianceSpec.model_validate({"workdir": str(tmp_path / "alliance"), "chain": {"port": free_port()}, "federation": {"enabled": False}, "brands": [
        {"id": b, "name": b.title(), "rate": r, "port": free_port(), "credit_limit": 10**9, "collateral": 10**15, "settings": SETTINGS}
        | production.get(b, {}) for b, r in (("grocery", 10), ("airline", 20), ("cafe", 50))]})
    state = up(spec)
    try:
        urls = {b: s["url"] for b, s in state["brands"].items()}
        keys = {b: json.loads(Path(s["keys"]).read_text()) for b, s in state["brands"].items()}
        pos = {b: {"Authorization": f"Bearer {k['pos']}"} for b, k in keys.items()}
        brands = list(urls)

        # 1,000 members across the brands, enrolled by tills.
        def enrol(i: int) -> tuple[str, str]:
            b = brands[i % 3]
            r = retrying("POST", urls[b] + "/v1/members", headers=pos[b], json={"identifiers": {"email": f"m{i}@load.example"}, "name": f"M {i}"})
            assert r.status_code == 201, r.text
            return b, r.json()["member_ref"]

        with ThreadPoolExecutor(8) as pool:
            enrolled = list(pool.map(enrol, range(MEMBERS)))
        refs = {b: [ref for brand, ref in enrolled if brand == b] for b in brands}

        # The traders: accounts at the grocery (where they exchange) and the cafe (where they redeem).
        def trader(i: int):
            wallet, clients = Account.create(), {}
            for b in ("grocery", "cafe"):
                client = MemberClient(httpx.Client(base_url=urls[b], timeout=60))
                r = retrying("POST", urls[b] + "/v1/members", headers=pos[b],
                            json={"identifiers": {"email": f"t{i}@load.example"}, "name": f"T {i}", "passphrase": "load passphrase"})
                assert r.status_code == 201, r.text
                client.login("email", f"t{i}@load.example", "load passphrase")
                client.consent("alliance_exchange")
                client.link_wallet(wallet)
                clients[b] = client
            return wallet, clients

        with ThreadPoolExecutor(8) as pool:
            traders = list(pool.map(trader, range(TRADERS)))

        # 20,000 purchases, as tills' backlogs (batches) and single purchases, the chain stopped meanwhile.
        rng, when = random.Random(3), datetime.now(UTC).isoformat()
        by_brand = {b: [] for b in brands}
        for n in range(PURCHASES - TRADERS):
            b = brands[n % 3]
            by_brand[b].append({"member_ref": rng.choice(refs[b]), "amount_minor": rng.randint(1_000, 20_000), "occurred_at": when,
                                "idempotency_key": f"p-{n}"})
        for i, (_, clients) in enumerate(traders):  # the traders earn what they exchange
            by_brand["grocery"].append({"member_ref": clients["grocery"].member_ref, "amount_minor": 100_000, "occurred_at": when,
                                        "idempotency_key": f"trader-{i}"})
        anvil = next(p for p in read_state(spec.workdir)["processes"] if p["name"] == "anvil")
        os.kill(anvil["pid"], signal.SIGSTOP)  # the chain node stops answering
        try:
            for b in brands:
                for start in range(0, len(by_brand[b]), 5_000):
                    r = retrying("POST", urls[b] + "/v1/purchases/batch", headers=pos[b], json={"events": by_brand[b][start:start + 5_000]})
                    assert r.status_code == 200 and r.json()["accepted"] == len(by_brand[b][start:start + 5_000]), r.text
        finally:
            os.kill(anvil["pid"], signal.SIGCONT)
        assert sum(len(v) for v in by_brand.values()) == PURCHASES

        # 2,000 exchanges, the grocery gateway killed with kill -9 in the middle.
        done_exchanges: list[dict] = []
        lock = threading.Lock()

        def exchange(job: tuple[int, int]) -> None:
            i, k = job
            client = traders[i][1]["grocery"]
            r = retrying("POST", urls["grocery"] + "/v1/me/exchanges", json={"ap_amount": 1},
                        headers={"Authorization": f"Bearer {client.token}", "Idempotency-Key": f"x-{i}-{k}"})
            assert r.status_code in (200, 201, 202), r.text
            body = r.json() if r.json()["status"] != "pending" else settled(urls["grocery"], "exchanges", r.json()["exchange_ref"], client.token)
            assert body["status"] == "confirmed", body
            with lock:
                done_exchanges.append(body)

        def kill_grocery_soon() -> None:
            time.sleep(3)
            grocery = next(p for p in read_state(spec.workdir)["processes"] if p["name"] == "gateway-grocery")
            os.kill(grocery["pid"], signal.SIGKILL)

        killer = threading.Thread(target=kill_grocery_soon)
        killer.start()
        with ThreadPoolExecutor(32) as pool:
            list(pool.map(exchange, [(i, k) for i in range(TRADERS) for k in range(EXCHANGES_EACH)]))
        killer.join()
        assert len({e["exchange_ref"] for e in done_exchanges}) == TRADERS * EXCHANGES_EACH
        assert next(p for p in read_state(spec.workdir)["processes"] if p["name"] == "gateway-grocery")["restarts"] == 1

        # The whole alliance down and up again between the exchanges and the redemptions.
        down(spec.workdir)
        up(spec)

        # 1,000 redemptions at the cafe, each its member's own signed authorisation.
        done_redemptions: list[dict] = []

        def redeem(i: int) -> None:
            wallet, clients = traders[i]
            signed = SignedNonces(tmp_path / "wallets" / str(i) / "signed-nonces.json")
            for _ in range(REDEMPTIONS_EACH):
                auth = clients["cafe"].authorise(wallet, 1, signed=signed)
                r = retrying("POST", urls["cafe"] + "/v1/me/redemptions", json=auth.to_dict(),
                            headers={"Authorization": f"Bearer {clients['cafe'].token}"})
                assert r.status_code in (200, 201, 202), r.text
                body = r.json() if r.json()["status"] != "pending" else settled(urls["cafe"], "redemptions", r.json()["redemption_ref"],
                                                                                 clients["cafe"].token)
                assert body["status"] == "confirmed", body
                with lock:
                    done_redemptions.append(body)

        with ThreadPoolExecutor(32) as pool:
            list(pool.map(redeem, range(TRADERS)))
        assert len({r["redemption_ref"] for r in done_redemptions}) == TRADERS * REDEMPTIONS_EACH

        # Nothing lost or doubled: the chain holds exactly what the members were told, and every ledger reconciles.
        alliance = Alliance(connect(spec.chain_url), Manifest.load(spec.workdir / "deployment.json"))
        held = {wallet.address: alliance.points.balance_of(wallet.address) for wallet, _ in traders}
        assert held == {wallet.address: EXCHANGES_EACH - REDEMPTIONS_EACH for wallet, _ in traders}
        issued = alliance.points.contract.events.Issued().get_logs(from_block=0)
        assert len(issued) == TRADERS * EXCHANGES_EACH
        for _, clients in traders[:20]:
            assert clients["cafe"].balance()["points"] == 100 + REDEMPTIONS_EACH * 50  # welcome points and the redemptions
        reconciled = subprocess.run([sys.executable, "-m", "scripts.cli", "settle", "reconcile", "-c", str(spec.workdir / "settlement.json")],
                                    cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert reconciled.returncode == 0, reconciled.stdout + reconciled.stderr
        assert json.loads(reconciled.stdout)["ok"] is True
    finally:
        down(spec.workdir)
