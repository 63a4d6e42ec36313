"""Append-only hash-chained log (consent log, audit log).

Each entry commits to its predecessor::

    body       = JCS({"seq": seq, "payload": payload})          (RFC 8785)
    entry_hash = SHA-256(prev_hash || body)
    prev_hash of entry 0 = 32 zero bytes

so editing, deleting, inserting or reordering any stored entry breaks every
later link, and :func:`verify_chain` reports the first bad sequence number.

What a hash chain can and cannot show: it has no secret, so whoever can write
the table can also recompute every hash after a change.  Tampering is evident
only against a head the writer cannot change - a (seq, entry_hash) pair or
entry count recorded elsewhere, or the Merkle root of the bodies anchored on
chain (see :mod:`privacy.merkle`; :meth:`ChainEntry.leaf` gives the leaf).
Pass that head as ``expected_head`` / ``expected_count``; that is also the only
way to detect truncation of the newest entries.

Entries round-trip through database rows of plain strings and integers
(:meth:`ChainEntry.to_row` / :meth:`ChainEntry.from_row`).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import rfc8785

from privacy.errors import ChainError

__all__ = [
    "GENESIS_PREV_HASH",
    "ChainEntry",
    "ChainVerification",
    "HashChain",
    "entry_body",
    "verify_chain",
]

GENESIS_PREV_HASH: Final = "00" * 32
_HEX64_RE: Final = re.compile(r"[0-9a-f]{64}")


def entry_body(seq: int, payload: Mapping[str, Any]) -> bytes:
    """Canonical bytes hashed for an entry (and used as its Merkle leaf)."""
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
        raise ChainError("seq must be a non-negative integer")
    if not isinstance(payload, Mapping):
        raise ChainError("payload must be a JSON object (a mapping)")
    try:
        return rfc8785.dumps({"seq": seq, "payload": dict(payload)})
    except (rfc8785.CanonicalizationError, TypeError) as exc:
        raise ChainError(f"payload is not canonical JSON: {exc}") from None


def _entry_hash(prev_hash_hex: str, body: bytes) -> str:
    return hashlib.sha256(bytes.fromhex(prev_hash_hex) + body).hexdigest()


@dataclass(frozen=True, slots=True)
class ChainEntry:
    """One log entry; hashes are lowercase hex so the entry fits a database row as is."""

    seq: int
    payload: dict[str, Any]
    prev_hash: str
    entry_hash: str

    def body(self) -> bytes:
        """Canonical ``{"seq", "payload"}`` bytes."""
        return entry_body(self.seq, self.payload)

    def leaf(self) -> bytes:
        """The Merkle leaf for this entry (same bytes as :meth:`body`)."""
        return self.body()

    def recomputed_hash(self) -> str:
        """The entry hash implied by ``prev_hash``, ``seq`` and ``payload``."""
        return _entry_hash(self.prev_hash, self.body())

    def to_row(self) -> dict[str, Any]:
        """``{"seq": int, "payload_json": str, "prev_hash": hex, "entry_hash": hex}``."""
        self.body()  # validates seq and payload
        return {
            "seq": self.seq,
            "payload_json": rfc8785.dumps(dict(self.payload)).decode("utf-8"),
            "prev_hash": self.prev_hash,
            "entry_hash": self.entry_hash,
        }

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> ChainEntry:
        """Rebuild an entry from :meth:`to_row` output; :class:`ChainError` if the row is malformed."""
        try:
            seq, payload_json = row["seq"], row["payload_json"]
            prev_hash, entry_hash = row["prev_hash"], row["entry_hash"]
        except (KeyError, TypeError):
            raise ChainError("row needs seq, payload_json, prev_hash and entry_hash") from None
        if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
            raise ChainError("row seq must be a non-negative integer")
        for name, value in (("prev_hash", prev_hash), ("entry_hash", entry_hash)):
            if not isinstance(value, str) or not _HEX64_RE.fullmatch(value):
                raise ChainError(f"row {name} must be 64 lowercase hex digits")
        try:
            payload = json.loads(payload_json)
        except (TypeError, ValueError):
            raise ChainError("row payload_json is not JSON") from None
        if not isinstance(payload, dict):
            raise ChainError("row payload_json must be a JSON object")
        return cls(seq, payload, prev_hash, entry_hash)


def _check_head(name: str, pair: tuple[int, str]) -> None:
    try:
        seq, entry_hash = pair
    except (TypeError, ValueError):
        raise ChainError(f"{name} must be a (seq, entry_hash) pair") from None
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
        raise ChainError(f"{name} seq must be a non-negative integer")
    if not isinstance(entry_hash, str) or not _HEX64_RE.fullmatch(entry_hash):
        raise ChainError(f"{name} hash must be 64 lowercase hex digits")


class HashChain:
    """In-memory builder that appends entries after a known head.

    ``HashChain()`` starts a new log at seq 0; ``HashChain(head=(seq, entry_hash))``
    continues a stored log whose last entry is ``head``.  Entries appended here
    are kept in :attr:`entries` for writing out.
    """

    def __init__(self, *, head: tuple[int, str] | None = None) -> None:
        if head is None:
            self._next_seq, self._prev = 0, GENESIS_PREV_HASH
        else:
            _check_head("head", head)
            self._next_seq, self._prev = head[0] + 1, head[1]
        self._entries: list[ChainEntry] = []

    @property
    def head(self) -> tuple[int, str] | None:
        """``(seq, entry_hash)`` of the last entry, or ``None`` for an empty new log."""
        if self._next_seq == 0:
            return None
        return self._next_seq - 1, self._prev

    @property
    def entries(self) -> list[ChainEntry]:
        """Entries appended through this builder, oldest first (a copy)."""
        return list(self._entries)

    def __len__(self) -> int:
        return self._next_seq

    def append(self, payload: Mapping[str, Any]) -> ChainEntry:
        """Append ``payload`` (a JSON object) and return the new entry."""
        seq = self._next_seq
        body = entry_body(seq, payload)
        entry_hash = _entry_hash(self._prev, body)
        # Keep a private copy decoded from the canonical bytes, so later changes
        # to the caller's dict cannot alter what was hashed.
        entry = ChainEntry(seq, json.loads(body)["payload"], self._prev, entry_hash)
        self._entries.append(entry)
        self._next_seq, self._prev = seq + 1, entry_hash
        return entry


@dataclass(frozen=True, slots=True)
class ChainVerification:
    """Outcome of :func:`verify_chain`.  Truthy when ``ok``."""

    ok: bool
    first_bad_seq: int | None
    reason: str | None
    checked: int
    head: tuple[int, str] | None

    def __bool__(self) -> bool:
        return self.ok


def verify_chain(
    entries: Iterable[ChainEntry | Mapping[str, Any]],
    *,
    expected_head: tuple[int, str] | None = None,
    expected_count: int | None = None,
    start: tuple[int, str] | None = None,
) -> ChainVerification:
    """Check the links and hashes of ``entries`` (in stored order).

    ``entries`` may be :class:`ChainEntry` objects or database rows.
    ``start=(seq, entry_hash)`` verifies a segment that follows an already
    trusted entry; by default the first entry must be seq 0 after the genesis
    hash.  ``expected_head=(seq, entry_hash)`` and ``expected_count`` (number of
    entries from seq 0) come from an anchor outside the table; they detect
    truncation and wholesale rewrites.  ``first_bad_seq`` is the sequence
    number at which the stored log first departs from a valid one.
    """
    for name, pair in (("start", start), ("expected_head", expected_head)):
        if pair is not None:
            _check_head(name, pair)
    if start is not None and expected_head is not None and expected_head[0] < start[0]:
        raise ChainError("expected_head lies before the segment being verified")
    if start is None:
        expect_seq, prev = 0, GENESIS_PREV_HASH
    else:
        expect_seq, prev = start[0] + 1, start[1]
    anchor_seq = expected_head[0] if expected_head is not None else None
    anchor_hash: str | None = None  # hash found in the log at anchor_seq
    if start is not None and anchor_seq == start[0]:
        anchor_hash = start[1]
    checked = 0
    head: tuple[int, str] | None = start

    def bad(seq: int, reason: str) -> ChainVerification:
        return ChainVerification(False, seq, reason, checked, head)

    # One pass only: ``entries`` may be a database cursor.
    for item in entries:
        if isinstance(item, ChainEntry):
            entry = item
        else:
            try:
                entry = ChainEntry.from_row(item)
            except ChainError as exc:
                return bad(expect_seq, f"malformed row: {exc}")
        if entry.seq != expect_seq:
            kind = "missing entry" if entry.seq > expect_seq else "duplicate or out-of-order entry"
            return bad(expect_seq, f"{kind}: expected seq {expect_seq}, found seq {entry.seq}")
        if entry.prev_hash != prev:
            return bad(expect_seq, "prev_hash does not match the previous entry's hash")
        try:
            recomputed = entry.recomputed_hash()
        except (ChainError, ValueError) as exc:
            return bad(expect_seq, f"entry cannot be hashed: {exc}")
        if recomputed != entry.entry_hash:
            return bad(expect_seq, "entry_hash does not match the entry's contents")
        if entry.seq == anchor_seq:
            anchor_hash = entry.entry_hash
        prev = entry.entry_hash
        head = (entry.seq, entry.entry_hash)
        expect_seq += 1
        checked += 1

    if expected_count is not None and expect_seq < expected_count:
        return bad(expect_seq, f"log truncated: {expect_seq} entries, anchor says {expected_count}")
    if expected_head is not None:
        if anchor_hash is None:
            return bad(expect_seq, f"log truncated before anchored head seq {expected_head[0]}")
        if anchor_hash != expected_head[1]:
            return bad(expected_head[0], "entry at the anchored head seq has a different hash (log rewritten)")
    return ChainVerification(True, None, None, checked, head)
