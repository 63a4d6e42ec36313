"""Gateway benchmarks; prints one JSON object.

- ingest: POST /v1/purchases on ONE uvicorn worker, 32 concurrent keep-alive clients from a separate
  process (bench/loadgen.py), SQLite and PostgreSQL: requests/s, p50/p99 latency.
- bulk: POST /v1/purchases/batch, events/s over 8 batches of 5,000 sent one after another (after a
  warm-up batch), on the database the ingest run left.
- redemptions: cross-brand redemption end to end (HTTP -> gateway -> anvil), redemptions/s and p99,
  with the gateway run as deployed (one uvicorn worker per core and the brand's dedicated chain
  sender, `alliance gateway sender`) on SQLite, the same on PostgreSQL (`..._postgres`), and one
  worker alone sending for itself (`..._one_worker`).
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from contracts.chain import free_port  # noqa: E402
from gateway.auth import create_api_key  # noqa: E402
from gateway.db import transaction  # noqa: E402
from gateway.runtime import build_gateway  # noqa: E402
from gateway.services import members  # noqa: E402
from gateway.settings import GatewaySettings  # noqa: E402

PG_URL = os.environ.get("ALLIANCE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
# A batch of 5,000 events then reaches about 3,900 distinct members, as a store's day would.
CONCURRENCY, SECONDS, MEMBERS = 32, 10.0, 10_000
BULK_BATCHES = 8  # of 5,000 events, one request after another
REDEEMING_MEMBERS, REDEMPTION_CONCURRENCY = 200, 256  # many tills at once: the sender batches what waits


def fresh_postgres() -> str | None:
    """A new empty database on the local server, or None when there is none."""
    import psycopg

    name = "bench_" + uuid.uuid4().hex[:8]
    admin = PG_URL.replace("postgresql+psycopg://", "postgresql://")
    try:
        with psycopg.connect(admin, autocommit=True, connect_timeout=3) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.Error:
        return None
    return PG_URL.rsplit("/", 1)[0] + "/" + name


def settings_env(workdir: Path, database_url: str) -> dict[str, str]:
    return {"GATEWAY_BRAND_ID": "bench", "GATEWAY_BRAND_NAME": "Bench Mart", "GATEWAY_DATABASE_URL": database_url,
            "GATEWAY_KEYS_DIR": str(workdir / "keys"), "GATEWAY_PURCHASES_PER_MEMBER_PER_MINUTE": "1000000",
            "GATEWAY_OUTBOX_INTERVAL_S": "0", "GATEWAY_ANCHOR_INTERVAL_S": "0"}


def prepare(workdir: Path, database_url: str) -> tuple[dict[str, str], str, list[str]]:
    env = settings_env(workdir, database_url)
    os.environ.update(env)
    gw = build_gateway(GatewaySettings())
    now = gw.now()
    refs = []
    with transaction(gw.sessions) as session:
        pos_key = create_api_key(session, "pos", "bench-till", now)[1]
        for i in range(MEMBERS):
            enrolment = members.enrol(session, gw, identifiers={"email": f"m{i}@bench.example"}, name=f"Member {i}",
                                      birthday=None, passphrase=None, jurisdiction=None, channel="api", now=now)
            refs.append(enrolment.member.member_ref)
    gw.engine.dispose()
    return env, pos_key, refs


class Server:
    def __init__(self, env: dict[str, str], workers: int = 1):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "gateway.app:create_app", "--factory", "--host", "127.0.0.1", "--port", str(self.port),
             "--workers", str(workers), "--log-level", "warning", "--no-access-log"],
            cwd=ROOT, env=os.environ | env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError("gateway did not start: " + self.process.stderr.read().decode()[-2000:])

    def stop(self):
        self.process.terminate()
        self.process.wait(timeout=20)


def load(url: str, path: str, headers: dict, bodies: list[str], seconds: float = SECONDS, concurrency: int = CONCURRENCY,
         once: bool = False) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as fh:
        fh.write("\n".join(bodies))
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "loadgen.py"), url, path, str(concurrency), str(seconds),
                          json.dumps(headers), fh.name, *(["--once"] if once else [])], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def purchase_body(ref: str, rng: random.Random, when: str) -> str:
    return json.dumps({"member_ref": ref, "amount_minor": rng.randint(100, 50_000), "occurred_at": when})


def ingest(database_url: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        env, pos_key, refs = prepare(Path(tmp), database_url)
        rng = random.Random(7)
        when = datetime.now(UTC).isoformat()
        bodies = [purchase_body(rng.choice(refs), rng, when) for _ in range(5000)]
        server = Server(env)
        try:
            headers = {"Authorization": f"Bearer {pos_key}", "Idempotency-Key": "bench-{n}"}
            load(server.url, "/v1/purchases", headers | {"Idempotency-Key": "warm-{n}"}, bodies, seconds=2)
            single = load(server.url, "/v1/purchases", headers, bodies)
            batch_bodies = []
            for b in range(1 + BULK_BATCHES):
                events = [json.loads(purchase_body(rng.choice(refs), rng, when)) | {"idempotency_key": f"bulk-{b}-{i}"} for i in range(5000)]
                batch_bodies.append(json.dumps({"events": events}))
            with httpx.Client(base_url=server.url, timeout=600, headers={"Authorization": f"Bearer {pos_key}"}) as client:
                def send(body: str) -> int:
                    r = client.post("/v1/purchases/batch", content=body, headers={"Content-Type": "application/json"})
                    r.raise_for_status()
                    return r.json()["accepted"]
                send(batch_bodies[0])  # warm-up, as for single purchases
                start = time.perf_counter()
                accepted = sum(send(body) for body in batch_bodies[1:])
                bulk_s = time.perf_counter() - start
        finally:
            server.stop()
        return {"single": single, "bulk": {"events": accepted, "seconds": round(bulk_s, 2), "events_per_s": round(accepted / bulk_s)}}


def redemptions(members: int = REDEEMING_MEMBERS, per_member: int = 4, database_url: str | None = None, workers: int = 1,
                dedicated_sender: bool = False) -> dict:
    """Cross-brand redemption end to end on anvil: members exchange points into AP at a grocer, then
    redeem them at a cafe whose gateway runs as its own uvicorn process. Each request carries one
    member's signed authorisation; the gateway submits it, waits for the receipt and credits points."""
    from eth_account import Account

    from contracts.chain import Anvil
    from contracts.deploy import BrandTerms
    from gateway.local import LocalAlliance
    from gateway.member import SignedNonces
    from gateway.settings import Throttle, Throttles

    with tempfile.TemporaryDirectory() as tmp, Anvil() as anvil_url:
        local = LocalAlliance.start(Path(tmp) / "alliance", chain_url=anvil_url)
        # Every member enrols from this one process: its address may enrol them all.
        many = Throttles(enrol_per_address=Throttle(burst=10 * members, period_s=3600),
                         code_per_address=Throttle(burst=10 * members, period_s=3600))
        grocer = local.add_brand("grocery", BrandTerms("Bench Grocery", rate=10, credit_limit=10**9, collateral=10**15), throttles=many)
        cafe = local.add_brand("cafe", BrandTerms("Bench Cafe", rate=50, credit_limit=10**9, collateral=10**15), database_url,
                               throttles=many)
        requests = []
        for i in range(members):
            wallet = Account.create()
            at_grocer, at_cafe = (brand.enrol({"email": f"r{i}@bench.example"}, f"Member {i}", "bench passphrase") for brand in (grocer, cafe))
            refs = [at_grocer.member_ref, at_cafe.member_ref]
            for client in (at_grocer, at_cafe):
                client.consent("alliance_exchange")
                client.link_wallet(wallet)
            r = grocer.http.post("/v1/purchases", headers=grocer.headers("pos", **{"Idempotency-Key": f"r{i}"}),
                                 json={"member_ref": refs[0], "amount_minor": 100_000, "occurred_at": datetime.now(UTC).isoformat()})
            r.raise_for_status()
            at_grocer.exchange(10 * per_member)
            signed = SignedNonces(Path(tmp) / f"wallet-{i}" / "signed-nonces.json")  # the member's device record
            for _ in range(per_member):
                auth = at_cafe.authorise(wallet, 10, signed=signed)
                requests.append(json.dumps({"headers": {"Authorization": f"Bearer {at_cafe.token}"}, "body": auth.to_dict()}))
        cafe.gateway.engine.dispose()
        s = cafe.gateway.settings
        env = {"GATEWAY_BRAND_ID": s.brand_id, "GATEWAY_BRAND_NAME": s.brand_name, "GATEWAY_DATABASE_URL": s.database_url,
               "GATEWAY_KEYS_DIR": str(s.keys_dir), "GATEWAY_MANIFEST": str(s.manifest), "GATEWAY_CHAIN_URL": anvil_url,
               "GATEWAY_OUTBOX_INTERVAL_S": "0", "GATEWAY_ANCHOR_INTERVAL_S": "0"}
        sender = subprocess.Popen([sys.executable, "-m", "scripts.cli", "gateway", "sender"], cwd=ROOT, env=os.environ | env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) if dedicated_sender else None
        server = Server(env, workers)
        try:
            result = load(server.url, "/v1/me/redemptions", {}, requests, seconds=300, concurrency=REDEMPTION_CONCURRENCY, once=True)
        finally:
            server.stop()
            if sender is not None:
                sender.terminate()
                sender.wait(timeout=20)
        return result


