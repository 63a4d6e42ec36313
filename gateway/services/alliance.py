"""The member's side of the alliance at this brand: link a wallet, exchange brand points into
alliance points (AP), redeem AP from any brand here for brand points."""

from __future__ import annotations

import logging
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeVar

from eth_account import Account
from eth_account.messages import encode_defunct, encode_typed_data
from eth_utils import is_address, to_checksum_address
from sqlalchemy import delete, func, insert, select, tuple_
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from contracts.artifacts import error_selectors
from contracts.chain import ChainError, ContractRevert
from contracts.client import Redemption as RedemptionAuth
from privacy.receipts import Purpose

from ..db import as_utc, committed_replaying_conflicts, one_of, reading
from ..errors import (ChainRejected, ChainUnavailable, Conflict, ConsentRequired, Forbidden, GatewayError, IdempotencyMismatch,
                      MemberNotActive, NotFound, RateLimited, Unauthorised)
from ..groupcommit import FreshRead
from ..models import Consent, Exchange, Member, Redemption, WalletChallenge
from ..runtime import Gateway
from . import consent, ledger, members, programme, rewards, webhooks
from . import outbox
from .outbox import ChainJob, Outcome, Sender

log = logging.getLogger("gateway")
CHALLENGE_TTL = timedelta(minutes=10)
SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
RETRY_CHAIN_S = 5  # what a 503 for an unreachable chain tells the client to wait
T = TypeVar("T")


def canonical_signature(signature: bytes) -> None:
    """Refuse a malleable signature (EIP-2, as the contracts' ECDSA does): s in the upper half of the
    curve order, or a recovery id other than 27/28 (0/1), is a second valid-looking form of the same
    signature, which would let one authorisation be presented as two."""
    if len(signature) != 65:
        raise GatewayError("malformed signature: 65 bytes (r, s, v) expected")
    s, v = int.from_bytes(signature[32:64], "big"), signature[64]
    if not 0 < s <= SECP256K1_N // 2 or v not in (0, 1, 27, 28):
        raise GatewayError("the signature is not in canonical form (EIP-2: s in the lower half of the curve order)")


# ---------------------------------------------------------------- wallet


