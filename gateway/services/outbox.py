"""The brand's one chain sender: every chain operation a gateway makes on a member's behalf
(exchange = mint, redemption = redeem) goes through it, so that a database write and a chain
transaction end as one outcome, and what arrives together goes out together, in one transaction.

A row starts `pending` with its ledger effect recorded (or, for redemptions, to be recorded). A
round of the sender, run by one process at a time (the holder of the brand's sender lease):
1. resolves every row whose stored transaction is mined, from its receipt: the row's own event
   succeeds it (`Issued` by ref, `Redeemed` by owner and nonce) or fails it (`RedemptionRejected`:
   a batch redemption skips a bad authorisation instead of reverting). The rows of a reverted
   transaction lost nothing and are sent again, each proven afresh (and failed after a few tries);
2. broadcasts again the same bytes of a stored transaction that may still be mined. A row whose
   transaction can never be mined (its nonce went to another) is looked for in the logs since
   deployment, and sent again only if it is not there;
3. gathers the rows without a transaction into batches (mints by rate version, redemptions), signs
   each, STORES it with its rows, and only then broadcasts it. A batch the contracts would refuse is
   split in halves until the row they refuse stands alone; it fails with the contracts' reason.
A crash anywhere leaves either nothing on chain (the rows are signed again) or a transaction that
step 1 or 2 finds: points are never lost and never doubled.

Requests wait for their row (`Sender.settle`). While one round is at the chain, what arrives
gathers for the next, so under load one transaction carries everything that came in during about
a block time, and a request that comes alone waits for nothing."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
import time
import uuid
from collections import Counter, defaultdict
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from time import monotonic
from typing import Any, Callable, Hashable, Iterator

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from contracts.chain import ChainError, ContractRevert, SignedTx

from ..db import one_of, reading, transaction, writing_first
from ..models import ChainTx, SenderLease
from ..runtime import Gateway

log = logging.getLogger("gateway")

LEASE_S = 30  # a sender that stops renewing (a dead process) is replaced after this long
RECEIPT_WAIT_S = 30.0  # how long a round waits for what it broadcast before it moves on
MAX_ATTEMPTS = 3  # signings of a row whose transactions revert on chain before it fails
ROWS_PER_ROUND = 1000  # unsent rows one round takes on (the rest wait for the next)
IDLE_S = 0.02  # a dedicated sender with nothing to send looks for new rows this often
HANDOFF_S, HANDOFF_GAP_S = 5.0, 0.3  # a busy dedicated sender lets the account go this often, this long
DEDICATED = ":dedicated"  # how a dedicated sender's lease is marked (workers defer to it)
FOLLOW_S = 0.05  # a request waiting on another process's sender reads its row this often


@dataclass(frozen=True)
class Outcome:
    """A row's fate in the chain's events: done (`effect`: the event that proves it) or refused."""

    effect: dict | None = None
    refusal: str | None = None


@dataclass(frozen=True)
class ChainJob:
    """What differs between exchanges and redemptions."""

    model: type
    ref_column: str
    batch_key: Callable[[Any], Hashable]  # rows with equal keys may share a transaction
    call: Callable[[Gateway, list], Any]  # the contract call for rows that share a key (one or many)
    outcome: Callable[[Gateway, Any, list[dict]], Outcome | None]  # the row's fate among a receipt's events
    search: Callable[[Gateway, Any], Outcome | None]  # the row's effect anywhere since deployment
    succeed: Callable[[Session, Gateway, list[tuple[Any, dict]]], None]  # rows done, with their effects
    fail: Callable[[Session, Gateway, Any, str], None]
    # A gas limit known to hold for these rows (the call is then checked, not estimated); None: estimate
    gas_limit: Callable[[Gateway, list], int | None] = lambda gw, rows: None

    @property
    def name(self) -> str:
        return self.model.__tablename__

    def ref(self, row) -> str:
        return getattr(row, self.ref_column)


class NotLeader(ChainError):
    """Another process holds the brand's sender lease."""


