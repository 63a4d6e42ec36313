"""The alliance as processes (`alliance up`: anvil, three gateways of a uvicorn worker per core, each
with its chain sender, and the settlement indexer), measured from outside with the load generator
in processes of its own; prints one JSON object.

- up_s: from `alliance up` to every process healthy (deployment, admissions, keys included).
- enrolments_per_s: POST /v1/members (tills enrolling members) at the three gateways at once.
- purchases_per_s: POST /v1/purchases at the three gateways at once (one load generator each).
- exchanges_per_s: members exchange grocery points into AP, each their own request at once.
- redemptions_per_s, redemption_p50_ms, redemption_p99_ms: those AP redeemed at the cafe, each a
  member's own signed authorisation.
Targets: purchases_per_s >= 1,500, redemptions_per_s >= 200 with p99 <= 1,500 ms, up_s <= 60.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from contracts.chain import free_port  # noqa: E402
from scripts.up import AllianceSpec, down, up  # noqa: E402

SECONDS = 10.0
CONCURRENCY = 32  # per gateway
BUYERS = 300  # members per brand the purchases go to
TRADERS = 200  # members who exchange at the grocery and redeem at the cafe
REDEMPTIONS_PER_TRADER = 4
TARGETS = {"purchases_per_s": 1500, "redemptions_per_s": 200, "redemption_p99_ms": 1500, "up_s": 60}
MANY = '{"burst": 100000, "period_s": 60}'  # one address (the benchmark's) acts for every member
BENCH_SETTINGS = {"PURCHASES_PER_MEMBER_PER_MINUTE": "1000000", "THROTTLES__ENROL_PER_ADDRESS": MANY,
                  "THROTTLES__CODE_PER_ADDRESS": MANY, "THROTTLES__LOGIN_PER_ADDRESS": MANY}


def loadgen(url: str, path: str, headers: dict, bodies: list[str], seconds: float, concurrency: int, once: bool = False) -> subprocess.Popen:
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as fh:
        fh.write("\n".join(bodies))
    return subprocess.Popen([sys.executable, str(ROOT / "bench" / "loadgen.py"), url, path, str(concurrency), str(seconds),
                             json.dumps(headers), fh.name, *(["--once"] if once else [])], stdout=subprocess.PIPE, text=True)


def together(runs: list[subprocess.Popen]) -> dict:
    """Load generators run at once: their requests over the longest one's time, and each one's figures."""
    results = [json.loads(run.communicate()[0]) for run in runs]
    requests, seconds = sum(r["requests"] for r in results), max(r["seconds"] for r in results)
    return {"requests": requests, "seconds": seconds, "rps": round(requests / seconds, 1), "each": results}


def main() -> None:
    from eth_account import Account

    from gateway.member import MemberClient, SignedNonces

    with tempfile.TemporaryDirectory() as tmp:
        spec = AllianceSpec.model_validate({"workdir": tmp, "chain": {"port": free_port()}, "federation": {"enabled": False}, "brands": [
            {"id": b, "name": b.title(), "rate": r, "port": free_port(), "credit_limit": 10**9, "collateral": 10**15, "settings": BENCH_SETTINGS,
             "workers": os.cpu_count() or 1}
            for b, r in (("grocery", 10), ("airline", 20), ("cafe", 50))]})
        began = time.monotonic()
        state = up(spec)
        result: dict = {"up_s": round(time.monotonic() - began, 1), "brands": len(spec.brands)}
        try:
            urls = {b: s["url"] for b, s in state["brands"].items()}
            keys = {b: json.loads(Path(s["keys"]).read_text()) for b, s in state["brands"].items()}
            pos = {b: {"Authorization": f"Bearer {k['pos']}"} for b, k in keys.items()}

            # Tills enrol members at every gateway at once.
            enrol = json.dumps({"identifiers": {"email": "m{n}@bench.example"}, "name": "Member {n}"})
            enrolled = together([loadgen(urls[b], "/v1/members", pos[b], [enrol.replace("{n}", f"{b}-{{n}}")], SECONDS / 2, CONCURRENCY)
                                 for b in urls])
            result["enrolments_per_s"] = enrolled["rps"]
            result["enrolment_errors"] = {k: v for r in enrolled["each"] for k, v in r["errors"].items()}

            # The traders: an account at the grocery and the cafe, consent, one wallet linked at both.
            def trader(i: int) -> tuple:
                wallet, clients = Account.create(), {}
                for b in ("grocery", "cafe"):
                    client = MemberClient(httpx.Client(base_url=urls[b], timeout=60))
                    r = client.http.post("/v1/members", headers=pos[b], json={
                        "identifiers": {"email": f"t{i}@bench.example"}, "name": f"Trader {i}", "passphrase": "bench passphrase"})
                    r.raise_for_status()
                    client.login("email", f"t{i}@bench.example", "bench passphrase")
                    client.consent("alliance_exchange")
                    client.link_wallet(wallet)
                    clients[b] = client
                r = clients["grocery"].http.post("/v1/purchases", headers=pos["grocery"] | {"Idempotency-Key": f"trader-{i}"}, json={
                    "member_ref": clients["grocery"].member_ref, "amount_minor": 100_000, "occurred_at": datetime.now(UTC).isoformat()})
                r.raise_for_status()
                return wallet, clients

            with ThreadPoolExecutor(8) as pool:
                traders = list(pool.map(trader, range(TRADERS)))

            # Purchases at every gateway at once, on members of each.
            def buyer(b_i: tuple[str, int]) -> str:
                b, i = b_i
                r = httpx.post(urls[b] + "/v1/members", headers=pos[b], timeout=60,
                               json={"identifiers": {"email": f"buyer{i}@bench.example"}, "name": f"Buyer {i}"})
                r.raise_for_status()
                return r.json()["member_ref"]

            with ThreadPoolExecutor(8) as pool:
                refs = {b: list(pool.map(buyer, [(b, i) for i in range(BUYERS)])) for b in urls}
            rng, when = random.Random(7), datetime.now(UTC).isoformat()
            bodies = {b: [json.dumps({"member_ref": rng.choice(refs[b]), "amount_minor": rng.randint(100, 50_000), "occurred_at": when})
                          for _ in range(5000)] for b in urls}
            bought = together([loadgen(urls[b], "/v1/purchases", pos[b] | {"Idempotency-Key": f"{b}-{{n}}"}, bodies[b], SECONDS, CONCURRENCY)
                               for b in urls])
            result |= {"purchases_per_s": bought["rps"], "purchase_errors": {k: v for r in bought["each"] for k, v in r["errors"].items()}}

            # Every trader exchanges at the grocery at once, then redeems at the cafe, each request its own.
            exchanges = [json.dumps({"headers": {"Authorization": f"Bearer {c['grocery'].token}", "Idempotency-Key": f"x-{i}"},
                                     "body": {"ap_amount": 10 * REDEMPTIONS_PER_TRADER}}) for i, (_, c) in enumerate(traders)]
            exchanged = together([loadgen(urls["grocery"], "/v1/me/exchanges", {}, exchanges, 300, TRADERS, once=True)])
            result |= {"exchanges_per_s": exchanged["rps"], "exchange_errors": exchanged["each"][0]["errors"]}
            requests = []
            for i, (wallet, clients) in enumerate(traders):
                signed = SignedNonces(Path(tmp) / "wallets" / str(i) / "signed-nonces.json")
                for _ in range(REDEMPTIONS_PER_TRADER):
                    auth = clients["cafe"].authorise(wallet, 10, signed=signed)
                    requests.append(json.dumps({"headers": {"Authorization": f"Bearer {clients['cafe'].token}"}, "body": auth.to_dict()}))
            redeemed = together([loadgen(urls["cafe"], "/v1/me/redemptions", {}, requests, 300, 256, once=True)])["each"][0]
            result |= {"redemptions_per_s": redeemed["rps"], "redemption_p50_ms": redeemed["p50_ms"], "redemption_p99_ms": redeemed["p99_ms"],
                       "redemptions": redeemed["requests"], "redemption_errors": redeemed["errors"]}
        finally:
            down(spec.workdir)
    result["targets"] = TARGETS
    result["meets_targets"] = (result["purchases_per_s"] >= TARGETS["purchases_per_s"] and result["up_s"] <= TARGETS["up_s"]
                               and result["redemptions_per_s"] >= TARGETS["redemptions_per_s"]
                               and result["redemption_p99_ms"] <= TARGETS["redemption_p99_ms"])
    print(json.dumps(result))


if __name__ == "__main__":
    main()
