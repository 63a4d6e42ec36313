"""`alliance up | status | logs | down` through the CLI, as a partner would run it: a whole alliance as
separate processes from one file, a member earning and exchanging through it, a gateway killed and
restarted by the supervisor, and `down` then `up` resuming every ledger and the chain as they were."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import stat
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from eth_account import Account

from contracts.chain import connect, free_port
from contracts.client import Alliance
from contracts.manifest import Manifest
from gateway.member import MemberClient

pytestmark = [pytest.mark.anvil, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
ALLIANCE = [sys.executable, "-m", "scripts.cli"]
PHONE = "+8613812340000"


def alliance(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([*ALLIANCE, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def status(file: Path) -> dict:
    return json.loads(alliance("status", "-f", str(file), "--json").stdout)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "zombie" not in Path(f"/proc/{pid}/status").read_text().lower()


def wait_for(condition, seconds: float, what: str):
    deadline = time.monotonic() + seconds
    while not (result := condition()):
        assert time.monotonic() < deadline, f"not within {seconds} s: {what}"
        time.sleep(0.3)
    return result


@pytest.fixture
def alliance_file(tmp_path):
    chain_port, grocery_port, airline_port, superlink_port = free_port(), free_port(), free_port(), free_port()
    file = tmp_path / "alliance.toml"
    file.write_text(f"""
