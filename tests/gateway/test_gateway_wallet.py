"""The member's HD wallet: a fresh address for every exchange, so the public chain alone does not tie
a member's exchanges together; redemption gathers AP from the wallet's addresses."""

from __future__ import annotations

import json

from eth_account import Account

from gateway.member import HD_PATH, MemberClient, MemberHome

from harness import consent, enrol, new_world, purchase, start_world_brand


def test_addresses_derive_from_one_seed_and_the_recovery_phrase_restores_them(tmp_path):
    home = MemberHome(tmp_path / "device")
    first = home.create_wallet("wallet passphrase")
    fresh = [home.fresh_address("wallet passphrase", f"exchange {i}").address for i in range(3)]
    assert len({first, *fresh}) == 4
    assert [a["index"] for a in home.addresses()] == [1, 2, 3]
    keystore = json.loads(home.keystore.read_text())
    assert keystore["version"] == 3 and "address" not in keystore  # a standard keystore around the seed
    Account.enable_unaudited_hdwallet_features()
    words = home.recovery_phrase("wallet passphrase")
    assert len(words.split()) == 24
    assert [Account.from_mnemonic(words, account_path=HD_PATH.format(i)).address for i in range(4)] == [first, *fresh]


def test_a_wallet_of_one_key_keeps_working(tmp_path):
    home = MemberHome(tmp_path / "device")
    home.root.mkdir()
    key = Account.create()
    home.keystore.write_text(json.dumps(Account.encrypt(key.key, "pw")))  # a wallet made before the HD wallet
    assert home.wallet("pw").address == home.fresh_address("pw", "exchange").address == key.address
    assert [a.address for a in home.accounts("pw")] == [key.address]


def test_each_exchange_mints_to_a_fresh_address_and_redemption_gathers_them(request, tmp_path, clock):
    world = new_world(tmp_path)
    a = start_world_brand(world, "grocery", 10, clock=clock)
    b = start_world_brand(world, "cafe", 5, clock=clock)
    request.addfinalizer(a.close)
    request.addfinalizer(b.close)
    home = MemberHome(tmp_path / "device")
    home.create_wallet("pw")
    m = enrol(a, "+8613700000001")
    consent(a, m, "alliance_exchange")
    assert purchase(a, m["member_ref"], 100_000, "till-1", clock.now).status_code == 201
    at_a = MemberClient(a.client, m["auth"]["Authorization"].removeprefix("Bearer "))
    minted = [at_a.exchange(ap, to=home.fresh_address("pw", "exchange at grocery")) for ap in (30, 20)]
    assert [x["status"] for x in minted] == ["confirmed", "confirmed"]
    to = [x["wallet_address"] for x in minted]
    assert len(set(to)) == 2 and home.wallet("pw").address not in to
    issued = world.alliance.points.contract.events.Issued().get_logs(from_block=0)
    assert sorted(e["args"]["to"] for e in issued) == sorted(to)  # the chain shows two unrelated addresses
    # At the cafe: 40 AP from both addresses, each linked there first.
    mb = enrol(b, "+8613700000001")
    consent(b, mb, "alliance_exchange")
    at_b = MemberClient(b.client, mb["auth"]["Authorization"].removeprefix("Bearer "))
    done = at_b.redeem_from(home.accounts("pw"), 40, signed=home.signed)
    assert [(r["status"], r["ap_amount"]) for r in done] == [("confirmed", 30), ("confirmed", 10)]
    assert [world.alliance.points.balance_of(addr) for addr in to] == [0, 10]
    assert at_b.balance()["points"] == 100 + 40 * 5
    text = b.client.get("/v1/brand").json()["purposes"]["alliance_exchange"]
    assert all(w in text for w in ("public and permanent", "wallet address", "fresh address", "links each address"))


def test_a_read_the_gateway_dropped_unanswered_is_sent_once_more_and_a_write_never():
    """A gateway closes an idle kept-alive connection just as a request goes out (uvicorn's keep-alive
    timeout): no answer comes. A read is sent again on a fresh connection; a write is left to the caller,
    who knows whether it may repeat it (an idempotency key)."""
    import socket
    import threading

    import httpx
    import pytest

    listener = socket.create_server(("127.0.0.1", 0))
    seen: list[bytes] = []

    def serve() -> None:  # the first connection of each pair closed unanswered, the second answered
        for n in range(4):
            conn, _ = listener.accept()
            with conn:
                request = b""
                while b"\r\n\r\n" not in request:  # the whole request, so that closing sends no reset
                    request += conn.recv(65536)
                head, _, body = request.partition(b"\r\n\r\n")
                length = next((int(line.split(b":")[1]) for line in head.lower().split(b"\r\n") if line.startswith(b"content-length:")), 0)
                while len(body) < length:
                    body += conn.recv(65536)
                seen.append(request.split(b" ", 1)[0])
                if n % 2:
                    answer = b'{"brand_id": "cafe"}'
                    conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
                                 b"connection: close\r\n\r\n%s" % (len(answer), answer))

    threading.Thread(target=serve, daemon=True).start()
    client = MemberClient(httpx.Client(base_url=f"http://127.0.0.1:{listener.getsockname()[1]}", timeout=10))
    assert client.brand() == {"brand_id": "cafe"} and seen == [b"GET", b"GET"]
    with pytest.raises(httpx.TransportError):
        client._call("POST", "/v1/me/exchanges", json={"ap_amount": 1})
    assert seen == [b"GET", b"GET", b"POST"]
    listener.close()
