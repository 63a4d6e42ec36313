"""A raw asyncio HTTP/1.1 load generator (keep-alive, no client library in the hot loop), run in its
own process so the client never competes with the server for the interpreter.

    python bench/loadgen.py URL PATH CONCURRENCY SECONDS HEADERS_JSON BODIES_FILE [--once]
BODIES_FILE holds one JSON body per line, sent in turn (round and round); `{n}` in a header value or
body is replaced by a unique counter (idempotency keys). With --once each line is
{"headers": {...}, "body": {...}} (a request of its own, e.g. one member's token and signed
authorisation), sent exactly once: the run ends when all are sent or the time is up.
Prints one JSON object: requests, seconds, rps, p50_ms, p99_ms, errors."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from urllib.parse import urlsplit


async def worker(host, port, path, headers, bodies, once, deadline, counter, latencies, errors):
    reader, writer = await asyncio.open_connection(host, port)
    while time.perf_counter() < deadline:
        n = next(counter)
        if once and n >= len(bodies):
            break
        line = bodies[n % len(bodies)]
        if once:
            request = json.loads(line)
            body, extra = json.dumps(request["body"]).encode(), headers | request["headers"]
        else:
            body, extra = line.replace("{n}", str(n)).encode(), headers
        head = "".join(f"{k}: {v.replace('{n}', str(n))}\r\n" for k, v in extra.items())
        request = (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                   f"Content-Length: {len(body)}\r\n{head}\r\n").encode() + body
        start = time.perf_counter()
        writer.write(request)
        status_line = await reader.readline()
        length = 0
        while True:
            line = await reader.readline()
            if line in (b"\r\n", b""):
                break
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        await reader.readexactly(length)
        latencies.append(time.perf_counter() - start)
        status = status_line.split()[1].decode()
        if not status.startswith("2"):
            errors[status] = errors.get(status, 0) + 1
    writer.close()


async def main(url, path, concurrency, seconds, headers, bodies, once=False):
    parts = urlsplit(url)
    counter = iter(range(10**12))
    latencies, errors = [], {}
    start = time.perf_counter()
    deadline = start + seconds
    await asyncio.gather(*(worker(parts.hostname, parts.port, path, headers, bodies, once, deadline, counter, latencies, errors)
                           for _ in range(concurrency)))
    elapsed = time.perf_counter() - start
    latencies.sort()
    pick = lambda q: round(latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000, 2)  # noqa: E731
    return {"requests": len(latencies), "seconds": round(elapsed, 2), "rps": round(len(latencies) / elapsed, 1),
            "p50_ms": pick(0.50), "p99_ms": pick(0.99), "errors": errors}


if __name__ == "__main__":
    url, path, concurrency, seconds, headers, bodies_file = sys.argv[1:7]
    bodies = open(bodies_file).read().splitlines()
    once = sys.argv[7:] == ["--once"]
    print(json.dumps(asyncio.run(main(url, path, int(concurrency), float(seconds), json.loads(headers), bodies, once))))
