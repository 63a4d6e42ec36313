"""The web apps in headless Chromium (Debian's chromium through Playwright); prints one JSON object.

- wallet_first_render_ms: the member wallet's home at a brand (balances, consents, receipts and a
  history of 500 ledger lines) from the moment it is asked for until it is on the screen, its six API
  calls included, the wallet already unlocked; median of 15. (`wallet_unlock_ms`: the passphrase's
  PBKDF2, 600,000 rounds in WebCrypto, for the record.)
- member_js_gzip_kb: the JavaScript the member's browser loads (static/wallet.js, gzip -9).
- browser_sign_ms: one EIP-712 redemption authorisation signed in the page (the wallet's own code,
  src/keys.js); mean of 200.
- console_page_p95_ms: the operator console's pages, each loaded 10 times in Chromium (navigation
  start to the load event), with 100,000 members in the brand's database (each with a welcome posting
  and a consent); p95 over all loads.

The gateway runs as deployed: uvicorn in its own process, SQLite.
"""

from __future__ import annotations

import gzip
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from contracts.chain import free_port  # noqa: E402
from gateway.auth import create_api_key  # noqa: E402
from gateway.db import transaction  # noqa: E402
from gateway.runtime import build_gateway  # noqa: E402
from gateway.settings import GatewaySettings  # noqa: E402
from gateway.web import STATIC  # noqa: E402

