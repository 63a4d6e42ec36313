"""Audience overlap between two brands, by private set intersection (PSI) cardinality: how many
members they share, without either learning who.

The protocol is OpenMined's PSI (``openmined.psi``: ECDH over P-256, the responder's set sent as a
Golomb-compressed filter, cardinality only). One brand initiates, the other responds:

1. The initiator's gateway reads the members whose ``overlap_analytics`` consent is granted at that
   moment, takes each one's normalised phone (E.164) or e-mail, encrypts them under a fresh secret key
   into a PSI request, and pads it with random identifiers up to a multiple of ``PAD`` (so the
   responder learns the set's size only to within ``PAD``). It sends the request signed with the
   brand's chain key (EIP-191) to the responder.
2. The responder checks that the signature is that of a brand admitted on the alliance's chain, the
   time is fresh and the reference new, reads its own consented members the same way (padded too),
   answers the PSI setup and response, signed with its chain key, and records the read as an
   ``overlap`` processing of those members.
3. The initiator checks the answer's signature is the responder's (the admitted address its gateway
   announces), computes the intersection's size in memory, and releases only that size plus
   geometric noise (epsilon-DP, ``GATEWAY_OVERLAP_EPSILON`` per run, within a budget per peer of
   ``GATEWAY_OVERLAP_BUDGET_EPSILON`` per 30 days, counted in the audit log), and nothing at all below
   ``GATEWAY_OVERLAP_K``. It records its read as an ``overlap`` processing too.

Nothing but PSI messages (encrypted points, the filter) and the signed envelope leaves a gateway;
no identifier, pseudonym or member reference does.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import secrets
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
from eth_account import Account
from eth_account.messages import encode_defunct
from sqlalchemy import select
from sqlalchemy.orm import Session

from privacy.receipts import Purpose

from ..db import reading, transaction
from ..errors import Conflict, Forbidden, GatewayError
from ..models import AuditLogEntry, Consent, Member, Processing
from . import audit, consent, members, processings

MAX_ELEMENTS = 5_000_000  # a request's elements: more than any brand's members
PAD = 1024  # request and filter sizes are rounded up to this: a set's size shows only to within it
FPR = 1e-9  # the filter's false-positive rate: below one spurious match in a billion lookups
FRESH_S = 300  # how old (or how far ahead) a signed message may be
BUDGET_WINDOW = timedelta(days=30)
RELEASED = "overlap.released"


def _psi():
    import private_set_intersection.python as psi

    return psi


# The library's elliptic-curve work runs outside the GIL: each step is split into chunks on the
# machine's cores (the same key for every chunk, so the result is that of one call).
THREADS = max(1, min(4, os.cpu_count() or 1))


def _chunks(items: list[Any], n: int = THREADS) -> list[list[Any]]:
    size = -(-len(items) // n) or 1
    return [items[i:i + size] for i in range(0, len(items), size)] or [[]]


def psi_request(client: Any, identifiers: list[str]) -> Any:
    """The initiator's PSI request: its identifiers encrypted under the client's key."""
    psi = _psi()
    key = client.GetPrivateKeyBytes()
    with ThreadPoolExecutor(THREADS) as pool:
        parts = list(pool.map(lambda chunk: psi.client.CreateFromKey(key, False).CreateRequest(chunk), _chunks(identifiers)))
    request = psi.Request()
    request.reveal_intersection = False
    for part in parts:
        request.encrypted_elements.extend(part.encrypted_elements)
    return request


def psi_answer(server: Any, request: Any, identifiers: list[str]) -> tuple[Any, Any]:
    """The responder's (setup, response): its own set as a compressed filter, built while the request's
    elements are encrypted once more under its key."""
    psi = _psi()
    key = server.GetPrivateKeyBytes()
    elements = list(request.encrypted_elements)

    def process(chunk: list[bytes]) -> Any:
        part = psi.Request()
        part.reveal_intersection = False
        part.encrypted_elements.extend(chunk)
        return psi.server.CreateFromKey(key, False).ProcessRequest(part)

    with ThreadPoolExecutor(THREADS) as pool:
        setup = pool.submit(server.CreateSetupMessage, FPR, len(elements), identifiers, psi.DataStructure.GCS)
        parts = list(pool.map(process, _chunks(elements)))
        response = psi.Response()
        for part in parts:
            response.encrypted_elements.extend(part.encrypted_elements)
        return setup.result(), response


def psi_count(client: Any, setup: Any, response: Any) -> int:
    """The size of the intersection, from the responder's answer (the initiator's side)."""
    psi = _psi()
    key = client.GetPrivateKeyBytes()

    def count(chunk: list[bytes]) -> int:  # one client per thread: a client is not safe to share
        part = psi.Response()
        part.encrypted_elements.extend(chunk)
        return int(psi.client.CreateFromKey(key, False).GetIntersectionSize(setup, part))

    with ThreadPoolExecutor(THREADS) as pool:
        return sum(pool.map(count, _chunks(list(response.encrypted_elements))))


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (ValueError, TypeError):
        raise GatewayError(f"{what} is not base64") from None


def _digest(doc: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _sign(gw: Any, doc: dict[str, Any]) -> str:
    return "0x" + bytes(gw.chain_account.sign_message(encode_defunct(text=_digest(doc))).signature).hex()


def _signer(doc: dict[str, Any], signature: str) -> str:
    try:
        return Account.recover_message(encode_defunct(text=_digest(doc)), signature=signature)
    except Exception:  # eth_keys raises its own types for signatures that are no signatures
        raise Forbidden("the signature does not verify") from None


def _admitted(gw: Any, address: str) -> None:
    from contracts.client import BrandStatus

    if gw.alliance is None or gw.alliance.registry.status(address) != BrandStatus.ACTIVE:
        raise Forbidden(f"{address} is not a brand admitted to this alliance")


def _fresh(gw: Any, at: str) -> datetime:
    try:
        moment = datetime.fromisoformat(at)
    except (TypeError, ValueError):
        raise GatewayError("at is not an ISO 8601 time") from None
    if moment.tzinfo is None or abs((moment - gw.now()).total_seconds()) > FRESH_S:
        raise Forbidden(f"the message's time is not within {FRESH_S} s of now")
    return moment


@dataclass
class ConsentedSet:
    identifiers: list[str]
    relied_on: dict[int, int]  # member id -> seq of the consent-log entry that granted overlap_analytics
    decided_at: datetime


def consented_set(gw: Any, kind: str) -> ConsentedSet:
    """The normalised phone numbers (or e-mail addresses) of the active members whose
    overlap_analytics consent is granted now, read inside the gateway."""
    if kind not in ("phone", "email"):
        raise GatewayError("kind is phone or email")
    with transaction(gw.sessions) as session:
        consent.hold(session.connection())  # no consent changes between the check and the time recorded for it
        decided_at = gw.now()
        granted = dict(session.execute(select(Consent.member_id, Consent.log_seq).join(Member, Member.id == Consent.member_id).where(
            Consent.purpose == Purpose.OVERLAP_ANALYTICS.value, Consent.granted.is_(True), Member.status == "active")).all())
        out, relied = [], {}
        for member in session.scalars(select(Member).where(Member.id.in_(list(granted)))) if granted else []:
            value = members.pii(session, gw, member).get(kind)
            if value:
                out.append(f"{kind}:{gw.pseudonymiser.normalise(kind, value)}")  # both brands match the same form
                relied[member.id] = granted[member.id]
    return ConsentedSet(out, relied, decided_at)


def padded(identifiers: list[str]) -> list[str]:
    """The set with random identifiers added up to the next multiple of PAD (they match nothing)."""
    n = max(PAD, -(-len(identifiers) // PAD) * PAD)
    return identifiers + [f"pad:{secrets.token_hex(16)}" for _ in range(n - len(identifiers))]


def _record(gw: Any, ref: str, read: ConsentedSet, peer: str, actor: str, **details: Any) -> None:
    with transaction(gw.sessions) as session:
        processings.record(session.connection(), "overlap", ref, read.decided_at, read.relied_on)
        audit.record(session, actor, "overlap.read", gw.now(), ref=ref, peer=peer, members=len(read.relied_on), **details)


# ---------------------------------------------------------------- the responder


def respond(gw: Any, body: dict[str, Any]) -> dict[str, Any]:
    """Answer another brand's PSI request (step 2), when this brand has chosen to (GATEWAY_OVERLAP_ANSWER)."""
    if not gw.settings.overlap_answer:
        raise Forbidden("this brand does not answer overlap requests (GATEWAY_OVERLAP_ANSWER)")
    fields = {k: body.get(k) for k in ("ref", "kind", "at", "initiator", "request")}
    if not all(isinstance(v, str) for v in fields.values()) or not isinstance(body.get("signature"), str):
        raise GatewayError("ref, kind, at, initiator, request and signature are strings")
    try:
        uuid.UUID(fields["ref"])
    except ValueError:
        raise GatewayError("ref is a UUID") from None
    if _signer(fields, body["signature"]).lower() != fields["initiator"].lower():
        raise Forbidden("the request is not signed by the brand it names")
    _admitted(gw, fields["initiator"])
    _fresh(gw, fields["at"])
    ref = f"overlap:{fields['ref']}"
    with reading(gw.sessions) as session:
        if session.scalar(select(Processing.id).where(Processing.kind == "overlap", Processing.ref == ref).limit(1)) is not None:
            raise Conflict("this overlap request was answered already")
    psi = _psi()
    request = psi.Request()
    try:
        request.ParseFromString(_unb64(fields["request"], "request"))
    except Exception:
        raise GatewayError("request is not a PSI request") from None
    if not 0 < len(request.encrypted_elements) <= MAX_ELEMENTS or request.reveal_intersection:
        raise GatewayError(f"a PSI request holds 1 to {MAX_ELEMENTS:,} elements and asks for the cardinality only")
    read = consented_set(gw, fields["kind"])
    server = psi.server.CreateWithNewKey(False)  # cardinality only: the initiator never learns which
    mine = padded(read.identifiers)
    try:
        setup_message, response_message = psi_answer(server, request, mine)
        setup, response = setup_message.SerializeToString(), response_message.SerializeToString()
    except RuntimeError as exc:  # points not on the curve, and the like
        raise GatewayError(f"the PSI request is malformed: {exc}") from None
    answer = {"ref": fields["ref"], "responder": gw.brand_address, "request_sha256": hashlib.sha256(_unb64(fields["request"], "request")).hexdigest(),
              "setup": _b64(setup), "response": _b64(response)}
    _record(gw, ref, read, fields["initiator"], f"brand:{fields['initiator']}", role="responder", kind=fields["kind"])
    return answer | {"signature": _sign(gw, answer)}


