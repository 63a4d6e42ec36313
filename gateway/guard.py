"""The request guard: what every HTTP process of the alliance (gateway, auditor console) puts in front
of parsing, so that no request can crash or stall it.

- A body larger than its route allows is refused with 413 as soon as that is known: from
  Content-Length before a byte is read, or while it streams in (chunked), without reading the rest.
- A JSON body nested deeper than `max_depth` is refused with 422 before any decoder sees it. The
  depth is measured without recursion and at C speed (escapes and strings dropped, the brackets
  left summed as +1/-1), so a body nested 100,000 deep costs a few milliseconds, not the process.
  (The recursion limit itself is back at CPython's default once the chain libraries are imported,
  see contracts.chain, so a decoder that did meet such a body would raise, not overflow the stack.)
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from email.message import Message

import numpy as np

from .errors import BODY_TOO_LARGE, INVALID_REQUEST, PROBLEM_MEDIA_TYPE, problem_body

_ESCAPE = re.compile(rb"\\.", re.DOTALL)
_NOT_STRUCTURE = bytes(b for b in range(256) if b not in b'[]{}"')
_STEP = np.zeros(256, np.int8)
_STEP[list(b"[{")] = 1
_STEP[list(b"]}")] = -1


def nesting_depth(body: bytes) -> int:
    """How deep a JSON text nests arrays and objects (0 for a scalar). For a text that is not JSON it
    bounds how deep a decoder could get before it fails (brackets inside strings never count)."""
    if b"\\" in body:
        body = _ESCAPE.sub(b"", body)  # an escaped quote or bracket is part of a string
    structure = body.translate(None, _NOT_STRUCTURE)  # brackets and quotes only: a batch shrinks ~20 times
    brackets = b"".join(structure.split(b'"')[::2])  # once escapes are gone, quotes alternate in and out
    if not brackets:
        return 0
    return int(np.cumsum(_STEP[np.frombuffer(brackets, np.uint8)], dtype=np.int64).max())


def is_json(content_type: str | None) -> bool:
    """Whether FastAPI would decode the body as JSON (it does when no Content-Type is given)."""
    if not content_type:
        return True
    message = Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (subtype == "json" or subtype.endswith("+json"))


@dataclass(frozen=True)
class Limits:
    max_bytes: int = 64 * 1024
    max_depth: int = 32
    routes: dict[str, int] = field(default_factory=dict)  # path -> its own largest body, in bytes

    def for_path(self, path: str) -> int:
        return self.routes.get(path, self.max_bytes)


class RequestGuard:
    """ASGI middleware enforcing `Limits` on every HTTP request's body before the app reads it."""

    def __init__(self, app, limits: Limits):
        self.app = app
        self.limits = limits

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        limit = self.limits.for_path(scope["path"])
        declared = headers.get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            return await _refuse(send, BODY_TOO_LARGE, f"the body may be at most {limit} bytes on this route")
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                return await _refuse(send, BODY_TOO_LARGE, f"the body may be at most {limit} bytes on this route")
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        content_type = headers.get(b"content-type")
        # (No more brackets than levels allowed: it cannot nest too deep. That is every single
        # purchase, so the measure runs only where it can matter, such as a batch.)
        if (body.count(b"[") + body.count(b"{") > self.limits.max_depth
                and is_json(content_type.decode("latin-1") if content_type else None)):
            depth = nesting_depth(body)
            if depth > self.limits.max_depth:
                return await _refuse(send, INVALID_REQUEST, f"the JSON body nests {depth} levels deep; at most "
                                                            f"{self.limits.max_depth} are accepted")
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: the client's disconnect, as the app expects

        await self.app(scope, replay, send)


async def _refuse(send, problem: tuple[int, str, str], detail: str) -> None:
    status, code, title = problem
    payload = json.dumps(problem_body(status, code, title, detail)).encode()
    # Connection: close: the rest of a refused body is never read, so the connection cannot carry another request.
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", PROBLEM_MEDIA_TYPE.encode()), (b"content-length", str(len(payload)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": payload})