class Sender:
    """One per gateway process; one process at a time sends (the lease in `sender_lease`)."""

    def __init__(self, gw: Gateway, jobs: list[ChainJob]):
        self.gw = gw
        self.jobs = {job.name: job for job in jobs}
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"[:100]
        self._exclusive = threading.RLock()  # one sending thing at a time in this process
        self._guard = threading.Lock()  # the waiters and the drain thread
        self._waiters: dict[tuple[str, str], list[tuple[asyncio.AbstractEventLoop, asyncio.Future]]] = defaultdict(list)
        self._thread: threading.Thread | None = None
        self._wake = threading.Event()
        self._leased_until = datetime.min.replace(tzinfo=UTC)

    # ------------------------------------------------------------ exclusivity

    @contextmanager
    def exclusive(self, wait_s: float = 0, keep: bool = False, defer: bool = False) -> Iterator[None]:
        """Hold the brand's account for sending: in this process (a lock) and among processes (the
        lease). Raises NotLeader when another process holds it past `wait_s`. The lease is given back
        at the end unless `keep` (the drain thread keeps it while requests wait). Take it before any
        database transaction of the caller: the lease is written in one of its own."""
        deadline = monotonic() + wait_s
        with self._exclusive:
            while not self._take_lease(defer):
                if monotonic() >= deadline:
                    raise NotLeader("another process of this gateway is sending its chain transactions")
                self._wake.wait(0.2)
            try:
                yield
            finally:
                if not keep and self._thread is None:
                    self.release()

    def _take_lease(self, defer: bool = False) -> bool:
        """`defer`: not while a dedicated sender was at work in the last LEASE_S (it let the lease go
        only for a moment: sending rows is its job; anchoring, which does not defer, takes the gap)."""
        now = datetime.now(UTC)
        if self._leased_until - now > timedelta(seconds=LEASE_S / 2):
            return True
        until = now + timedelta(seconds=LEASE_S)
        free = SenderLease.expires_at < now
        if defer:
            free &= ~(SenderLease.holder.endswith(DEDICATED) & (SenderLease.expires_at > now - timedelta(seconds=LEASE_S)))
        try:
            with transaction(self.gw.sessions) as session:
                taken = session.execute(update(SenderLease).where(SenderLease.id == 1, (SenderLease.holder == self.holder) | free)
                                        .values(holder=self.holder, expires_at=until)).rowcount
                if not taken and session.get(SenderLease, 1) is None:
                    session.add(SenderLease(id=1, holder=self.holder, expires_at=until))
                    taken = 1
        except IntegrityError:  # another process made the lease first
            return False
        if taken:
            self._leased_until = until
        return bool(taken)

    def release(self, retire: bool = False) -> None:
        """Give the lease up (idle, or shutting down), so another process need not wait it out.
        `retire`: a dedicated sender stopping: the workers need not defer to it any more."""
        with self._exclusive:
            if self._leased_until > datetime.now(UTC) or retire:
                values = {"expires_at": datetime.now(UTC)} | ({"holder": self.holder.removesuffix(DEDICATED)} if retire else {})
                with transaction(self.gw.sessions) as session:
                    session.execute(update(SenderLease).where(SenderLease.id == 1, SenderLease.holder == self.holder).values(**values))
            self._leased_until = datetime.min.replace(tzinfo=UTC)

    # ------------------------------------------------------------ requests

    async def settle(self, job: ChainJob, ref: str, timeout_s: float = RECEIPT_WAIT_S + 5) -> None:
        """Wait until the row has left `pending`, or a round found the chain unreachable (raises
        ChainError), or `timeout_s` passed (the row stays pending; the sender goes on with it)."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        key = (job.name, ref)
        with self._guard:
            self._waiters[key].append((loop, future))
            if self._thread is None:
                self._thread = threading.Thread(target=self._drain, name=f"chain-sender {self.gw.settings.brand_id}", daemon=True)
                self._thread.start()
        self._wake.set()
        try:
            await asyncio.wait_for(future, timeout_s)
        except TimeoutError:
            pass
        finally:
            with self._guard:
                waiting = self._waiters.get(key, [])
                if (loop, future) in waiting:
                    waiting.remove((loop, future))
                if not waiting:
                    self._waiters.pop(key, None)

    def _drain(self) -> None:
        """Rounds for as long as requests wait, then the lease goes back. While another process holds
        the lease (a dedicated sender, another worker) this only reads its waiters' rows, every
        FOLLOW_S, and asks for the lease again once a second (it is taken over if that process dies)."""
        leader_elsewhere_until = 0.0
        while True:
            with self._guard:
                if not self._waiters:
                    self._thread = None
                    break
            self._wake.clear()
            error: Exception | None = None
            try:
                if monotonic() < leader_elsewhere_until:
                    time.sleep(FOLLOW_S)
                else:
                    self.round(keep=True, defer=True)
            except NotLeader:
                leader_elsewhere_until = monotonic() + 1.0
                time.sleep(FOLLOW_S)  # the leader sends our rows; look at them again shortly
            except ChainError as exc:
                error = exc
            except Exception as exc:  # answered to the waiters; the rows stay pending for the next round
                log.exception("a round of the chain sender failed")
                error = exc
            try:
                self._answer(error)
            except Exception:
                log.exception("the chain sender could not read its rows back")
        try:
            self.release()
        except Exception:
            log.warning("the chain sender could not give its lease back; it expires by itself", exc_info=True)

    def _answer(self, error: Exception | None) -> None:
        """Wake the waiters whose rows are settled (or all, with the round's error)."""
        with self._guard:
            keys = list(self._waiters)
        still_pending: set[tuple[str, str]] = set()
        with reading(self.gw.sessions) as session:
            for name, job in self.jobs.items():
                refs = [ref for kind, ref in keys if kind == name]
                if refs:
                    ref_column = getattr(job.model, job.ref_column)
                    still_pending |= {(name, ref) for ref in session.scalars(
                        select(ref_column).where(one_of(session, ref_column, refs), job.model.status == "pending"))}
        with self._guard:
            for key in keys:
                if key in still_pending and error is None:
                    continue
                for loop, future in self._waiters.pop(key, []):
                    try:
                        loop.call_soon_threadsafe(_resolve, future, error if key in still_pending else None)
                    except RuntimeError:  # that request's event loop has ended: nobody waits any more
                        pass

    # ------------------------------------------------------------ a round

    def run(self, stop: threading.Event) -> None:
        """The brand's dedicated sender (`alliance gateway sender`): hold the lease and send whatever
        any worker stores, until `stop`. The workers then only wait for their rows; if this process
        dies, one of them takes over when the lease runs out. The account is the brand's for other
        chain work too (anchoring takes the lease): idle, the lease is let go and new rows are looked
        for every IDLE_S; busy, it is let go for HANDOFF_GAP_S every HANDOFF_S."""
        self.holder = self.holder[:90] + DEDICATED
        held_since = monotonic()
        while not stop.is_set():
            if not self._pending_any():
                self.release()  # idle: the account is free for the brand's other chain work (anchoring)
                stop.wait(IDLE_S)
                held_since = monotonic()
                continue
            try:
                self.round(keep=True)
            except NotLeader:  # another holds it (anchoring, a worker, a second copy): its rows go out there
                stop.wait(IDLE_S)
                continue
            except ChainError:
                log.warning("the chain cannot be reached; the rows wait", exc_info=True)
                stop.wait(1.0)
                continue
            if monotonic() - held_since > HANDOFF_S:  # under steady load, a gap now and then for anchoring
                self.release()
                stop.wait(HANDOFF_GAP_S)
                held_since = monotonic()
        self.release(retire=True)

    def _pending_any(self) -> bool:
        with reading(self.gw.sessions) as session:
            return any(session.scalar(select(job.model.id).where(job.model.status == "pending").limit(1)) is not None
                       for job in self.jobs.values())

    def round(self, keep: bool = False, defer: bool = False) -> dict[str, int]:
        """One pass over every pending row. Returns the rows it saw by their status afterwards
        (pending: left for a later round). Raises ChainError when the chain cannot be reached and
        NotLeader when another process sends (or, with `defer`, a dedicated sender is at work)."""
        with self.exclusive(keep=keep, defer=defer), writing_first():
            return _Round(self).run()


def _resolve(future: asyncio.Future, error: Exception | None) -> None:
    if not future.done():  # the request may have given up waiting
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)


