"""No secret in any output: every CLI group made to fail, and the served gateway made to fail (chain
gone mid-request, bad input, bad credentials), with stdout, stderr, logs and every response body
searched for the content of every key file (the pepper, the KEK, the receipt-signing key, the chain
key, the governor's key, a member's wallet key) and of every API key and token.

The finding this holds: Typer's rich tracebacks showed local variables, so `alliance gateway anchor`
with a missing manifest printed `peppers = {1: b'...'}`."""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from eth_account import Account

from gateway.runtime import ensure_key_files

sys.path.insert(0, str(Path(__file__).resolve().parent / "gateway"))  # the gateway tests' harness

ROOT = Path(__file__).resolve().parents[1]
ALLIANCE = [sys.executable, "-m", "scripts.cli"]
DEAD_CHAIN = "http://127.0.0.1:9"  # nothing listens (the discard port)


def needles_of_file(path: Path) -> set[str]:
    """Every form a key file's secret could be printed in: its text, its lines, the decoded bytes as
    Python shows them (repr), in hex, in base64 again."""
    text = path.read_text().strip()
    out = {text} | {line for line in text.splitlines() if len(line) >= 16 and "-----" not in line}
    body = "".join(line for line in text.splitlines() if "-----" not in line)
    for candidate in (body, text.removeprefix("0x")):
        for decode in (base64.b64decode, base64.urlsafe_b64decode, bytes.fromhex):
            try:
                raw = decode(candidate + ("==" if decode is not bytes.fromhex else ""))
            except (binascii.Error, ValueError):
                continue
            if len(raw) >= 16:
                out |= {repr(raw)[2:-1][:40], raw.hex(), base64.b64encode(raw).decode().rstrip("=")}
    return {n for n in out if len(n) >= 16}


def secrets_in(text: str, needles: set[str]) -> list[str]:
    return sorted(n[:12] + "..." for n in needles if n in text)


@pytest.fixture(scope="module")
def brand_files(tmp_path_factory) -> tuple[dict[str, str], set[str]]:
    """A brand's keys directory, a governor key, a member's wallet
    and an auditor API key in a settlement configuration; the environment that uses them."""
    work = tmp_path_factory.mktemp("secrets")
    env = {"GATEWAY_BRAND_ID": "secretive", "GATEWAY_KEYS_DIR": str(work / "keys"), "GATEWAY_DATABASE_URL": f"sqlite:///{work}/g.sqlite",
           "GATEWAY_NOTIFICATIONS_DIR": str(work / "notifications"), "GATEWAY_MANIFEST": str(work / "missing-manifest.json"),
           "GATEWAY_CHAIN_URL": DEAD_CHAIN, "ALLIANCE_CHAIN_URL": DEAD_CHAIN, "ALLIANCE_MEMBER_HOME": str(work / "member"),
           "ALLIANCE_WALLET_PASSPHRASE": "wallet-pass-2026", "ALLIANCE_MEMBER_PASSPHRASE": "member-pass-2026"}
    governor = Account.create()
    env["ALLIANCE_GOVERNOR_KEY"] = governor.key.hex()
    env["ALLIANCE_SETTLER_KEY"] = governor.key.hex()
    env["SECRETIVE_AUDITOR_KEY"] = "ak_auditor_" + base64.urlsafe_b64encode(os.urandom(32)).decode().rstrip("=")
    run = lambda *a, **kw: subprocess.run([*ALLIANCE, *a], cwd=ROOT, env=os.environ | env | kw, capture_output=True, text=True, timeout=180)  # noqa: E731
    ensure_key_files(work / "keys")  # what `alliance gateway keys` makes
    assert run("member", "wallet").returncode == 0
    wallet_key = Account.decrypt(json.loads((work / "member" / "wallet.json").read_text()), "wallet-pass-2026").hex()
    (work / "settlement.json").write_text(json.dumps({
        "chain_url": DEAD_CHAIN, "manifest": str(work / "missing-manifest.json"), "store": f"sqlite:///{work}/index.sqlite",
        "gateways": [{"brand_id": "secretive", "address": governor.address, "url": "http://127.0.0.1:9",
                      "auditor_key_env": "SECRETIVE_AUDITOR_KEY"}],
        "auditor": {"user": "auditor", "password_hash": "pbkdf2_sha256$1$c2FsdA==$aGFzaA=="}}))
    needles = set().union(*(needles_of_file(p) for p in (work / "keys").iterdir() if p.suffix == ".key"))
    needles |= {governor.key.hex(), governor.key.hex().removeprefix("0x"), wallet_key.removeprefix("0x"), env["SECRETIVE_AUDITOR_KEY"]}
    assert any(p.name.startswith("pepper") for p in (work / "keys").iterdir()) and len(needles) >= 12
    env["WORK"] = str(work)
    return env, needles


