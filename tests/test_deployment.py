"""The alliance as it is deployed: anvil as the chain, each brand's gateway a separate
`alliance gateway serve` process, a member using the `alliance member` CLI. Nothing in-process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from eth_account import Account

from contracts.chain import ANVIL_FAUCET_KEY, connect, free_port

pytestmark = [pytest.mark.anvil, pytest.mark.slow]

ALLIANCE = [sys.executable, "-m", "scripts.cli"]
ROOT = Path(__file__).resolve().parents[1]


def run(*args: str, env: dict[str, str], ok: bool = True) -> str:
    result = subprocess.run([*ALLIANCE, *args], cwd=ROOT, env=os.environ | env, capture_output=True, text=True, timeout=120)
    if ok:
        assert result.returncode == 0, f"{args}: {result.stdout}\n{result.stderr}"
    return result.stdout




def test_alliance_across_processes(anvil_url, tmp_path):
    governor = Account.create()
    connect(anvil_url).fund(governor.address)
    base = {"ALLIANCE_CHAIN_URL": anvil_url, "ALLIANCE_GOVERNOR_KEY": governor.key.hex(), "ALLIANCE_FAUCET_KEY": ANVIL_FAUCET_KEY,
            "ALLIANCE_MANIFEST": str(tmp_path / "deployment.json")}
    run("contracts", "deploy", "--manifest", str(tmp_path / "deployment.json"), env=base)

    servers, urls, pos_keys = [], {}, {}
    try:
        for brand, rate in (("grocery", 100), ("airline", 20)):
            env = base | {"GATEWAY_BRAND_ID": brand, "GATEWAY_BRAND_NAME": brand.title(), "GATEWAY_CHAIN_URL": anvil_url,
                          "GATEWAY_DATABASE_URL": f"sqlite:///{tmp_path / brand}.sqlite", "GATEWAY_KEYS_DIR": str(tmp_path / f"{brand}-keys"),
                          "GATEWAY_MANIFEST": str(tmp_path / "deployment.json")}
            run("gateway", "keys", env=env)
            address = Account.from_key((tmp_path / f"{brand}-keys" / "chain.key").read_text().strip()).address
            run("contracts", "admit", address, "--name", brand.title(), "--rate", str(rate), "--credit-limit", "1000000",
                "--fund-gas", "--mint-collateral", str(10**12), env=base)
            assert "deposited" in run("gateway", "deposit", str(10**12), env=env)
            pos_keys[brand] = run("gateway", "apikey", "pos", "--label", "till-1", env=env).strip()
            port = free_port()
            servers.append(subprocess.Popen([*ALLIANCE, "gateway", "serve", "--port", str(port)], cwd=ROOT, env=os.environ | env,
                                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            urls[brand] = f"http://127.0.0.1:{port}"
        for url in urls.values():
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert time.monotonic() < deadline, f"{url} did not start"
                time.sleep(0.3)

        member = {"ALLIANCE_MEMBER_HOME": str(tmp_path / "alice"), "ALLIANCE_WALLET_PASSPHRASE": "wallet-pass-2026",
                  "ALLIANCE_MEMBER_PASSPHRASE": "member-pass-2026"}
        wallet = json.loads(run("member", "wallet", env=member))["address"]
        enrolled = json.loads(run("member", "enrol", "--brand", urls["grocery"], "--name", "Alice Zhang", "--phone", "+8613812345678", env=member))
        r = httpx.post(urls["grocery"] + "/v1/purchases", headers={"Authorization": f"Bearer {pos_keys['grocery']}", "Idempotency-Key": "t1"},
                       json={"member_ref": enrolled["member_ref"], "amount_minor": 150_000, "occurred_at": datetime.now(UTC).isoformat()})
        assert r.status_code == 201, r.text
        # Without the alliance_exchange consent the exchange is refused, with a reason and no traceback.
        refused = subprocess.run([*ALLIANCE, "member", "exchange", "10", "--brand", urls["grocery"]], cwd=ROOT,
                                 env=os.environ | member, capture_output=True, text=True)
        assert refused.returncode == 1 and "consent_required" in refused.stdout and "Traceback" not in refused.stdout + refused.stderr
        run("member", "consent", "alliance_exchange", "--brand", urls["grocery"], env=member)
        assert json.loads(run("member", "link", "--brand", urls["grocery"], env=member))["wallet_address"] == wallet
        exchange = json.loads(run("member", "exchange", "25", "--brand", urls["grocery"], env=member))
        assert exchange["status"] == "confirmed" and exchange["brand_points"] == 2500

        run("member", "enrol", "--brand", urls["airline"], "--name", "Alice Zhang", "--phone", "+8613812345678", env=member)
        run("member", "consent", "alliance_exchange", "--brand", urls["airline"], env=member)
        redeemed = json.loads(run("member", "redeem", "10", "--at", urls["airline"], env=member))
        assert redeemed["status"] == "confirmed" and redeemed["reward_points"] == 200

        chain = connect(anvil_url)
        from contracts.client import Alliance
        from contracts.manifest import Manifest

        alliance = Alliance(chain, Manifest.load(tmp_path / "deployment.json"))
        assert alliance.points.balance_of(wallet) == 15
        assert json.loads(run("member", "balance", "--brand", urls["airline"], env=member))["points"] == 100 + 200
        closed = json.loads(run("contracts", "close-epoch", env=base))
        assert {b["brand"]: b["netValue"] for b in closed["brands"]} == {
            Account.from_key((tmp_path / "grocery-keys" / "chain.key").read_text().strip()).address: -25 * 10_000,
            Account.from_key((tmp_path / "airline-keys" / "chain.key").read_text().strip()).address: +10 * 10_000}
        assert alliance.settlement.pool_balance() == 15 * alliance.settlement.value_per_point()
    finally:
        for server in servers:
            server.terminate()
            server.wait(timeout=20)
