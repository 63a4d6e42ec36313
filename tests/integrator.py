"""How an integrator's client talks to a gateway, as docs/partner-guide.md tells it to: a transport
error or a 5xx is sent again, the very same request; an accepted (202) exchange or redemption is
polled until it is final. The tests that play integrators share it."""

from __future__ import annotations

import time

import httpx

RETRY_FOR_S = 120
# One client for every thread, as an integrator keeps one: a new client per attempt builds a TLS
# context each time (30 ms of CPU), and dozens of threads retrying so starve the gateway that restarts.
CLIENT = httpx.Client(timeout=30, limits=httpx.Limits(max_connections=None, max_keepalive_connections=64))


def retrying(method: str, url: str, **kwargs) -> httpx.Response:
    deadline = time.monotonic() + RETRY_FOR_S
    while True:
        try:
            r = CLIENT.request(method, url, **kwargs)
            if r.status_code < 500:
                return r
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, f"{method} {url}: no answer within {RETRY_FOR_S} s"
        time.sleep(0.5)


def settled(url: str, kind: str, ref: str, token: str) -> dict:
    """`kind`: exchanges or redemptions."""
    deadline = time.monotonic() + RETRY_FOR_S
    while True:
        body = retrying("GET", f"{url}/v1/me/{kind}/{ref}", headers={"Authorization": f"Bearer {token}"}).json()
        if body["status"] != "pending":
            return body
        assert time.monotonic() < deadline, f"{kind} {ref} still pending"
        time.sleep(0.5)
