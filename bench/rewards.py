"""Spending points; prints one JSON object.

One gateway as its own uvicorn process (one worker, SQLite), loaded by bench/loadgen.py from another
process with 32 concurrent keep-alive clients, each request once:
- reward_orders_per_s / reward_order_p99_ms: members order a reward (POST /v1/me/reward-orders, each
  with its own member token and idempotency key), stock taken by a conditional update;
- coupon_redemptions_per_s: purchases at the till that present a coupon (each coupon once);
- pay_with_points_rps / _p99_ms: purchases that burn points as part of the payment, beside the same
  run's plain purchases (plain_purchase_rps) for comparison.
And reminders_per_s: the expiry reminder job in-process over 100,000 members whose points expire
within the notice window (scan, queue, render, decrypt each contact, hand to the development
notifier).
"""

from __future__ import annotations

import json
import os
import random
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.gateway import Server, load, settings_env  # noqa: E402
from gateway.auth import create_api_key  # noqa: E402
from gateway.db import transaction  # noqa: E402
from gateway.models import Consent, LedgerTxn, Member, PiiField, PointLot  # noqa: E402
from gateway.runtime import build_gateway  # noqa: E402
from gateway.services import ledger, members, notices, rewards  # noqa: E402
from gateway.settings import GatewaySettings  # noqa: E402

CONCURRENCY, SECONDS = 32, 10.0
MEMBERS, COUPONS = 2_000, 14_000
REMINDED_MEMBERS = 100_000


def prepare(workdir: Path) -> tuple[dict, str, list[tuple[str, str]], list[tuple[str, str]]]:
    """Members with points and tokens, a reward, and coupons issued to them: (env, till key,
    [(member_ref, token)], [(member_ref, coupon code)])."""
    env = settings_env(workdir, f"sqlite:///{workdir}/rewards.sqlite") | {"GATEWAY_NOTIFICATIONS_DIR": str(workdir / "notices"),
                                                                         "GATEWAY_DELIVERY_INTERVAL_S": "0",
                                                                         "GATEWAY_REMINDER_INTERVAL_S": "0"}
    os.environ.update(env)
    gw = build_gateway(GatewaySettings())
    now = gw.now()
    people = []
    with transaction(gw.sessions) as session:
        pos_key = create_api_key(session, "pos", "bench-till", now)[1]
        for i in range(MEMBERS):
            enrolment = members.enrol(session, gw, identifiers={"email": f"m{i}@bench.example"}, name=f"Member {i}",
                                      birthday=None, passphrase=None, jurisdiction=None, channel="api", now=now)
            people.append((enrolment.member, enrolment.token))
        ledger.credit_each(session, [(m, 10_000_000, "bench") for m, _ in people], "welcome", "issued", now, now + timedelta(days=365))
        for code, kind, extra in (("bench-gift", "digital", {}), ("bench-coupon", "coupon", {"coupon_value_minor": 500})):
            spec = rewards.RewardSpec(kind=kind, name=code, description="", points_price=100, stock=10**9, available_from=now,
                                      available_until=None, min_tier=None, per_member_limit=None, coupon_value_minor=extra.get("coupon_value_minor"),
                                      coupon_min_spend_minor=None, coupon_valid_days=None, active=True)
            rewards.define(session, gw, "bench", code, spec, now)
    coupons = []
    for start in range(0, COUPONS, 1_000):
        with transaction(gw.sessions) as session:
            for n in range(start, start + 1_000):
                member = session.get(Member, people[n % MEMBERS][0].id)
                out = rewards.order(session, gw, member, "bench-coupon", idempotency_key=f"seed-{n}", body_hash="0" * 64, now=now)
                coupons.append((member.member_ref, rewards.coupon_code(gw, out.coupon.id)))
    gw.engine.dispose()
    return env, pos_key, [(m.member_ref, token) for m, token in people], coupons