# ---------------------------------------------------------------- the initiator


def _spent(session: Session, peer: str, since: datetime) -> float:
    total = 0.0
    for (payload,) in session.execute(select(AuditLogEntry.payload).where(AuditLogEntry.created_at >= since)):
        doc = json.loads(payload)
        if doc.get("action") == RELEASED and doc["details"].get("peer", "").lower() == peer.lower():
            total += float(doc["details"]["epsilon"])
    return total


def measure(gw: Any, actor: str, peer_url: str, kind: str = "phone", client: httpx.Client | None = None) -> dict[str, Any]:
    """Run the protocol with the brand at `peer_url` and release the noisy, suppressed count."""
    s = gw.settings
    if gw.alliance is None:
        raise GatewayError("overlap needs the alliance chain (the brands authenticate with their chain keys)")
    peer_url = peer_url.rstrip("/")
    if peer_url not in s.alliance_peers:  # never a URL the operator types: only the alliance's gateways
        raise GatewayError(f"{peer_url} is not one of this alliance's gateways (GATEWAY_ALLIANCE_PEERS)")
    with contextlib.nullcontext(client) if client else httpx.Client(timeout=300) as http:
        return _measure(gw, actor, peer_url, kind, http)


def _measure(gw: Any, actor: str, peer_url: str, kind: str, http: httpx.Client) -> dict[str, Any]:
    s = gw.settings
    try:
        info = http.get(peer_url + "/v1/brand").json()
        peer = str(info["address"])
    except (httpx.HTTPError, ValueError, KeyError, TypeError):
        raise GatewayError(f"{peer_url} does not answer as a brand gateway") from None
    _admitted(gw, peer)
    now = gw.now()
    with reading(gw.sessions) as session:
        if _spent(session, peer, now - BUDGET_WINDOW) + s.overlap_epsilon > s.overlap_budget_epsilon + 1e-9:
            raise Conflict(f"the overlap budget with {peer} (epsilon {s.overlap_budget_epsilon} per 30 days) is spent")
    read = consented_set(gw, kind)
    psi = _psi()
    me = psi.client.CreateWithNewKey(False)
    request = psi_request(me, padded(read.identifiers)).SerializeToString()
    fields = {"ref": str(uuid.uuid4()), "kind": kind, "at": now.isoformat(), "initiator": gw.brand_address, "request": _b64(request)}
    try:
        r = http.post(peer_url + "/v1/alliance/overlap", json=fields | {"signature": _sign(gw, fields)})
    except httpx.HTTPError as exc:
        raise GatewayError(f"{peer_url} cannot be reached: {exc}") from None
    if r.status_code != 200:
        raise GatewayError(f"{peer_url} refused: {r.text[:300]}")
    try:
        answer = r.json()
        signed = {k: answer[k] for k in ("ref", "responder", "request_sha256", "setup", "response")}
        valid = all(isinstance(v, str) for v in signed.values()) and isinstance(answer.get("signature"), str)
    except (ValueError, KeyError, TypeError):
        valid = False
    if not valid:
        raise GatewayError(f"{peer_url} answered something that is not an overlap answer")
    if _signer(signed, answer["signature"]).lower() != peer.lower() or signed["responder"].lower() != peer.lower() \
            or signed["ref"] != fields["ref"] or signed["request_sha256"] != hashlib.sha256(request).hexdigest():
        raise Forbidden("the answer is not signed by the brand asked, or not for this request")
    setup, response = psi.ServerSetup(), psi.Response()
    try:
        setup.ParseFromString(_unb64(signed["setup"], "setup"))
        response.ParseFromString(_unb64(signed["response"], "response"))
    except Exception:
        raise GatewayError(f"{peer_url} answered PSI messages that do not parse") from None
    try:
        exact = psi_count(me, setup, response)  # stays in this function: only the noisy count leaves
    except RuntimeError as exc:
        raise GatewayError(f"{peer_url} answered PSI messages that do not fit the request: {exc}") from None
    from privacy.dp import geometric_noise  # here: privacy.dp loads dp_accounting and SciPy, a second of every gateway's start

    noisy = max(0, exact + geometric_noise(s.overlap_epsilon))
    released = noisy if noisy >= s.overlap_k else None
    _record(gw, f"overlap:{fields['ref']}", read, peer, actor, role="initiator", kind=kind)
    with transaction(gw.sessions) as session:
        audit.record(session, actor, RELEASED, gw.now(), ref=fields["ref"], peer=peer, kind=kind, epsilon=s.overlap_epsilon,
                     k=s.overlap_k, shared=released)
    return {"ref": fields["ref"], "peer": peer, "kind": kind, "shared": released, "suppressed": released is None,
            "k": s.overlap_k, "epsilon": s.overlap_epsilon, "mechanism": "geometric (discrete Laplace), sensitivity 1",
            "bytes_sent": len(request), "bytes_received": len(_unb64(signed["setup"], "setup")) + len(_unb64(signed["response"], "response"))}
