"""Envelope encryption of member PII, and erasure by crypto-shredding.

Layout::

    KEK (brand key-encryption key, AES-256, lives in a key file / KMS)
      └─ wraps, per member, a random AES-256 data key (DEK)  -> WrappedKey row
            └─ encrypts each PII field with AES-256-GCM     -> ciphertext column

* The DEK is wrapped with AES-256-GCM under the KEK; the wrap's associated
  data binds it to the member reference and the DEK id, so a wrapped key copied
  onto another member's row does not unwrap.
* Each field ciphertext is ``0x01 || nonce(12) || ciphertext+tag``; its
  associated data is (member_ref, field name, DEK id), so a ciphertext moved to
  another member, another field or another key fails to decrypt.
* KEK rotation re-wraps DEKs (:meth:`Vault.rewrap`); field ciphertexts are not
  touched because the DEK itself does not change.

Erasure (crypto-shredding)
--------------------------
The storage layer deletes the member's wrapped DEK and PII rows; :meth:`Vault.shred`
returns :class:`ErasureEvidence` naming the SHA-256 fingerprint of the wrapped
key that was destroyed.  What this proves, and what it does not:

* Provable: a given wrapped key (by fingerprint) is no longer present in a
  store that an auditor can enumerate (:meth:`ErasureEvidence.confirms_absence`),
  and any surviving ciphertext (a replica, a backup of the PII table) is
  unreadable without that key - AES-256-GCM under a random 256-bit key.
* Not provable by software: that no copy of the wrapped key survives in a
  backup, a log or another process's memory.  Backups of the key table must
  expire on a known schedule, and the unwrapped-key cache below is bounded in
  both size and age so a shredded key stops working in every worker process
  within ``cache_ttl`` seconds.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from privacy._timefmt import format_rfc3339, utc_now_rfc3339
from privacy.errors import (
    DecryptionError,
    KeyMaterialError,
    KeyShreddedError,
    UnknownKeyError,
    VaultError,
)

__all__ = [
    "ErasureEvidence",
    "KeyEncryptionKey",
    "ShreddingCertificate",
    "Vault",
    "WrappedKey",
    "wrapped_key_fingerprint",
]

_KEY_BYTES = 32
_NONCE_BYTES = 12
_TAG_BYTES = 16
_FIELD_FORMAT = b"\x01"
_WRAP_LABEL = b"loyalty-alliance/vault/dek-wrap/v1"
_FIELD_LABEL = b"loyalty-alliance/vault/field/v1"
_FINGERPRINT_LABEL = b"loyalty-alliance/vault/wrapped-key/v1"


def _frame(*parts: bytes) -> bytes:
    """Length-prefix each part so no two different tuples share an encoding."""
    return b"".join(len(p).to_bytes(4, "big") + p for p in parts)


def _text(name: str, value: object) -> bytes:
    if not isinstance(value, str) or not value:
        raise VaultError(f"{name} must be a non-empty string")
    if len(value) > 512:
        raise VaultError(f"{name} is too long")
    return value.encode()


@dataclass(frozen=True, slots=True, eq=False, repr=False)
class KeyEncryptionKey:
    """A brand's AES-256 key-encryption key and its id (the id is stored with each wrapped key)."""

    kek_id: str
    key: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.kek_id, str) or not self.kek_id or len(self.kek_id) > 64:
            raise KeyMaterialError("kek_id must be a non-empty string of at most 64 characters")
        if not isinstance(self.key, (bytes, bytearray)) or len(self.key) != _KEY_BYTES:
            raise KeyMaterialError("a key-encryption key must be exactly 32 bytes (AES-256)")
        object.__setattr__(self, "key", bytes(self.key))

    @classmethod
    def generate(cls, kek_id: str) -> KeyEncryptionKey:
        """A fresh random KEK."""
        return cls(kek_id, secrets.token_bytes(_KEY_BYTES))

    def __repr__(self) -> str:
        return f"KeyEncryptionKey(kek_id={self.kek_id!r}, key=<secret>)"


