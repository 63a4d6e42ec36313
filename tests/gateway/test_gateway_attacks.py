"""The attacks the gateway was tried with, kept as regular tests: bodies that crashed the process,
a till farming points by backdating, and the smaller input holes (strings for booleans, any three
letters as a currency, implausible birthdays, numbers as times, malleable signatures, unlimited
wallet challenges, an idempotency key replayed with another body)."""

from __future__ import annotations

import itertools
import json
import os
import select
import socket
import subprocess
import sys
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest
from eth_account.messages import encode_defunct
from harness import Clock, authorise, consent, enrol, exchange, new_wallet, purchase, start_local_brand, start_world_brand
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contracts.chain import free_port
from gateway.guard import nesting_depth
from gateway.services.alliance import SECP256K1_N
from gateway.settings import CurrencyEarn, EarnRules

ROOT = Path(__file__).resolve().parents[2]
_phones = itertools.count(1)


def phone() -> str:
    return f"+86139{next(_phones):08d}"


# ---------------------------------------------------------------- no request crashes or stalls a process


class GatewayProcess:
    """A gateway served by uvicorn in a process of its own, as in production."""

    def __init__(self, workdir: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = os.environ | {"GATEWAY_BRAND_ID": "target", "GATEWAY_DATABASE_URL": f"sqlite:///{workdir}/target.sqlite",
                                 "GATEWAY_KEYS_DIR": str(workdir / "keys"), "GATEWAY_NOTIFICATIONS_DIR": str(workdir / "notifications"),
                                 "GATEWAY_OUTBOX_INTERVAL_S": "0", "GATEWAY_ANCHOR_INTERVAL_S": "0"}

    def __enter__(self) -> GatewayProcess:
        self.process = subprocess.Popen([sys.executable, "-m", "uvicorn", "gateway.app:create_app", "--factory", "--host", "127.0.0.1",
                                         "--port", str(self.port), "--log-level", "warning"], cwd=ROOT, env=self.env,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.1)
        self.__exit__()
        raise RuntimeError("the gateway did not start: " + self.process.stderr.read().decode()[-2000:])

    def __exit__(self, *exc) -> None:
        self.process.terminate()
        self.process.wait(timeout=20)

    def alive(self) -> bool:
        return self.process.poll() is None and httpx.get(self.url + "/healthz", timeout=5).status_code == 200


def raw_post(port: int, path: str, body_chunks, *, content_length: int | None = None, timeout: float = 10.0) -> tuple[int, float]:
    """POST over a bare socket, streaming the body until the server answers: (status, seconds to
    the answer). With no content_length the body is sent chunked."""
    head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    head += f"Content-Length: {content_length}\r\n\r\n" if content_length is not None else "Transfer-Encoding: chunked\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        start = time.monotonic()
        s.sendall(head.encode())
        pending, answer = b"", b""
        chunks = iter(body_chunks)
        while b"\r\n" not in answer and time.monotonic() - start < timeout:
            readable, writable, _ = select.select([s], [s], [], 1.0)
            if readable:
                data = s.recv(65536)
                if not data:
                    break
                answer += data
                continue
            if writable:
                if not pending:
                    chunk = next(chunks, None)
                    if chunk is None:
                        pending = b"0\r\n\r\n" if content_length is None else b""
                        chunks = iter(())
                        if not pending:
                            continue
                    else:
                        pending = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n" if content_length is None else chunk
                try:
                    pending = pending[s.send(pending):]
                except (BrokenPipeError, ConnectionResetError):
                    break
        elapsed = time.monotonic() - start
        while b"\r\n" not in answer:
            data = s.recv(65536)
            if not data:
                break
            answer += data
    return int(answer.split(b" ", 2)[1]), elapsed


def test_deep_and_huge_bodies_get_a_4xx_at_once_and_the_server_keeps_serving(tmp_path):
    nested = lambda field, depth: f'{{"{field}":'.encode() + b"[" * depth + b"]" * depth + b"}"  # noqa: E731
    with GatewayProcess(tmp_path) as gateway:
        # 100,000 deep (180 KB): once it killed the process. Now the enrolment route's size limit
        # refuses it, and the batch route (larger bodies) its nesting depth; both unauthenticated.
        for path, body, status in (("/v1/enrolments", nested("identifiers", 100_000), 413),
                                   ("/v1/purchases/batch", nested("events", 100_000), 422),
                                   ("/v1/enrolments", nested("identifiers", 30_000), 422),  # small enough, still too deep
                                   ("/v1/purchases/batch", b'{"events":' + b"[" * 1_000_000, 422)):  # never closed
            started = time.monotonic()
            r = httpx.post(gateway.url + path, content=body, headers={"Content-Type": "application/json"}, timeout=30)
            assert (r.status_code, time.monotonic() - started < 1.0) == (status, True), (path, r.status_code, r.text)
            assert r.headers["content-type"] == "application/problem+json" and r.json()["detail"]
        # 50 MB, declared: refused from its Content-Length before a byte of it is read ...
        megabyte = b" " * 2**20
        status, seconds = raw_post(gateway.port, "/v1/purchases/batch", itertools.repeat(megabyte, 50), content_length=50 * 2**20)
        assert (status, seconds < 1.0) == (413, True), seconds
        # ... and streamed without a length: refused once it passes the route's limit, the rest unread.
        status, seconds = raw_post(gateway.port, "/v1/enrolments", itertools.repeat(megabyte, 50))
        assert (status, seconds < 1.0) == (413, True), seconds
        # A client trickling a body in holds nothing up: others are served meanwhile.
        with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as slow:
            slow.sendall(b"POST /v1/purchases/batch HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Transfer-Encoding: chunked\r\n\r\n")
            for _ in range(5):
                slow.sendall(b"10\r\n" + b"[" * 16 + b"\r\n")
                started = time.monotonic()
                assert httpx.get(gateway.url + "/v1/brand", timeout=5).status_code == 200
                assert time.monotonic() - started < 1.0
        assert gateway.alive()


def _depth(value) -> int:
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    return 0


TRICKY_TEXT = st.text(alphabet=st.sampled_from('[]{}"\\ax\u00e9\n'), max_size=12)
JSON_VALUES = st.recursive(st.none() | st.integers() | TRICKY_TEXT,
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TRICKY_TEXT, inner, max_size=4), max_leaves=30)