CHROMIUM = os.environ.get("ALLIANCE_CHROMIUM", "/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]
MEMBERS, LEDGER_LINES = 100_000, 500
PHONE, ACCOUNT_PASS, WALLET_PASS = "+8613900000777", "account passphrase 2026", "wallet passphrase 2026"
CONSOLE_PAGES = ("/console/", "/console/programme", "/console/members", "/console/consents", "/console/keys", "/console/settlement")


def env(workdir: Path) -> dict[str, str]:
    return {"GATEWAY_BRAND_ID": "bench", "GATEWAY_BRAND_NAME": "Bench Mart", "GATEWAY_DATABASE_URL": f"sqlite:///{workdir}/gw.sqlite",
            "GATEWAY_KEYS_DIR": str(workdir / "keys"), "GATEWAY_NOTIFIER": "dev", "GATEWAY_NOTIFICATIONS_DIR": str(workdir / "notes"),
            "GATEWAY_TIMEZONE": "UTC", "GATEWAY_OUTBOX_INTERVAL_S": "0", "GATEWAY_ANCHOR_INTERVAL_S": "0",
            "GATEWAY_PURCHASES_PER_MEMBER_PER_MINUTE": "1000", "GATEWAY_EARN__DAILY_CAP": "100000000"}


def populate(workdir: Path) -> dict[str, str]:
    """100,000 members (a welcome posting and the programme's consent each), written in bulk; the API keys."""
    gw = build_gateway(GatewaySettings(**{k.removeprefix("GATEWAY_").lower(): v for k, v in env(workdir).items()
                                          if "__" not in k}, manifest=None))
    now = datetime.now(UTC) - timedelta(days=30)
    with transaction(gw.sessions) as session:
        keys = {role: create_api_key(session, role, f"bench {role}", datetime.now(UTC))[1] for role in ("operator", "pos")}
    conn = gw.engine.raw_connection()
    try:
        cur = conn.cursor()
        cur.executemany("INSERT INTO members (id, member_ref, status, enrolled_at, jurisdiction, tier, tier_since, balance, purchase_count, "
                        "earned_today, purchase_tat_us, identity_proof) VALUES (?, ?, 'active', ?, 'CN', ?, ?, 100, 0, 0, 0, 'code')",
                        [(i, str(uuid.uuid4()), now + timedelta(seconds=i), "member" if i % 10 else "silver", now) for i in range(1, MEMBERS + 1)])
        cur.executemany("INSERT INTO ledger_txns (id, kind, member_id, ref, created_at) VALUES (?, 'welcome', ?, 'welcome', ?)",
                        [(i, i, now + timedelta(seconds=i)) for i in range(1, MEMBERS + 1)])
        cur.executemany("INSERT INTO ledger_entries (txn_id, account, member_id, amount) VALUES (?, ?, ?, ?)",
                        [row for i in range(1, MEMBERS + 1) for row in ((i, "member", i, 100), (i, "issued", None, -100))])
        cur.executemany("INSERT INTO consents (member_id, purpose, granted, receipt_id, log_seq, updated_at) VALUES (?, 'loyalty_core', 1, ?, 0, ?)",
                        [(i, str(uuid.uuid4()), now) for i in range(1, MEMBERS + 1)])
        conn.commit()
    finally:
        conn.close()
    gw.engine.dispose()
    return keys


def serve(workdir: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "gateway.app:create_app", "--factory", "--port", str(port), "--no-access-log"],
                            cwd=ROOT, env=os.environ | env(workdir), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError("the gateway did not start")


def member_with_history(url: str, workdir: Path, pos: str) -> str:
    """A member (self-enrolled, codes checked) with LEDGER_LINES postings; returns its reference."""
    with httpx.Client(base_url=url, timeout=30) as c:
        started = c.post("/v1/enrolments", json={"identifiers": {"phone": PHONE}, "name": "Bench Member", "passphrase": ACCOUNT_PASS}).json()
        sent = [json.loads(line) for line in (workdir / "notes" / "bench.jsonl").read_text().splitlines()]
        done = c.post(f"/v1/enrolments/{started['enrolment_id']}/verification", json={"codes": {"phone": sent[-1]["code"]}}).json()
        events = [{"idempotency_key": f"till-{i}", "member_ref": done["member_ref"], "amount_minor": 1_000 + i,
                   "occurred_at": datetime.now(UTC).isoformat()} for i in range(LEDGER_LINES - 1)]  # after the enrolment
        r = c.post("/v1/purchases/batch", json={"events": events}, headers={"Authorization": f"Bearer {pos}"})
        assert r.status_code == 200 and r.json()["rejected"] == 0, r.text[:500]
    return done["member_ref"]


def main() -> None:
    from playwright.sync_api import sync_playwright

    out: dict[str, float] = {"member_js_gzip_kb": round(len(gzip.compress((STATIC / "wallet.js").read_bytes(), 9)) / 1024, 1)}
    with tempfile.TemporaryDirectory(prefix="bench-web-") as tmp:
        workdir = Path(tmp)
        began = time.monotonic()
        keys = populate(workdir)
        out["populate_s"] = round(time.monotonic() - began, 1)
        proc, url = serve(workdir)
        try:
            member_with_history(url, workdir, keys["pos"])
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
                page = browser.new_page()
                page.set_default_timeout(60_000)

                # The wallet: made, unlocked, logged in at the brand; then its home asked for again and again.
                page.goto(url + "/wallet?lang=en")
                page.fill("#pass", WALLET_PASS)
                page.fill("#again", WALLET_PASS)
                page.click("#create")
                page.wait_for_selector("#address:has-text('0x')")
                page.evaluate("location.hash = '#/brands'")
                page.wait_for_selector("main[data-ready='/brands']", state="attached")
                page.fill("#loginphone", PHONE)
                page.fill("#loginpass", ACCOUNT_PASS)
                page.click("#login")
                page.wait_for_selector(".brand-link")
                renders = []
                for _ in range(16):
                    page.evaluate("location.hash = '#/brands'")
                    page.wait_for_selector("main[data-ready='/brands']", state="attached")
                    began = time.perf_counter()
                    page.evaluate("location.hash = '#/brand/0'")
                    page.wait_for_selector("main[data-ready='/brand/0'] #history", state="attached")
                    renders.append((time.perf_counter() - began) * 1000)
                assert page.locator("#history tr").count() == LEDGER_LINES
                out["wallet_first_render_ms"] = round(statistics.median(renders[1:]), 1)
                page.reload()
                page.fill("#pass", WALLET_PASS)
                began = time.perf_counter()
                page.click("#unlock")
                page.wait_for_selector("main[data-ready='/brands']", state="attached")
                out["wallet_unlock_ms"] = round((time.perf_counter() - began) * 1000, 1)

                # One EIP-712 signature, the wallet's own code, in a page of its own.
                bundle = subprocess.run([str(STATIC.parent / "node_modules" / ".bin" / "esbuild"), str(STATIC.parent / "src" / "keys.js"), "--bundle",
                                         "--format=iife", "--global-name=walletKeys"], capture_output=True, text=True, check=True).stdout
                signer = browser.new_page()
                signer.goto("about:blank")
                signer.evaluate(bundle)
                out["browser_sign_ms"] = round(signer.evaluate("""async () => {
                    const a = await walletKeys.account(walletKeys.newEntropy(), 0);
                    const domain = {name: 'AlliancePoints', version: '2', chainId: 31337, verifyingContract: '0x5FbDB2315678afecb367f032d93F642f64180aa3'};
                    walletKeys.signRedemption(domain, {owner: a.address, brand: a.address, amount: 1, nonce: 0, deadline: 1}, a.key);
                    const n = 200, t0 = performance.now();
                    for (let i = 0; i < n; i++) walletKeys.signRedemption(domain, {owner: a.address, brand: a.address, amount: i + 1, nonce: i, deadline: 2e9}, a.key);
                    return (performance.now() - t0) / n; }"""), 2)

                # The console, signed in, each page loaded ten times.
                page.goto(url + "/console/login")
                page.fill("#api_key", keys["operator"])
                page.click("#signin")
                page.wait_for_selector("#outstanding")
                loads, by_page = [], {}
                for path in CONSOLE_PAGES:
                    for _ in range(10):
                        began = time.perf_counter()
                        page.goto(url + path, wait_until="load")
                        loads.append((time.perf_counter() - began) * 1000)
                    by_page[path] = round(statistics.median(loads[-10:]), 1)
                out["console_page_p50_ms_by_page"] = by_page
                loads.sort()
                out["console_page_p95_ms"] = round(loads[int(0.95 * len(loads)) - 1], 1)
                out["console_page_p50_ms"] = round(statistics.median(loads), 1)
                page.goto(url + "/console/")
                assert page.locator(".figure >> nth=1").inner_text() == f"{MEMBERS + 1:,}"  # the members were all there
                browser.close()
        finally:
            proc.terminate()
            proc.wait(10)
    out["targets_met"] = (out["wallet_first_render_ms"] <= 300 and out["member_js_gzip_kb"] <= 150 and out["browser_sign_ms"] <= 50
                          and out["console_page_p95_ms"] <= 300)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