workdir = "state"
[chain]
url = "anvil"
port = {chain_port}
[federation]
port = {superlink_port}
[[brands]]
id = "grocery"
name = "Grocery"
rate = 100
port = {grocery_port}
settings = {{ EARN__WELCOME_POINTS = "40" }}
[[brands]]
id = "airline"
name = "Airline"
rate = 20
port = {airline_port}
""")
    yield file
    alliance("down", "-f", str(file))


def enrol(url: str, workdir: Path, brand: str) -> MemberClient:
    member = MemberClient(httpx.Client(base_url=url, timeout=30))
    started = member.enrol({"phone": PHONE}, "Alice Zhang", "member-pass-2026")
    sent = [json.loads(line) for line in (workdir / "brands" / brand / "notifications" / f"{brand}.jsonl").read_text().splitlines()]
    member.verify(started["enrolment_id"], {"phone": [m["code"] for m in sent if m["code"]][-1]})
    return member


def test_up_runs_supervises_and_resumes_an_alliance(alliance_file):
    began = time.monotonic()
    started = alliance("up", "-f", str(alliance_file))
    assert started.returncode == 0, started.stdout + started.stderr
    assert time.monotonic() - began < 60
    workdir = alliance_file.parent / "state"
    report = status(alliance_file)
    assert report["ok"] and [p["name"] for p in report["processes"]] == [
        "anvil", "gateway-grocery", "sender-grocery", "gateway-airline", "sender-airline", "superlink", "supernode-grocery",
        "supernode-airline", "trainer", "indexer"]
    # Both brands' SuperNodes joined the SuperLink (the federation `alliance` in workdir/flwr).
    def online() -> int:
        listed = subprocess.run([str(Path(sys.executable).parent / "flwr"), "supernode", "list", "--format", "json"], capture_output=True,
                                text=True, env=os.environ | {"FLWR_HOME": str(workdir / "flwr")}, timeout=60)
        return sum(n["status"] == "online" for n in json.loads(listed.stdout).get("nodes", []))

    wait_for(lambda: online() == 2, 30, "two SuperNodes online")
    for secret in ("governor.key", "settlement.json", "brands/grocery/api-keys.json", "brands/airline/api-keys.json"):
        assert stat.S_IMODE((workdir / secret).stat().st_mode) == 0o600, secret
    urls = {b: report["brands"][b]["url"] for b in ("grocery", "airline")}
    pos = json.loads((workdir / "brands" / "grocery" / "api-keys.json").read_text())["pos"]

    # A member earns at the grocery and exchanges points into AP on the alliance's chain.
    member = enrol(urls["grocery"], workdir, "grocery")
    assert member.balance()["points"] == 40  # the brand's own setting, from the alliance file
    r = httpx.post(urls["grocery"] + "/v1/purchases", headers={"Authorization": f"Bearer {pos}", "Idempotency-Key": "till-1"},
                   json={"member_ref": member.member_ref, "amount_minor": 150_000, "occurred_at": datetime.now(UTC).isoformat()})
    assert r.status_code == 201, r.text
    member.consent("alliance_exchange")
    wallet = Account.create()
    member.link_wallet(wallet)
    assert member.exchange(12)["status"] == "confirmed"
    balance = member.balance()["points"]
    # Sent by the brand's one account, from one of the brand's processes (its sender, or a worker
    # while the sender was idle): whoever held the sending lease.
    with sqlite3.connect(workdir / "brands" / "grocery" / "gateway.sqlite") as db:
        holder = db.execute("SELECT holder FROM sender_lease").fetchone()[0]
    brand_pids = {str(p["pid"]) for p in report["processes"] if p["name"] in ("sender-grocery", "gateway-grocery")}
    assert holder.split(":")[1] in brand_pids

    def chain_view():
        alliance_ = Alliance(connect(report["processes"][0]["health"]), Manifest.load(workdir / "deployment.json"))
        return alliance_.points.balance_of(wallet.address), len(alliance_.points.contract.events.Issued().get_logs(from_block=0))

    assert chain_view() == (12, 1)

    # kill -9 a gateway: the supervisor starts it again, and it answers with the same ledger.
    grocery = next(p for p in report["processes"] if p["name"] == "gateway-grocery")
    os.kill(grocery["pid"], signal.SIGKILL)
    again = wait_for(lambda: (s := status(alliance_file))["ok"] and s, 30, "the grocery gateway restarted")
    restarted = next(p for p in again["processes"] if p["name"] == "gateway-grocery")
    assert restarted["restarts"] == 1 and restarted["pid"] != grocery["pid"]
    assert member.balance()["points"] == balance
    assert "gateway-grocery exited" in alliance("logs", "-f", str(alliance_file)).stdout

    # down stops every process it started, anvil's own binary included; then up resumes it all.
    pids = [p["pid"] for p in again["processes"]] + [again["supervisor"]]
    stopped = alliance("down", "-f", str(alliance_file))
    assert stopped.returncode == 0 and "supervisor" in stopped.stdout
    wait_for(lambda: not any(alive(pid) for pid in pids), 10, "every process gone")
    assert alliance("status", "-f", str(alliance_file)).returncode == 1
    resumed = alliance("up", "-f", str(alliance_file))
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "deployed" not in (workdir / "logs" / "supervisor.log").read_text().split("alliance up:")[-1]  # not deployed again
    assert member.balance()["points"] == balance
    assert chain_view() == (12, 1)  # the chain's state and its logs came back


def test_a_bad_alliance_file_is_a_clear_error(tmp_path):
    file = tmp_path / "alliance.toml"
    file.write_text('[[brands]]\nid = "Grocery!"\nname = "G"\nrate = 0\nport = 8101\n[[brands]]\nid = "b2"\nname = "B"\nrate = 1\nport = 8101\n')
    result = alliance("up", "-f", str(file))
    assert result.returncode == 2 and "Traceback" not in result.stdout + result.stderr
    assert "brands.0.id" in result.stderr and "brands.0.rate" in result.stderr
    file.write_text('[[brands]]\nid = "a1"\nname = "A"\nrate = 1\nport = 8101\n[[brands]]\nid = "b2"\nname = "B"\nrate = 1\nport = 8101\n')
    result = alliance("up", "-f", str(file))
    assert result.returncode == 2 and "port of its own" in result.stderr
    file.write_text("not toml [")
    result = alliance("up", "-f", str(file))
    assert result.returncode == 2 and "not TOML" in result.stderr