@dataclass(frozen=True, slots=True)
class WrappedKey:
    """A member's data key wrapped under a KEK: what the storage layer keeps per member."""

    dek_id: str
    kek_id: str
    wrapped: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.dek_id, str) or not self.dek_id:
            raise VaultError("dek_id must be a non-empty string")
        if not isinstance(self.kek_id, str) or not self.kek_id:
            raise VaultError("kek_id must be a non-empty string")
        if not isinstance(self.wrapped, bytes) or len(self.wrapped) != _NONCE_BYTES + _KEY_BYTES + _TAG_BYTES:
            raise VaultError("wrapped key has the wrong length")

    @property
    def fingerprint(self) -> str:
        """SHA-256 (hex) of this wrapped key; see :func:`wrapped_key_fingerprint`."""
        return wrapped_key_fingerprint(self)

    def to_record(self) -> dict[str, str]:
        """Plain strings for a database row."""
        return {
            "dek_id": self.dek_id,
            "kek_id": self.kek_id,
            "wrapped": base64.b64encode(self.wrapped).decode("ascii"),
        }

    @classmethod
    def from_record(cls, record: Mapping[str, str]) -> WrappedKey:
        """Inverse of :meth:`to_record`."""
        try:
            return cls(
                dek_id=record["dek_id"],
                kek_id=record["kek_id"],
                wrapped=base64.b64decode(record["wrapped"], validate=True),
            )
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, VaultError):
                raise
            raise VaultError("malformed wrapped-key record") from None


def wrapped_key_fingerprint(wrapped: WrappedKey) -> str:
    """SHA-256 over (kek_id, dek_id, wrapped bytes): names a wrapped key without revealing it."""
    return hashlib.sha256(
        _frame(_FINGERPRINT_LABEL, wrapped.kek_id.encode(), wrapped.dek_id.encode(), wrapped.wrapped)
    ).hexdigest()


@dataclass(frozen=True, slots=True)
class ErasureEvidence:
    """Record that a member's data key was crypto-shredded.

    Keep it in the audit log.  ``wrapped_key_sha256`` lets an auditor check
    that the key is gone from any store they can enumerate
    (:meth:`confirms_absence`); the ciphertexts that key protected are then
    unreadable.  It cannot prove that no unaudited copy exists.
    """

    member_ref: str
    dek_id: str
    kek_id: str
    wrapped_key_sha256: str
    shredded_at: str
    method: str = "crypto-shredding: AES-256 data key destroyed; AES-256-GCM ciphertexts unrecoverable"

    def confirms_absence(self, stored_fingerprints: Iterable[str]) -> bool:
        """True if the destroyed key's fingerprint is not among ``stored_fingerprints``."""
        return all(fp != self.wrapped_key_sha256 for fp in stored_fingerprints)

    def to_dict(self) -> dict[str, str]:
        """JSON-ready form."""
        return {
            "member_ref": self.member_ref,
            "dek_id": self.dek_id,
            "kek_id": self.kek_id,
            "wrapped_key_sha256": self.wrapped_key_sha256,
            "shredded_at": self.shredded_at,
            "method": self.method,
        }


#: The brief's other name for the same record.
ShreddingCertificate = ErasureEvidence


class _DataKeyCache:
    """Bounded, time-limited LRU of unwrapped data keys (as ready AESGCM objects).

    Unwrapping costs one AES-GCM decryption plus building a cipher context;
    caching it makes a batch of fields for one member cost one unwrap.  The
    TTL bounds how long a key shredded by *another* process stays usable here.
    """

    def __init__(self, maxsize: int, ttl: float) -> None:
        self._maxsize = maxsize
        self._ttl = ttl
        self._items: OrderedDict[tuple[str, str, bytes, str], tuple[AESGCM, float]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[str, str, bytes, str]) -> AESGCM | None:
        if self._maxsize == 0:
            return None
        with self._lock:
            item = self._items.get(key)
            if item is None:
                return None
            if item[1] < time.monotonic():
                del self._items[key]
                return None
            self._items.move_to_end(key)
            return item[0]

    def put(self, key: tuple[str, str, bytes, str], value: AESGCM) -> None:
        if self._maxsize == 0:
            return
        with self._lock:
            self._items[key] = (value, time.monotonic() + self._ttl)
            self._items.move_to_end(key)
            while len(self._items) > self._maxsize:
                self._items.popitem(last=False)

    def evict_dek(self, kek_id: str, dek_id: str) -> None:
        with self._lock:
            for k in [k for k in self._items if k[0] == kek_id and k[1] == dek_id]:
                del self._items[k]

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def __len__(self) -> int:
        return len(self._items)