FAILURES = [  # (what fails, the command): every group of the `alliance` command
    ("gateway: the finding itself, anchoring with no manifest", ["gateway", "anchor"]),
    ("gateway: deposit to a dead chain", ["gateway", "deposit", "5"]),
    ("gateway: migrate a database that cannot be created", ["gateway", "migrate"]),
    ("gateway: revoke an API key that does not exist", ["gateway", "apikey", "revoke", "424242"]),
    ("gateway: record a release that is not there", ["gateway", "record-release", "nowhere.release.json"]),
    ("contracts: deploy to a dead chain with the governor's key", ["contracts", "deploy", "--manifest", "{WORK}/deployment.json"]),
    ("contracts: admit a brand on a dead chain", ["contracts", "admit", "0x" + "11" * 20, "--name", "X", "--rate", "5", "--credit-limit", "1"]),
    ("member: unlock the wallet with a wrong passphrase", ["member", "link", "--brand", "http://127.0.0.1:9"]),
    ("member: a gateway that does not answer", ["member", "enrol", "--brand", "http://127.0.0.1:9", "--name", "N", "--phone", "+8613800000000"]),
    ("settle: index from a dead chain", ["settle", "index", "--config", "{WORK}/settlement.json"]),
    ("settle: close an epoch with the settler key", ["settle", "close", "--config", "{WORK}/settlement.json", "--force"]),
    ("audit: verify gateways that do not answer", ["audit", "verify", "--config", "{WORK}/settlement.json", "--out", "{WORK}/audit"]),
    ("console: serve on a dead chain", ["console", "serve", "--config", "{WORK}/settlement.json", "--port", "9"]),
    ("simulate: an unknown size", ["simulate", "--size", "galactic", "--workdir", "{WORK}/population"]),
    ("demo: a work directory that cannot be made", ["demo", "--workdir", "/proc/no-such/demo"]),
]


@pytest.mark.parametrize("case", FAILURES, ids=[f[0].split(":")[0] + ": " + f[1][1] if len(f[1]) > 1 else f[0] for f in FAILURES])
def test_a_failing_command_prints_no_secret(brand_files, case):
    env, needles = brand_files
    _, args = case
    extra = {"GATEWAY_DATABASE_URL": "sqlite:////proc/no-such/db.sqlite"} if args[:2] == ["gateway", "migrate"] else {}
    if args[:2] == ["member", "link"]:
        extra = {"ALLIANCE_WALLET_PASSPHRASE": "not the wallet passphrase"}
        Path(env["WORK"], "member", "sessions.json").write_text(json.dumps({"http://127.0.0.1:9": {"member_ref": "x", "token": "mt_x"}}))
    done = subprocess.run([*ALLIANCE, *(a.format(WORK=env["WORK"]) for a in args)], cwd=ROOT, env=os.environ | env | extra,
                          capture_output=True, text=True, timeout=300)
    output = done.stdout + done.stderr
    assert done.returncode != 0, output[-2000:]
    assert secrets_in(output, needles) == [], output[-3000:]
    assert not re.search(r"(peppers|kek|key) = (\{|b'|KeyEncryptionKey|<)", output), output[-3000:]  # no local variables shown


def test_the_served_gateway_shows_no_secret_in_errors_or_logs(anvil_url, tmp_path, caplog):
    """Failures in the served app, logged at DEBUG and answered: bad input, bad and revoked
    credentials, the chain dropping while requests need it (exchanges, redemptions, anchoring, the
    outbox), an unknown path. No response body and no log line holds a key, a token or an API key."""
    from harness import Cable, Clock, authorise, consent, enrol, exchange, link_wallet, new_wallet, new_world, purchase, start_brand

    from contracts.chain import connect
    from contracts.client import Alliance

    caplog.set_level(logging.DEBUG)
    world = new_world(tmp_path, connect(anvil_url))
    cable = Cable(int(anvil_url.rsplit(":", 1)[1]))
    clock = Clock()
    brand = start_brand(Alliance(connect(f"http://127.0.0.1:{cable.port}"), world.alliance.manifest), world.governor,
                        world.manifest_path, tmp_path, "leaky", "Leaky", 10, clock=clock)
    try:
        needles = set().union(*(needles_of_file(p) for p in brand.gw.settings.keys_dir.iterdir() if p.suffix == ".key"))
        needles |= set(brand.keys.values())
        m = enrol(brand, "+8613100000001")
        needles.add(m["token"])
        consent(brand, m, "alliance_exchange")
        wallet = new_wallet()
        link_wallet(brand, m, wallet)
        clock.advance(minutes=1)
        assert purchase(brand, m["member_ref"], 100_000, "p1", clock.now).status_code == 201
        assert exchange(brand, m, 5, "x1").status_code == 201
        auth = authorise(world.alliance, wallet, brand, 1, world.chain.timestamp() + 3600)
        c = brand.client
        answers = [c.post("/v1/enrolments", content=b"{bad"), c.get("/v1/me", headers={"Authorization": "Bearer " + m["token"] + "x"}),
                   c.get("/v1/audit/reconciliation", headers={"Authorization": "Bearer ak_auditor_" + "z" * 43}),
                   c.post("/v1/sessions", json={"kind": "phone", "value": "+8613100000001", "passphrase": "wrong passphrase"}),
                   c.get("/v1/nowhere")]
        cable.unplug()
        answers += [exchange(brand, m, 1, "x2"), c.post("/v1/me/redemptions", json=auth, headers=m["auth"]),
                    c.get("/v1/redemption-nonce", params={"owner": wallet.address}), c.get("/v1/brand"),
                    c.post("/v1/admin/anchors", json={"kind": "consent-log"}, headers=brand.as_("operator")),
                    c.post("/v1/admin/maintenance", headers=brand.as_("operator")),
                    c.get("/v1/audit/reconciliation", headers=brand.as_("auditor"))]
        assert {r.status_code for r in answers[5:8]} == {503}
        bodies = "\n".join(r.text for r in answers)
        logged = "\n".join(f"{r.getMessage()} {r.exc_text or ''}" for r in caplog.records)
        assert secrets_in(bodies, needles) == [] and secrets_in(logged, needles) == [], secrets_in(bodies + logged, needles)
        assert any("chain" in r.getMessage() for r in caplog.records)  # the outage was logged, without its secrets
    finally:
        cable.plug()
        brand.close()