@given(value=JSON_VALUES, ascii_only=st.booleans())
def test_the_guard_measures_nesting_exactly_whatever_the_strings_hold(value, ascii_only):
    """Brackets, quotes and backslashes inside strings never count: the guard's measure equals the
    structure's depth (so it neither lets a deep body through nor refuses a flat one)."""
    assert nesting_depth(json.dumps(value, ensure_ascii=ascii_only).encode()) == _depth(value)


def test_the_recursion_limit_is_back_to_the_default_in_every_serving_process():
    """py_ecc (imported by eth_account) raises the limit to 100,000, so a decoder recursing that deep
    overflowed the C stack: the process died instead of raising. Once the gateway, the console or the
    CLI is imported, decoding 100,000 levels raises RecursionError, on the main thread and on a worker."""
    program = """
import json, sys, threading
import gateway.app, settlement.console, scripts.cli, eth_account, py_ecc
assert sys.getrecursionlimit() == 1000, sys.getrecursionlimit()
deep = "[" * 100_000 + "]" * 100_000
outcomes = []
def decode():
    try:
        json.loads(deep)
    except RecursionError:
        outcomes.append("RecursionError")
decode()
worker = threading.Thread(target=decode)
worker.start()
worker.join()
print(outcomes)
"""
    done = subprocess.run([sys.executable, "-c", program], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])
    assert done.stdout.strip() == "['RecursionError', 'RecursionError']"


# ---------------------------------------------------------------- backdating


@pytest.fixture
def shop(tmp_path, clock):
    brand = start_local_brand(tmp_path, "farm", clock=clock, purchases_per_member_per_minute=1000,
                              earn=EarnRules(daily_cap=50_000, member_day=None))
    yield brand
    brand.close()