class Vault:
    """Envelope encryption under a brand's key-encryption keys.

    ``keks`` maps kek_id to key; ``current_kek_id`` wraps new data keys.  Keep
    retired KEKs in the map until :meth:`rewrap` has moved every wrapped key.
    Thread-safe.
    """

    def __init__(
        self,
        keks: Mapping[str, KeyEncryptionKey],
        current_kek_id: str,
        *,
        cache_size: int = 1024,
        cache_ttl: float = 60.0,
        reload: Callable[[], tuple[Mapping[str, KeyEncryptionKey], str]] | None = None,
    ) -> None:
        if cache_size < 0 or cache_ttl <= 0:
            raise VaultError("cache_size must be >= 0 and cache_ttl > 0")
        self._cache = _DataKeyCache(cache_size, cache_ttl)
        self._reload = reload
        self.load_keks(keks, current_kek_id)

    def load_keks(self, keks: Mapping[str, KeyEncryptionKey], current_kek_id: str) -> None:
        """Hold exactly ``keks`` from now on (a KEK left out is forgotten, with every data key
        cached under it), wrapping new data keys under ``current_kek_id``."""
        if not keks:
            raise KeyMaterialError("at least one key-encryption key is required")
        ciphers: dict[str, AESGCM] = {}
        for kek_id, kek in keks.items():
            if not isinstance(kek, KeyEncryptionKey):
                raise KeyMaterialError("keks must map ids to KeyEncryptionKey objects")
            if kek_id != kek.kek_id:
                raise KeyMaterialError(f"kek mapping key {kek_id!r} differs from the key's own id")
            ciphers[kek_id] = AESGCM(kek.key)
        if current_kek_id not in ciphers:
            raise KeyMaterialError(f"current KEK {current_kek_id!r} is not among the keys")
        self._ring = (ciphers, current_kek_id)  # one attribute: a reload swaps both at once
        self._cache.clear()

    def refresh(self) -> None:
        """Read the KEKs again from where they are kept (another process rotated them)."""
        if self._reload is not None:
            self.load_keks(*self._reload())

    @property
    def current_kek_id(self) -> str:
        """The KEK new data keys are wrapped under."""
        return self._ring[1]

    def __repr__(self) -> str:
        keks, current = self._ring
        return f"Vault(kek_ids={sorted(keks)}, current={current!r})"

    # -- data keys ---------------------------------------------------------

    def _wrap(self, dek: bytes, dek_id: str, member_ref: bytes) -> WrappedKey:
        nonce = os.urandom(_NONCE_BYTES)
        keks, current = self._ring
        aad = _frame(_WRAP_LABEL, member_ref, dek_id.encode(), current.encode())
        return WrappedKey(dek_id, current, nonce + keks[current].encrypt(nonce, dek, aad))

    def _unwrap_raw(self, wrapped: WrappedKey, member_ref: bytes) -> bytes:
        kek = self._ring[0].get(wrapped.kek_id)
        if kek is None and self._reload is not None:
            self.refresh()
            kek = self._ring[0].get(wrapped.kek_id)
        if kek is None:
            raise UnknownKeyError(f"data key is wrapped under unknown KEK {wrapped.kek_id!r}")
        aad = _frame(_WRAP_LABEL, member_ref, wrapped.dek_id.encode(), wrapped.kek_id.encode())
        try:
            return kek.decrypt(wrapped.wrapped[:_NONCE_BYTES], wrapped.wrapped[_NONCE_BYTES:], aad)
        except InvalidTag:
            raise DecryptionError("data key does not unwrap for this member (wrong member, KEK or tampered)") from None

    def _data_key(self, wrapped: WrappedKey | None, member_ref: str) -> tuple[AESGCM, str]:
        """The member's ready cipher and its DEK id (for the field AAD)."""
        if wrapped is None:
            raise KeyShreddedError("the member's data key has been shredded")
        if not isinstance(wrapped, WrappedKey):
            raise VaultError("wrapped must be a WrappedKey or None")
        ref = _text("member_ref", member_ref)
        cache_key = (wrapped.kek_id, wrapped.dek_id, wrapped.wrapped, member_ref)
        aead = self._cache.get(cache_key)
        if aead is None:
            aead = AESGCM(self._unwrap_raw(wrapped, ref))
            self._cache.put(cache_key, aead)
        return aead, wrapped.dek_id

    def new_data_key(self, member_ref: str) -> WrappedKey:
        """Make a random 256-bit data key for ``member_ref`` and return it wrapped."""
        ref = _text("member_ref", member_ref)
        return self._wrap(secrets.token_bytes(_KEY_BYTES), secrets.token_hex(16), ref)

    def rewrap(self, wrapped: WrappedKey | None, member_ref: str) -> WrappedKey:
        """Re-wrap ``wrapped`` under the current KEK (same DEK, so ciphertexts stay valid).

        Returns ``wrapped`` itself if it is already under the current KEK.
        """
        if wrapped is None:
            raise KeyShreddedError("the member's data key has been shredded")
        if wrapped.kek_id == self._ring[1]:
            return wrapped
        ref = _text("member_ref", member_ref)
        return self._wrap(self._unwrap_raw(wrapped, ref), wrapped.dek_id, ref)

    # -- fields ------------------------------------------------------------

    @staticmethod
    def _field_aad(member_ref: str, field_name: str, dek_id: str) -> bytes:
        return _frame(_FIELD_LABEL, _text("member_ref", member_ref), _text("field", field_name), dek_id.encode())

    def encrypt_field(self, wrapped: WrappedKey | None, member_ref: str, field: str, plaintext: str) -> bytes:
        """Encrypt one PII field value with the member's data key (AES-256-GCM, random 96-bit nonce)."""
        if not isinstance(plaintext, str):
            raise VaultError("plaintext must be a string")
        aead, dek_id = self._data_key(wrapped, member_ref)
        nonce = os.urandom(_NONCE_BYTES)
        aad = self._field_aad(member_ref, field, dek_id)
        return _FIELD_FORMAT + nonce + aead.encrypt(nonce, plaintext.encode("utf-8"), aad)

    def decrypt_field(self, wrapped: WrappedKey | None, member_ref: str, field: str, ciphertext: bytes) -> str:
        """Decrypt a value made by :meth:`encrypt_field`.

        ``wrapped=None`` (the key row is gone) raises :class:`KeyShreddedError`;
        a ciphertext from another member, field or key raises :class:`DecryptionError`.
        """
        aead, dek_id = self._data_key(wrapped, member_ref)
        if (
            not isinstance(ciphertext, (bytes, bytearray))
            or len(ciphertext) < 1 + _NONCE_BYTES + _TAG_BYTES
            or ciphertext[:1] != _FIELD_FORMAT
        ):
            raise DecryptionError("not a vault field ciphertext")
        aad = self._field_aad(member_ref, field, dek_id)
        try:
            plain = aead.decrypt(bytes(ciphertext[1 : 1 + _NONCE_BYTES]), bytes(ciphertext[1 + _NONCE_BYTES :]), aad)
        except InvalidTag:
            raise DecryptionError("field does not decrypt for this member, field and key") from None
        return plain.decode("utf-8")

    def encrypt_fields(
        self, wrapped: WrappedKey | None, member_ref: str, values: Mapping[str, str]
    ) -> dict[str, bytes]:
        """:meth:`encrypt_field` for each item of ``values``."""
        return {name: self.encrypt_field(wrapped, member_ref, name, value) for name, value in values.items()}

    def decrypt_fields(
        self, wrapped: WrappedKey | None, member_ref: str, ciphertexts: Mapping[str, bytes]
    ) -> dict[str, str]:
        """:meth:`decrypt_field` for each item of ``ciphertexts``."""
        return {name: self.decrypt_field(wrapped, member_ref, name, ct) for name, ct in ciphertexts.items()}

    # -- erasure -----------------------------------------------------------

    def shred(
        self,
        wrapped: WrappedKey,
        member_ref: str,
        *,
        verify_binding: bool = True,
        now: datetime | None = None,
    ) -> ErasureEvidence:
        """Forget ``wrapped`` in this process and return the evidence record.

        The caller must then delete the wrapped-key row (and the PII rows) in
        the same transaction that stores the evidence.  With
        ``verify_binding`` the key is first unwrapped to check it really
        belongs to ``member_ref``, so the evidence never certifies the
        destruction of someone else's key.
        """
        if not isinstance(wrapped, WrappedKey):
            raise VaultError("shred needs the WrappedKey being destroyed")
        ref = _text("member_ref", member_ref)
        if verify_binding:
            self._unwrap_raw(wrapped, ref)
        self._cache.evict_dek(wrapped.kek_id, wrapped.dek_id)
        try:
            shredded_at = format_rfc3339(now) if now is not None else utc_now_rfc3339()
        except (ValueError, AttributeError):
            raise VaultError("now must be a timezone-aware datetime") from None
        return ErasureEvidence(
            member_ref=member_ref,
            dek_id=wrapped.dek_id,
            kek_id=wrapped.kek_id,
            wrapped_key_sha256=wrapped.fingerprint,
            shredded_at=shredded_at,
        )

    def clear_cache(self) -> None:
        """Drop every cached unwrapped data key (e.g. on KEK revocation)."""
        self._cache.clear()