def http_benchmarks() -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        env, pos_key, people, coupons = prepare(Path(tmp))
        rng = random.Random(11)
        when = datetime.now(UTC).isoformat()
        server = Server(env)
        try:
            def orders(tag: str, count: int) -> list[str]:
                return [json.dumps({"headers": {"Authorization": f"Bearer {token}", "Idempotency-Key": f"{tag}-{n}"},
                                    "body": {"reward": "bench-gift"}}) for n, (_, token) in zip(range(count), (rng.choice(people) for _ in range(count)))]

            load(server.url, "/v1/me/reward-orders", {}, orders("warm", 500), seconds=5, once=True)
            ordered = load(server.url, "/v1/me/reward-orders", {}, orders("bench", 12_000), once=True)

            till = {"Authorization": f"Bearer {pos_key}"}
            use = [json.dumps({"headers": {"Idempotency-Key": f"coupon-{n}"},
                               "body": {"member_ref": ref, "amount_minor": 3_000, "occurred_at": when, "coupon_code": code}})
                   for n, (ref, code) in enumerate(coupons)]
            load(server.url, "/v1/purchases", till, use[:500], seconds=5, once=True)
            couponed = load(server.url, "/v1/purchases", till, use[500:], once=True)

            def purchases(burn: int) -> list[str]:
                return [json.dumps({"member_ref": rng.choice(people)[0], "amount_minor": 5_000, "occurred_at": when}
                                   | ({"points_burned": burn} if burn else {})) for _ in range(5_000)]

            headers = till | {"Idempotency-Key": "p-{n}"}
            load(server.url, "/v1/purchases", headers | {"Idempotency-Key": "warm-{n}"}, purchases(100), seconds=2)
            paid = load(server.url, "/v1/purchases", headers | {"Idempotency-Key": "pay-{n}"}, purchases(100))
            plain = load(server.url, "/v1/purchases", headers | {"Idempotency-Key": "plain-{n}"}, purchases(0))
        finally:
            server.stop()
    return {"reward_orders_per_s": ordered["rps"], "reward_order_p50_ms": ordered["p50_ms"], "reward_order_p99_ms": ordered["p99_ms"],
            "reward_orders": ordered["requests"], "reward_order_errors": ordered["errors"],
            "coupon_redemptions_per_s": couponed["rps"], "coupon_redemption_p99_ms": couponed["p99_ms"],
            "coupon_redemptions": couponed["requests"], "coupon_errors": couponed["errors"],
            "pay_with_points_rps": paid["rps"], "pay_with_points_p50_ms": paid["p50_ms"], "pay_with_points_p99_ms": paid["p99_ms"],
            "pay_with_points_errors": paid["errors"], "plain_purchase_rps": plain["rps"], "plain_purchase_p99_ms": plain["p99_ms"]}


def reminders() -> dict:
    """100,000 members (personal data sealed as at enrolment, loyalty_core granted), each with a lot
    expiring in 20 days, written in bulk; then one run of the reminder job, timed."""
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        os.environ.update(settings_env(workdir, f"sqlite:///{workdir}/reminders.sqlite") | {"GATEWAY_NOTIFICATIONS_DIR": str(workdir / "notices")})
        gw = build_gateway(GatewaySettings())
        now = gw.now()
        expires = now + timedelta(days=20)
        with transaction(gw.sessions) as session:
            conn = session.connection()
            conn.execute(Member.__table__.insert(), [
                dict(id=i + 1, member_ref=f"00000000-0000-4000-8000-{i:012d}", status="active", enrolled_at=now, jurisdiction="CN",
                     tier="member", tier_since=now, balance=500, purchase_count=1, earned_today=0, identity_proof="none")
                for i in range(REMINDED_MEMBERS)])
            conn.execute(Consent.__table__.insert(), [
                dict(member_id=i + 1, purpose="loyalty_core", granted=True, receipt_id=f"r{i}", log_seq=0, updated_at=now)
                for i in range(REMINDED_MEMBERS)])
            conn.execute(LedgerTxn.__table__.insert(), [dict(id=1, kind="welcome", member_id=1, ref="bench", created_at=now)])
            conn.execute(PointLot.__table__.insert(), [
                dict(member_id=i + 1, txn_id=1, amount=500, remaining=500, earned_at=now, expires_at=expires)
                for i in range(REMINDED_MEMBERS)])
            sealed, fields = [], []
            for i in range(REMINDED_MEMBERS):
                ref = f"00000000-0000-4000-8000-{i:012d}"
                wrapped = gw.vault.new_data_key(ref)
                sealed.append((ref, wrapped))
                fields += [dict(member_id=i + 1, field=f, ciphertext=c)
                           for f, c in gw.vault.encrypt_fields(wrapped, ref, {"email": f"m{i}@bench.example"}).items()]
            conn.execute(PiiField.__table__.insert(), fields)
            gw.keystore.put_many(sealed)
        start = time.perf_counter()
        run = notices.run(gw, gw.now())
        elapsed = time.perf_counter() - start
        sent = len(gw.notifier.messages())
        gw.engine.dispose()
    return {"reminders_per_s": round(run["sent"] / elapsed), "reminder_run_s": round(elapsed, 2), "reminder_members": REMINDED_MEMBERS,
            "reminders_queued": run["reminders_queued"], "reminders_sent": run["sent"], "reminders_delivered_to_notifier": sent}


def main() -> None:
    result: dict = {"concurrency": CONCURRENCY, "seconds": SECONDS, "database": "sqlite"}
    result |= http_benchmarks()
    result |= reminders()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