def test_a_till_cannot_farm_points_by_backdating(shop, clock):
    """The finding: six purchases dated today, 3, 40 and 400 days ago, 1970-01-08 and 0001-01-01
    earned a fresh member 300,000 points in a second against a daily cap of 50,000."""
    m = enrol(shop, phone())
    now = clock.advance(minutes=1)
    dates = [now, now - timedelta(days=3), now - timedelta(days=40), now - timedelta(days=400),
             datetime(1970, 1, 8, tzinfo=UTC), datetime(1, 1, 1, tzinfo=UTC)]
    answers = [purchase(shop, m["member_ref"], 10**8, f"farm-{i}", when) for i, when in enumerate(dates)]
    assert [r.status_code for r in answers] == [201, 400, 400, 400, 400, 400]
    assert answers[0].json()["points"] == 50_000
    assert "before the member enrolled" in answers[1].json()["detail"]
    assert all("more than 7 days ago" in r.json()["detail"] for r in answers[2:])
    # A member of longer standing: a backlog inside the window earns each day's cap once, no more.
    old = enrol(shop, phone())
    now = clock.advance(days=10)
    backlog = [purchase(shop, old["member_ref"], 10**8, f"backlog-{d}-{k}", now - timedelta(days=d, hours=k))
               for d in range(10) for k in range(2)]
    earned = [r.json()["points"] for r in backlog if r.status_code == 201]
    assert sum(earned) <= 50_000 * (7 + 2)
    assert [r.status_code for r in backlog].count(400) >= 4  # 8 and 9 days ago, twice each
    # Actions obey the same window.
    r = shop.client.post("/v1/actions", headers=shop.as_("pos") | {"Idempotency-Key": "old-review"},
                         json={"member_ref": old["member_ref"], "kind": "review", "occurred_at": (now - timedelta(days=8)).isoformat()})
    assert r.status_code == 400 and "more than 7 days ago" in r.json()["detail"]


OFFSETS = [timezone(timedelta(hours=h, minutes=m)) for h, m in ((0, 0), (8, 0), (-5, 0), (14, 0), (-12, 0), (5, 45), (-9, -30))]
PURCHASE = st.tuples(st.integers(0, 36 * 60),  # minutes after the previous purchase was received
                     st.integers(-12 * 24 * 60, 10),  # occurred this many minutes after it is received (negative: before)
                     st.sampled_from(OFFSETS))


@settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck))
@given(purchases=st.lists(PURCHASE, min_size=1, max_size=30))
def test_purchases_received_in_one_day_earn_at_most_the_cap_times_the_window(tmp_path_factory, purchases):
    """Random purchase sequences, timestamps anywhere around the window at any offset, each worth
    far more than the daily cap, against a brand in its default calendar (Asia/Shanghai). Every
    accepted purchase happened inside [received - 7 days, received + 5 minutes] and after the member
    enrolled; each of the brand's days earns at most the cap; and what purchases received within one
    day earn is at most cap x (7 + 2)."""
    cap, window = 1_000, 7
    clock = Clock(datetime(2026, 3, 3, 2, 0, tzinfo=UTC))
    brand = start_local_brand(tmp_path_factory.mktemp("window"), "window", clock=clock, timezone="Asia/Shanghai",
                              purchases_per_member_per_minute=1000, earn=EarnRules(daily_cap=cap, member_day=None, welcome_points=0))
    try:
        m = enrol(brand, phone())
        enrolled = clock.now
        clock.advance(days=5)
        zone = brand.gw.settings.zone
        accepted = []
        for i, (gap, offset_min, tz) in enumerate(purchases):
            received = clock.advance(minutes=gap, seconds=1)
            occurred = (received + timedelta(minutes=offset_min)).astimezone(tz)
            r = purchase(brand, m["member_ref"], 10**8, f"w{i}", occurred)
            assert r.status_code in (201, 400), r.text
            if r.status_code == 201:
                accepted.append((received, occurred, r.json()["points"]))
            else:
                inside = enrolled <= occurred and received - timedelta(days=window) <= occurred <= received + timedelta(minutes=5)
                assert not inside, (r.text, received, occurred)
        per_day, per_receiving_day = defaultdict(int), defaultdict(int)
        for received, occurred, points in accepted:
            assert enrolled <= occurred and received - timedelta(days=window) <= occurred <= received + timedelta(minutes=5)
            per_day[occurred.astimezone(zone).date()] += points
            per_receiving_day[received.astimezone(zone).date()] += points
        assert all(points <= cap for points in per_day.values()), per_day
        assert all(points <= cap * (window + 2) for points in per_receiving_day.values()), per_receiving_day
        assert brand.client.get("/v1/me/balance", headers=m["auth"]).json()["points"] == sum(p for _, _, p in accepted)
    finally:
        brand.close()