def wallet_challenge(session: Session, gw: Gateway, member: Member, address: str, now: datetime) -> WalletChallenge:
    members.require_active(member)
    consent.require(session, member, Purpose.ALLIANCE_EXCHANGE)
    if not is_address(address):
        raise GatewayError(f"{address!r} is not an Ethereum address")
    member = members.lock(session, member)  # concurrent requests count the same open challenges
    session.execute(delete(WalletChallenge).where(WalletChallenge.member_id == member.id, WalletChallenge.expires_at <= now))
    open_expiries = sorted(as_utc(e) for e in session.scalars(select(WalletChallenge.expires_at).where(
        WalletChallenge.member_id == member.id, WalletChallenge.used.is_(False))))
    if len(open_expiries) >= gw.settings.open_wallet_challenges:
        wait_s = max(1, -(-(open_expiries[0] - now) // timedelta(seconds=1)))
        raise RateLimited(f"{len(open_expiries)} wallet challenges are open; use one, or ask again in {wait_s} s",
                          retry_after_s=wait_s)
    challenge_id = str(uuid.uuid4())
    message = (f"Link wallet {to_checksum_address(address)} to {gw.settings.brand_name} ({gw.settings.brand_id}) "
               f"member {member.member_ref}.\nChallenge {challenge_id}, nonce {secrets.token_hex(8)}, "
               f"valid until {(now + CHALLENGE_TTL).strftime('%Y-%m-%dT%H:%M:%SZ')}.")
    row = WalletChallenge(id=challenge_id, member_id=member.id, message=message, expires_at=now + CHALLENGE_TTL, used=False)
    session.add(row)
    return row


def link_wallet(session: Session, gw: Gateway, member: Member, challenge_id: str, signature: str, now: datetime) -> str:
    """Verify the member's signature of the challenge (EIP-191) and link the recovered address."""
    members.require_active(member)
    consent.require(session, member, Purpose.ALLIANCE_EXCHANGE)
    challenge = session.get(WalletChallenge, challenge_id, with_for_update=True)
    if challenge is None or challenge.member_id != member.id:
        raise NotFound("no such challenge")
    if challenge.used or as_utc(challenge.expires_at) <= now:
        raise Conflict("the challenge has expired or was used; ask for a new one")
    raw = bytes.fromhex(signature.removeprefix("0x"))
    canonical_signature(raw)
    try:
        signer = Account.recover_message(encode_defunct(text=challenge.message), signature=raw)
    except Exception:  # eth-account raises several types for malformed signatures
        raise GatewayError("malformed signature") from None
    claimed = challenge.message.split()[2]
    if signer != claimed:
        raise Forbidden("the signature is not by the wallet being linked")
    challenge.used = True
    member.wallet_address = signer
    return signer


# ---------------------------------------------------------------- exchange (brand points -> AP)


def _ref32(ref: str) -> bytes:
    return bytes.fromhex(ref)


def _exchange_call(gw: Gateway, rows: list[Exchange]):
    # By brand points at the quoted rate version: the contract computes the AP and refuses the mint if
    # the rate changed since the quote (the debit is then reversed), so no member is paid at a stale rate.
    points = gw.alliance.points
    if len(rows) == 1:
        row = rows[0]
        return points.mint_call(row.wallet_address, row.brand_points, row.rate_version, _ref32(row.exchange_ref))
    return points.mint_batch_call([(r.wallet_address, r.brand_points, _ref32(r.exchange_ref)) for r in rows], rows[0].rate_version)


def _exchange_outcome(gw: Gateway, row: Exchange, events: list[dict]) -> Outcome | None:
    ref = _ref32(row.exchange_ref)
    for e in events:
        if e["event"] == "Issued" and e["brand"] == gw.brand_address and bytes(e["ref"]) == ref:
            return Outcome(effect=e)
    return None


def _exchange_search(gw: Gateway, row: Exchange) -> Outcome | None:
    # Slow on a long chain, and rare: only for a row whose transaction was replaced.
    events = gw.alliance.points.issued_logs(_ref32(row.exchange_ref), from_block=gw.alliance.manifest.deployed_block)
    return _exchange_outcome(gw, row, [e | {"event": "Issued"} for e in events])


def _exchanges_succeed(session: Session, gw: Gateway, done: list[tuple[Exchange, dict]]) -> None:
    now = gw.now()
    for row, effect in done:
        row.status, row.block_number, row.updated_at = "confirmed", effect["blockNumber"], now
    refs = _member_refs(session, [row.member_id for row, _ in done])
    webhooks.emit(session, "exchange.confirmed", [{"exchange_ref": row.exchange_ref, "member_ref": refs[row.member_id],
                                                   "ap_amount": row.ap_amount, "brand_points": row.brand_points} for row, _ in done], now)


def _member_refs(session: Session, member_ids: list[int]) -> dict[int, str]:
    return dict(session.execute(select(Member.id, Member.member_ref).where(Member.id.in_(set(member_ids)))).all()) if member_ids else {}


def _exchange_fail(session: Session, gw: Gateway, row: Exchange, reason: str) -> None:
    member = members.lock(session, session.get(Member, row.member_id))
    ledger.reverse_debit(session, member, session.get(ledger.LedgerTxn, row.debit_txn_id), "exchange_reversal", "alliance_out", gw.now())
    row.status, row.failure, row.updated_at = "failed", reason[:200], gw.now()


EXCHANGE_JOB = ChainJob(Exchange, "exchange_ref", lambda row: row.rate_version, _exchange_call, _exchange_outcome,
                        _exchange_search, _exchanges_succeed, _exchange_fail)


def request_exchange(session: Session, gw: Gateway, member: Member, ap_amount: int, idempotency_key: str,
                     body_hash: str, now: datetime, quote: tuple[int, int] | None = None) -> tuple[Exchange, bool]:
    """Debit the brand points and queue the mint (committed by the caller before the sender takes it).
    `quote`: the rate read before the write transaction began (`quote_or_none`); None reads it here."""
    existing = session.scalars(select(Exchange).where(Exchange.idempotency_key == idempotency_key)).first()
    if existing is not None:
        if existing.request_hash != body_hash or existing.member_id != member.id:
            raise IdempotencyMismatch("this idempotency key was used for a different request")
        return existing, True
    member = members.lock(session, member)
    members.require_active(member)
    consent.require(session, member, Purpose.ALLIANCE_EXCHANGE)
    if member.wallet_address is None:
        raise Conflict("link a wallet first")
    rate, version = quote or _rate(gw)
    brand_points = ap_amount * rate
    ref = uuid.uuid4().hex + uuid.uuid4().hex  # 32 random bytes: the on-chain mint reference
    txn = ledger.debit(session, member, "exchange", brand_points, "alliance_out", now, ref=ref)
    row = Exchange(exchange_ref=ref, idempotency_key=idempotency_key, request_hash=body_hash, member_id=member.id,
                   wallet_address=member.wallet_address, ap_amount=ap_amount, brand_points=brand_points, rate=rate,
                   rate_version=version, status="pending", debit_txn_id=txn.id, attempts=0, created_at=now, updated_at=now)
    session.add(row)
    return row, False


def quote_or_none(gw: Gateway) -> tuple[int, int] | None:
    """This brand's rate and its version, read before a write transaction begins (a chain read
    must not hold the database's write lock), or None if the chain cannot say now: the request
    then reads it again only if it needs it (a replay does not)."""
    try:
        return _rate(gw)
    except (ChainRejected, ChainUnavailable):
        return None


def _rate(gw: Gateway) -> tuple[int, int]:
    # Read for each request, never cached: it is also how a request learns the chain is away before it
    # debits anything. Concurrent requests share one read that began after they all arrived.
    if gw.rate_reads is None:
        gw.rate_reads = FreshRead(lambda: gw.alliance.registry.rate(gw.brand_address))
    try:
        return gw.rate_reads()
    except ContractRevert as exc:
        raise ChainRejected(f"the alliance contracts refused to quote this brand's rate: {exc.error}") from None
    except ChainError:
        log.warning("cannot read this brand's rate from the chain", exc_info=True)
        raise ChainUnavailable("the alliance chain cannot be reached; nothing was done", retry_after_s=RETRY_CHAIN_S) from None


def sender(gw: Gateway) -> Sender:
    return outbox.sender(gw, [EXCHANGE_JOB, REDEMPTION_JOB])


def retry_pending(gw: Gateway) -> dict[str, int]:
    """A round of the sender now (on start, periodically, on maintenance): the pending rows it saw by
    status afterwards; {} when another process of this gateway is the sender."""
    try:
        return sender(gw).round(defer=True)
    except outbox.NotLeader:
        return {}
    except ChainError:
        log.warning("the chain is unreachable; pending chain operations wait for the next round", exc_info=True)
        with reading(gw.sessions) as session:
            return {"pending": sum(session.scalar(select(func.count()).select_from(job.model).where(job.model.status == "pending"))
                                   for job in (EXCHANGE_JOB, REDEMPTION_JOB))}


async def settle(gw: Gateway, job: ChainJob, ref: str, view: Callable[[Session, object], T]) -> T:
    """Wait for the brand's sender to take the row as far as it can now, and turn its outcome into the
    API's answer: `view` of the row (confirmed, or still pending) in one read, or why not."""
    try:
        await sender(gw).settle(job, ref)
    except ChainError:
        log.warning("%s %s: the chain is unreachable; kept for the outbox", job.name, ref, exc_info=True)
        raise ChainUnavailable("the alliance chain cannot be reached; the operation is kept and completed when it can be "
                               "(look it up by its ref)", ref=ref, retry_after_s=RETRY_CHAIN_S) from None
    return await run_in_threadpool(_read, gw, job, ref, view)


def _read(gw: Gateway, job: ChainJob, ref: str, view: Callable[[Session, object], T]) -> T:
    with reading(gw.sessions) as session:
        row = session.scalars(select(job.model).where(getattr(job.model, job.ref_column) == ref)).one()
        if row.status == "failed":
            raise ChainRejected(f"the alliance contracts refused it: {row.failure}", ref=ref)
        return view(session, row)


# ---------------------------------------------------------------- redemption (AP -> brand points here)


def _authorisation(gw: Gateway, row: Redemption) -> RedemptionAuth:
    return RedemptionAuth(row.owner, gw.brand_address, row.ap_amount, int(row.nonce), row.deadline, bytes.fromhex(row.signature[2:]))


def _redemption_call(gw: Gateway, rows: list[Redemption]):
    # One alone is sent as `redeem`, which reverts with the reason (and so fails the row before any gas
    # is spent); in a batch, the contract skips a bad authorisation with RedemptionRejected.
    if len(rows) == 1:
        auth = _authorisation(gw, rows[0])
        return gw.alliance.points.contract.functions.redeem(auth.as_struct(), auth.signature)
    return gw.alliance.points.redeem_batch_call([_authorisation(gw, row) for row in rows])


def _redemption_outcome(gw: Gateway, row: Redemption, events: list[dict]) -> Outcome | None:
    nonce = int(row.nonce)
    for e in events:
        if e["event"] in ("Redeemed", "RedemptionRejected") and e["owner"] == row.owner and e["brand"] == gw.brand_address \
                and e["nonce"] == nonce:
            if e["event"] == "Redeemed":
                return Outcome(effect=e)
            return Outcome(refusal=_error_name(e["reason"]))
    return None


def _error_name(selector: bytes) -> str:
    entry = error_selectors().get(bytes(selector))
    return entry["name"] if entry else "0x" + bytes(selector).hex()


def _redemption_search(gw: Gateway, row: Redemption) -> Outcome | None:
    # Slow on a long chain, and rare: only for a row whose transaction was replaced.
    logs = gw.alliance.points.contract.events.Redeemed().get_logs(
        from_block=gw.alliance.manifest.deployed_block, argument_filters={"owner": row.owner, "brand": gw.brand_address})
    return _redemption_outcome(gw, row, [dict(e["args"]) | {"event": "Redeemed", "blockNumber": e["blockNumber"]} for e in logs])


def _redemptions_succeed(session: Session, gw: Gateway, done: list[tuple[Redemption, dict]]) -> None:
    """Credit the brand points of every redemption the chain burned (a batch: one statement per table)."""
    if not done:
        return
    now = gw.now()
    locked = members.lock_many(session, {row.member_id for row, _ in done})
    txn_ids = ledger.credit_each(session, [(locked[row.member_id], row.reward_points, row.redemption_ref) for row, _ in done],
                                 "alliance_redeem", "alliance_in", now, now + timedelta(days=programme.current(session, gw).earn.validity_days))
    for (row, effect), txn_id in zip(done, txn_ids, strict=True):
        row.status, row.credit_txn_id, row.epoch = "confirmed", txn_id, effect["epoch"]
        row.block_number, row.updated_at = effect["blockNumber"], now
    webhooks.emit(session, "redemption.confirmed", [{"redemption_ref": row.redemption_ref, "member_ref": locked[row.member_id].member_ref,
                                                     "ap_amount": row.ap_amount, "reward_points": row.reward_points} for row, _ in done], now)
    paid = [row.order_ref for row, _ in done if row.order_ref is not None]
    if paid:  # final on chain, credited: now, and only now, the rewards they pay for are granted
        rewards.pay_awaited(session, gw, paid, now)


def _redemption_fail(session: Session, gw: Gateway, row: Redemption, reason: str) -> None:
    row.status, row.failure, row.updated_at = "failed", reason[:200], gw.now()
    if row.order_ref is not None:
        rewards.release_awaited(session, row.order_ref, reason, row.updated_at)


REDEMPTION_JOB = ChainJob(Redemption, "redemption_ref", lambda row: None, _redemption_call, _redemption_outcome,
                          _redemption_search, _redemptions_succeed, _redemption_fail,
                          # every authorisation here was verified as an ECDSA signature (verify_redemption)
                          gas_limit=lambda gw, rows: gw.alliance.points.redeem_gas_limit(len(rows)))


@dataclass(frozen=True)
class VerifiedRedemption:
    """A member's authorisation whose signature was checked, by `verify_redemption`."""
    auth: RedemptionAuth
    owner: str  # the signer, checksummed


def verify_redemption(gw: Gateway, auth: RedemptionAuth, now: datetime) -> VerifiedRedemption:
    """Check a member's signed authorisation here (a clear 4xx, no gas spent on a bad one). Pure CPU,
    so a request does it before its write transaction, not while holding the write lock."""
    if to_checksum_address(auth.brand) != gw.brand_address:
        raise GatewayError("the authorisation names another brand")
    if auth.amount <= 0:
        raise GatewayError("amount must be positive")
    if auth.deadline <= int(now.timestamp()):
        raise GatewayError("the authorisation has expired")
    canonical_signature(auth.signature)
    points = gw.alliance.points
    signable = encode_typed_data(RedemptionAuth.domain(chain_id(gw), points.address), RedemptionAuth.TYPES, auth.message())
    try:
        signer = Account.recover_message(signable, signature=auth.signature)
    except Exception:
        raise GatewayError("malformed signature") from None
    if signer != to_checksum_address(auth.owner):
        raise Forbidden("the signature is not by the owner of the points")
    return VerifiedRedemption(auth, signer)


@dataclass(frozen=True)
class RedemptionItem:
    """A verified authorisation a member presents (`member_id`: the member the request is from)."""
    member_id: int
    verified: VerifiedRedemption
    quote: tuple[int, int] | None = None  # this brand's rate, read after the request arrived (`quote_or_none`)
    order_ref: str | None = None  # the reward order it pays for (`order_with_ap`)


def accept_redemptions(session: Session, gw: Gateway, items: list[RedemptionItem], now: datetime
                       ) -> list[tuple[str, bool] | GatewayError]:
    """Queue verified authorisations for the brand's sender, in order, each by exactly the rules of
    one alone: (redemption ref, replayed) or its own refusal, which never stops the others. One read per
    kind of fact and one insert for the batch, so concurrent requests grouped into one transaction
    cost a few statements, not five each. An item without a quote reads the rate here (a chain that
    cannot be reached refuses that item: nothing is accepted that the chain may not see).

    An authorisation already presented is answered as it stands (a replay) if it is the same one and
    refused if another with its nonce came first; one that failed left the nonce unused on chain and
    nothing in the ledger, so a wallet that asks the chain for its next free nonce signs it again: a
    new attempt, not a replay. Members are locked (in id order) before anything is written."""
    out: list[tuple[str, bool] | GatewayError | None] = [None] * len(items)
    keys = {(it.verified.owner, str(it.verified.auth.nonce)) for it in items}
    stored = {(row.owner, row.nonce): row for row in session.scalars(
        select(Redemption).where(tuple_(Redemption.owner, Redemption.nonce).in_(keys)).with_for_update())}
    people = members.lock_many(session, {it.member_id for it in items})
    consented = set(session.scalars(select(Consent.member_id).where(
        one_of(session, Consent.member_id, list(people)), Consent.purpose == Purpose.ALLIANCE_EXCHANGE.value, Consent.granted.is_(True))))
    new: list[dict] = []
    for i, it in enumerate(items):
        auth, key = it.verified.auth, (it.verified.owner, str(it.verified.auth.nonce))
        existing = stored.get(key)
        if existing is not None and existing.status != "failed":
            same = (existing.member_id, existing.ap_amount, existing.deadline, existing.signature) == (
                it.member_id, auth.amount, auth.deadline, "0x" + auth.signature.hex())
            out[i] = (existing.redemption_ref, True) if same else Conflict("another authorisation with this nonce was already submitted")
            continue
        member = people.get(it.member_id)
        if member is None:
            out[i] = Unauthorised("token unknown or expired")
        elif member.status != "active":
            out[i] = MemberNotActive(f"the account is {member.status}")
        elif member.id not in consented:
            out[i] = ConsentRequired(f"the member has not consented to {Purpose.ALLIANCE_EXCHANGE.value}",
                                     purpose=Purpose.ALLIANCE_EXCHANGE.value)
        elif member.wallet_address != it.verified.owner:
            # The signed authorisation names the brand but not the member account to credit: only a
            # member who has proved control of the wallet here (by linking it) may present it, so an
            # authorisation that leaks or is intercepted credits nobody else.
            out[i] = Forbidden("link this wallet to your account at this brand before redeeming its points")
        if out[i] is not None:
            continue
        try:
            rate, version = it.quote or _rate(gw)
        except GatewayError as exc:
            out[i] = exc
            continue
        fields = dict(member_id=member.id, owner=it.verified.owner, nonce=key[1], deadline=auth.deadline, ap_amount=auth.amount,
                      signature="0x" + auth.signature.hex(), reward_points=auth.amount * rate, rate=rate, rate_version=version,
                      status="pending", failure=None, credit_txn_id=None, tx_hash=None, block_number=None, epoch=None,
                      order_ref=it.order_ref, attempts=0, created_at=now, updated_at=now)
        fields["redemption_ref"] = str(uuid.uuid4())
        if existing is None:
            new.append(fields)
        else:  # a new attempt at a failed one's nonce
            for name, value in fields.items():
                setattr(existing, name, value)
        stored[key] = Redemption(**fields)  # a second presentation in this batch is a replay of this one
        out[i] = (fields["redemption_ref"], False)
    if new:
        session.execute(insert(Redemption), new)  # one executemany
    return out  # type: ignore[return-value]


def redemptions_committed(gw: Gateway, items: list[RedemptionItem]) -> list[tuple[str, bool] | GatewayError]:
    """`accept_redemptions` in a transaction of its own (concurrent requests, grouped:
    gateway/groupcommit.py): each item's redemption ref and whether it was a replay, or its refusal."""
    return committed_replaying_conflicts(gw.sessions, lambda session: accept_redemptions(session, gw, items, gw.now()))


def accept_redemption(session: Session, gw: Gateway, member: Member, verified: VerifiedRedemption, now: datetime,
                      quote: tuple[int, int] | None = None, order_ref: str | None = None) -> tuple[Redemption, bool]:
    """`accept_redemptions` for one; its refusal is raised."""
    [out] = accept_redemptions(session, gw, [RedemptionItem(member.id, verified, quote, order_ref)], now)
    if isinstance(out, GatewayError):
        raise out
    ref, replayed = out
    return session.scalars(select(Redemption).where(Redemption.redemption_ref == ref)).one(), replayed


def order_with_ap(session: Session, gw: Gateway, member: Member, code: str, verified: VerifiedRedemption, *,
                  idempotency_key: str, body_hash: str, now: datetime,
                  quote: tuple[int, int] | None = None) -> tuple[rewards.Ordered, Redemption | None]:
    """Order a reward here and pay for it with alliance points in one step: the authorisation's AP,
    at this brand's rate, must cover the points price (what is over stays in the member's balance).
    The order takes its item from stock now and waits; the redemption goes through the outbox like
    any other, and the reward is granted in the transaction that records it final on chain, or the
    order is cancelled and its item returned if the chain refuses it. Nothing is granted otherwise."""
    placed = rewards.order(session, gw, member, code, idempotency_key=idempotency_key, body_hash=body_hash, now=now, pay_now=False)
    if placed.replayed:
        return placed, session.scalars(select(Redemption).where(Redemption.order_ref == placed.order.order_ref)).first()
    # New: it holds its item in this transaction, which any refusal below rolls back.
    rate, version = quote or _rate(gw)
    price = placed.reward.points_price
    if verified.auth.amount * rate < price:
        raise GatewayError(f"reward {code!r} costs {price} points: {-(-price // rate)} AP at this brand's rate of {rate} "
                           f"points per AP; the authorisation is for {verified.auth.amount}")
    redemption, replayed = accept_redemption(session, gw, member, verified, now, (rate, version), order_ref=placed.order.order_ref)
    if replayed:
        raise Conflict("this authorisation was already presented; sign a new one (with the next free nonce)")
    return placed, redemption


def chain_id(gw: Gateway) -> int:
    """The chain's id (read once: it never changes for a deployment)."""
    try:
        return gw.alliance.chain.chain_id
    except ChainError:
        raise ChainUnavailable("the alliance chain cannot be reached", retry_after_s=RETRY_CHAIN_S) from None


def ap_balance(gw: Gateway, address: str | None) -> int | None:
    if address is None or gw.alliance is None:
        return None
    try:
        return gw.alliance.points.balance_of(address)
    except ChainError:
        return None  # the chain being unreachable must not break a balance page