class _Round:
    def __init__(self, sender: Sender):
        self.sender = sender
        self.gw = sender.gw
        self.tx = self.gw.transactor()
        self.seen: dict[tuple[str, str], str] = {}  # (job, ref) -> status after this round
        self.detached: list = []  # rows whose transaction did nothing, to send again

    def run(self) -> dict[str, int]:
        stored, unsent = self._pending()
        in_flight = self._check_stored(stored)
        deadline = monotonic() + RECEIPT_WAIT_S
        for _ in range(MAX_ATTEMPTS):  # rows of a reverted transaction are proven and sent again at once
            in_flight += self._send(unsent + self.detached)
            self.detached = []
            for chain_tx, job, rows in in_flight:
                receipt = self.tx.receipt(chain_tx.hash, timeout=max(0.05, deadline - monotonic()))
                if receipt is not None:
                    self._settle(chain_tx.hash, job, rows, receipt)
            if not self.detached:
                break
            in_flight, unsent = [], []
        return dict(Counter(self.seen.values()))

    def _pending(self) -> tuple[dict[str, tuple], list]:
        """The pending rows (detached ORM objects): by stored transaction, and those without one."""
        stored: dict[str, tuple[ChainJob, list]] = {}
        unsent: list = []
        with reading(self.gw.sessions) as session:
            for job in self.sender.jobs.values():
                rows = session.scalars(select(job.model).where(job.model.status == "pending").order_by(job.model.id)).all()
                for row in rows:
                    if row.tx_hash:
                        stored.setdefault(row.tx_hash, (job, []))[1].append(row)
                    elif len(unsent) < ROWS_PER_ROUND:
                        unsent.append((job, row))
                    else:
                        continue
                    self.seen[(job.name, job.ref(row))] = "pending"
            txs = {t.hash: t for t in session.scalars(select(ChainTx).where(one_of(session, ChainTx.hash, list(stored))))} if stored else {}
        return {h: (txs.get(h), job, rows) for h, (job, rows) in stored.items()}, unsent

    def _check_stored(self, stored: dict) -> list:
        """Steps 1 and 2; returns what was broadcast again, to wait for."""
        if not stored:
            return []
        # The mined-transaction count is read BEFORE the receipts: a stored transaction mined at any
        # moment before that count shows in the receipt read after it. (The other order can miss one
        # mined in between, take it for replaced and sign its rows again: a double mint.)
        confirmed = self.tx.confirmed_nonce()
        again = []
        for tx_hash, (chain_tx, job, rows) in stored.items():
            receipt = self.tx.receipt(tx_hash)
            if receipt is not None:
                self._settle(tx_hash, job, rows, receipt)
            elif chain_tx is not None and confirmed <= chain_tx.nonce:
                again.append((chain_tx, job, rows))  # may still be mined
            else:
                self._settle(tx_hash, job, rows, None)  # replaced: it can never be mined
        if again:
            self._broadcast([chain_tx for chain_tx, _, _ in again])
        return again

    def _send(self, unsent: list) -> list:
        """Step 3: sign the batches, store them with their rows, then broadcast them."""
        if not unsent:
            return []
        groups: dict[tuple, list] = defaultdict(list)
        for job, row in unsent:
            groups[(job.name, job.batch_key(row))].append(row)
        signed: list[tuple[SignedTx, ChainJob, list]] = []
        refused: list[tuple[ChainJob, Any, str]] = []
        batch_max = self.gw.settings.chain_batch_max
        for (name, _key), rows in groups.items():
            job = self.sender.jobs[name]
            for start in range(0, len(rows), batch_max):
                self._sign(job, rows[start:start + batch_max], signed, refused)
        now = self.gw.now()
        try:
            with transaction(self.gw.sessions) as session:
                for job, row, reason in refused:
                    locked = _lock(session, job, row)
                    if locked.status == "pending" and locked.tx_hash is None:
                        job.fail(session, self.gw, locked, reason)
                        self.seen[(job.name, job.ref(row))] = locked.status
                for signed_tx, job, rows in signed:
                    session.add(ChainTx(hash=signed_tx.hash, nonce=signed_tx.nonce, raw=signed_tx.raw, created_at=now))
                    taken = session.execute(
                        update(job.model).where(job.model.id.in_([row.id for row in rows]), job.model.status == "pending",
                                                job.model.tx_hash.is_(None))
                        .values(tx_hash=signed_tx.hash, attempts=job.model.attempts + 1, updated_at=now)
                        .execution_options(synchronize_session=False)).rowcount
                    if taken != len(rows):
                        raise _Overtaken(job.ref(rows[0]))
        except _Overtaken as exc:
            # Another sender took these rows meanwhile (a lease that expired under us): nothing of
            # ours was stored, so nothing is broadcast; numbering starts again from the node.
            self.tx.renumber()
            raise ChainError(f"{exc}: another sender took this row; it is finished there") from None
        # Committed: every signed transaction is on disk before it can reach the chain.
        if self.gw.before_broadcast is not None:
            self.gw.before_broadcast([job.ref(row) for _, job, rows in signed for row in rows])
        chain_txs = [ChainTx(hash=s.hash, nonce=s.nonce, raw=s.raw, created_at=now) for s, _, _ in signed]
        self._broadcast(chain_txs)
        return [(chain_tx, job, rows) for chain_tx, (_, job, rows) in zip(chain_txs, signed)]

    def _sign(self, job: ChainJob, rows: list, signed: list, refused: list) -> None:
        """Sign one transaction for `rows`; if the contracts would refuse it, halve it until each
        refused row stands alone (k bad rows among n cost about k log n estimates)."""
        try:
            signed.append((self.tx.prepare(job.call(self.gw, rows), job.gas_limit(self.gw, rows)), job, rows))
        except ContractRevert as exc:
            if len(rows) == 1:
                refused.append((job, rows[0], str(exc)))
                return
            half = len(rows) // 2
            self._sign(job, rows[:half], signed, refused)
            self._sign(job, rows[half:], signed, refused)

    def _broadcast(self, chain_txs: list[ChainTx]) -> None:
        for chain_tx in chain_txs:
            try:
                self.tx.broadcast(SignedTx(chain_tx.raw, chain_tx.hash, chain_tx.nonce))
            except ChainError:
                raise
            except Exception as exc:  # a node refusing the bytes (e.g. the embedded chain's nonce check)
                raise ChainError(f"transaction {chain_tx.hash}: broadcast failed: {exc}") from exc

    def _settle(self, tx_hash: str, job: ChainJob, rows: list, receipt: Any | None) -> None:
        """Resolve the rows of one stored transaction: mined (its `receipt`), or replaced (None)."""
        mined = receipt is not None and receipt["status"] == 1
        events = _events(self.gw, receipt) if mined else []
        done = []
        with transaction(self.gw.sessions) as session:
            ids = [row.id for row in rows]
            locked = session.scalars(select(job.model).where(job.model.id.in_(ids)).order_by(job.model.id).with_for_update()
                                     .execution_options(populate_existing=True)).all()
            for row in locked:
                if row.status != "pending" or row.tx_hash != tx_hash:
                    continue
                if receipt is not None and not mined:
                    # Reverted: nothing happened, so the row may be sent again (and is proven afresh
                    # before it is); one whose transactions keep reverting fails.
                    if row.attempts >= MAX_ATTEMPTS:
                        job.fail(session, self.gw, row, "transaction reverted on chain")
                    else:
                        self._detach(job, row)
                    continue
                outcome = (job.outcome(self.gw, row, events) if mined else None) or job.search(self.gw, row)
                if outcome is None:  # nothing of it is on chain, and its transaction can never be mined
                    self._detach(job, row)
                elif outcome.effect is not None:
                    done.append((row, outcome.effect))
                else:
                    job.fail(session, self.gw, row, outcome.refusal or "refused")
            job.succeed(session, self.gw, done)
            for row in locked:
                self.seen[(job.name, job.ref(row))] = row.status

    def _detach(self, job: ChainJob, row: Any) -> None:
        row.tx_hash = None
        self.detached.append((job, row))


class _Overtaken(Exception):
    pass


def _lock(session: Session, job: ChainJob, row: Any) -> Any:
    return session.scalars(select(job.model).where(job.model.id == row.id).with_for_update()
                           .execution_options(populate_existing=True)).one()


def _events(gw: Gateway, receipt: Any) -> list[dict]:
    """The points contract's events in a receipt, each as its arguments plus `event` and `blockNumber`."""
    return [args | {"event": name, "blockNumber": receipt["blockNumber"]}
            for name, args in gw.alliance.points.logs(receipt, ("Issued", "Redeemed", "RedemptionRejected"))]


_SENDER_GUARD = threading.Lock()


def sender(gw: Gateway, jobs: list[ChainJob]) -> Sender:
    """The gateway's sender, made on first use."""
    with _SENDER_GUARD:
        if gw.chain_sender is None:
            gw.chain_sender = Sender(gw, jobs)
        return gw.chain_sender