# ---------------------------------------------------------------- strict input


def test_strings_are_not_booleans_numbers_are_not_times(shop, clock):
    m = enrol(shop, phone())
    clock.advance(minutes=1)
    body = {"member_ref": m["member_ref"], "amount_minor": 10_000, "occurred_at": clock.now.isoformat()}
    for i, bad in enumerate(({"eco": "yes"}, {"eco": 1}, {"occurred_at": 0}, {"occurred_at": 1772532000},
                             {"occurred_at": "2026-03-03T10:00:00"}, {"occurred_at": "3 March 2026"}, {"occurred_at": "2026-03-03"},
                             # Valid RFC 3339, but a year before the first or after the last once in UTC
                             # (found by the fuzzing suite: it was a 500).
                             {"occurred_at": "0001-01-01T00:01:00+05:14"}, {"occurred_at": "9999-12-31T23:59:00-01:00"})):
        r = shop.client.post("/v1/purchases", json=body | bad, headers=shop.as_("pos") | {"Idempotency-Key": f"strict-{i}"})
        assert r.status_code == 422 and r.json()["code"] == "invalid_request", (bad, r.text)
    for granted in ("yes", "true", 1, None):
        r = shop.client.put("/v1/me/consents/marketing", json={"granted": granted}, headers=m["auth"])
        assert r.status_code == 422, (granted, r.text)
    assert shop.client.get("/v1/me/consents", headers=m["auth"]).json()["marketing"] is False
    r = shop.client.post("/v1/purchases", json=body | {"eco": True}, headers=shop.as_("pos") | {"Idempotency-Key": "eco-ok"})
    assert r.status_code == 201 and r.json()["campaign"] == "first_order"


def test_only_the_configured_currencies_earn_each_at_its_own_rate(tmp_path, clock):
    earn = EarnRules(currencies={"CNY": CurrencyEarn(points_per_unit=1, minor_per_unit=100),
                                 "JPY": CurrencyEarn(points_per_unit=1, minor_per_unit=20)}, first_order_multiplier_pct=100, member_day=None)
    brand = start_local_brand(tmp_path, "fx", clock=clock, earn=earn)
    try:
        m = enrol(brand, phone())
        clock.advance(minutes=1)
        assert purchase(brand, m["member_ref"], 10_000, "cny", clock.now).json()["points"] == 100  # the home currency by default
        assert purchase(brand, m["member_ref"], 10_000, "jpy", clock.now, currency="JPY").json()["points"] == 500
        for i, code in enumerate(("XYZ", "USD", "RMB")):
            r = purchase(brand, m["member_ref"], 10_000, f"cur-{i}", clock.now, currency=code)
            assert r.status_code == 400 and "CNY, JPY" in r.json()["detail"], r.text
        for i, code in enumerate(("cny", "CN", "YUAN")):
            assert purchase(brand, m["member_ref"], 10_000, f"shape-{i}", clock.now, currency=code).status_code == 422
    finally:
        brand.close()
    with pytest.raises(ValueError, match="ISO 4217"):
        EarnRules(currencies={"RMB": CurrencyEarn()})


def test_implausible_birthdays_are_refused(shop, clock):
    for birthday in ("2999-01-01", (clock.now + timedelta(days=1)).date().isoformat(), "1800-01-01", "1890-06-30"):
        r = shop.client.post("/v1/enrolments", json={"identifiers": {"phone": phone()}, "name": "N", "passphrase": "long enough pass",
                                                     "birthday": birthday})
        assert r.status_code == 400 and "birthday" in r.json()["detail"], (birthday, r.text)
    for birthday in (19900517, "17/05/1990", "1990-5-17"):
        r = shop.client.post("/v1/enrolments", json={"identifiers": {"phone": phone()}, "name": "N", "passphrase": "long enough pass",
                                                     "birthday": birthday})
        assert r.status_code == 422, (birthday, r.text)
    r = shop.client.post("/v1/members", headers=shop.as_("pos"), json={"identifiers": {"phone": phone()}, "name": "N", "birthday": "2999-01-01"})
    assert r.status_code == 400
    assert enrol(shop, phone(), birthday="1926-03-03")["balance"] == 100