def main() -> None:
    result: dict = {"concurrency": CONCURRENCY, "seconds": SECONDS}
    sqlite = ingest(f"sqlite:///{tempfile.mkdtemp()}/bench.sqlite")
    result |= {"ingest_rps_sqlite": sqlite["single"]["rps"], "ingest_p50_ms_sqlite": sqlite["single"]["p50_ms"],
               "ingest_p99_ms_sqlite": sqlite["single"]["p99_ms"], "ingest_errors_sqlite": sqlite["single"]["errors"],
               "bulk_events_per_s": sqlite["bulk"]["events_per_s"]}
    pg = fresh_postgres()
    if pg is None:
        result["postgres"] = "skipped: no PostgreSQL server reachable"
    else:
        postgres = ingest(pg)
        result |= {"ingest_rps_postgres": postgres["single"]["rps"], "ingest_p50_ms_postgres": postgres["single"]["p50_ms"],
                   "ingest_p99_ms_postgres": postgres["single"]["p99_ms"], "ingest_errors_postgres": postgres["single"]["errors"],
                   "bulk_events_per_s_postgres": postgres["bulk"]["events_per_s"]}
    workers = os.cpu_count() or 1
    redeemed = redemptions(workers=workers, dedicated_sender=True)
    result |= {"redemptions_per_s": redeemed["rps"], "redemption_p50_ms": redeemed["p50_ms"], "redemption_p99_ms": redeemed["p99_ms"],
               "redemptions": redeemed["requests"], "redemption_errors": redeemed["errors"], "redemption_workers": workers,
               "redemption_concurrency": REDEMPTION_CONCURRENCY}
    alone = redemptions()
    result |= {"redemptions_per_s_one_worker": alone["rps"], "redemption_p99_ms_one_worker": alone["p99_ms"],
               "redemption_errors_one_worker": alone["errors"]}
    pg = fresh_postgres()
    if pg is not None:
        on_pg = redemptions(database_url=pg, workers=workers, dedicated_sender=True)
        result |= {"redemptions_per_s_postgres": on_pg["rps"], "redemption_p99_ms_postgres": on_pg["p99_ms"],
                   "redemption_errors_postgres": on_pg["errors"]}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