def test_an_idempotency_key_replayed_with_another_body_is_refused_everywhere(shop, clock):
    m = enrol(shop, phone())
    clock.advance(minutes=1)
    act = lambda kind, when: shop.client.post("/v1/actions", headers=shop.as_("pos") | {"Idempotency-Key": "act-1"},  # noqa: E731
                                              json={"member_ref": m["member_ref"], "kind": kind, "occurred_at": when.isoformat()})
    first = act("review", clock.now)
    assert first.status_code == 201
    assert act("review", clock.now).status_code == 200  # the same request: a replay
    assert act("review", clock.now - timedelta(minutes=1)).json()["code"] == "idempotency_key_reused"  # another time
    assert act("share", clock.now).json()["code"] == "idempotency_key_reused"
    other = enrol(shop, phone())
    r = shop.client.post("/v1/actions", headers=shop.as_("pos") | {"Idempotency-Key": "act-1"},
                         json={"member_ref": other["member_ref"], "kind": "review", "occurred_at": clock.now.isoformat()})
    assert r.status_code == 422 and r.json()["code"] == "idempotency_key_reused"
    assert shop.client.get("/v1/me/balance", headers=m["auth"]).json()["points"] == 100 + 5


# ---------------------------------------------------------------- signatures and challenges


@pytest.fixture(scope="module")
def chain_brand(world, tmp_path_factory):
    clock = Clock()
    brand = start_world_brand(world, "signer", 10, clock=clock, open_wallet_challenges=3)
    yield brand, clock
    brand.close()


def high_s(signature: bytes) -> bytes:
    """The same signature in its other, malleable form: s -> n - s, recovery id flipped."""
    r, s, v = signature[:32], int.from_bytes(signature[32:64], "big"), signature[64]
    return r + (SECP256K1_N - s).to_bytes(32, "big") + bytes([v ^ 1 if v in (0, 1) else 27 + 28 - v])


def test_high_s_signatures_are_refused(chain_brand, world):
    brand, clock = chain_brand
    m = enrol(brand, phone())
    consent(brand, m, "alliance_exchange")
    wallet = new_wallet()
    challenge = brand.client.post("/v1/me/wallet/challenges", json={"address": wallet.address}, headers=m["auth"]).json()
    low = bytes(wallet.sign_message(encode_defunct(text=challenge["message"])).signature)
    from eth_account import Account

    # Both forms recover the same address: that is what makes the second one malleable.
    assert Account.recover_message(encode_defunct(text=challenge["message"]), signature=high_s(low)) == wallet.address
    r = brand.client.post("/v1/me/wallet", json={"challenge_id": challenge["challenge_id"], "signature": "0x" + high_s(low).hex()},
                          headers=m["auth"])
    assert r.status_code == 400 and "EIP-2" in r.json()["detail"], r.text
    assert brand.client.post("/v1/me/wallet", json={"challenge_id": challenge["challenge_id"], "signature": "0x" + low.hex()},
                             headers=m["auth"]).status_code == 200
    # A redemption authorisation in its high-s form is refused before any gas is spent.
    clock.advance(minutes=1)
    assert purchase(brand, m["member_ref"], 100_000, "fund", clock.now).status_code == 201
    assert exchange(brand, m, 5, "fund-ap").status_code == 201
    auth = authorise(world.alliance, wallet, brand, 2, world.chain.timestamp() + 3600)
    flipped = auth | {"signature": "0x" + high_s(bytes.fromhex(auth["signature"][2:])).hex()}
    r = brand.client.post("/v1/me/redemptions", json=flipped, headers=m["auth"])
    assert r.status_code == 400 and "EIP-2" in r.json()["detail"], r.text
    assert brand.client.post("/v1/me/redemptions", json=auth, headers=m["auth"]).status_code == 201


def test_a_member_holds_a_bounded_number_of_open_wallet_challenges(chain_brand):
    brand, clock = chain_brand
    m = enrol(brand, phone())
    consent(brand, m, "alliance_exchange")
    ask = lambda: brand.client.post("/v1/me/wallet/challenges", json={"address": new_wallet().address}, headers=m["auth"])  # noqa: E731
    opened = [ask() for _ in range(3)]
    assert [r.status_code for r in opened] == [201] * 3
    refused = ask()
    assert refused.status_code == 429 and refused.headers["Retry-After"] == "600", refused.text
    clock.advance(minutes=11)  # they expire: room again
    assert ask().status_code == 201
