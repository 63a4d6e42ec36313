"""Exceptions raised by the privacy package.

Every error is a ``PrivacyError``, itself a ``ValueError``: callers that only
care about "bad input" can catch ``ValueError``; callers that need to react to
a particular failure (a shredded key, a forged receipt) catch the subclass.
Messages never contain key material, pepper bytes or plaintext PII.
"""

from __future__ import annotations

__all__ = [
    "PrivacyError",
    "IdentifierError",
    "KeyMaterialError",
    "VaultError",
    "DecryptionError",
    "KeyShreddedError",
    "UnknownKeyError",
    "ReceiptError",
    "ReceiptSignatureError",
    "ChainError",
    "MerkleError",
    "DPError",
    "SuppressionError",
]


class PrivacyError(ValueError):
    """Base class of every error raised by :mod:`privacy`."""


class IdentifierError(PrivacyError):
    """An identifier (phone, e-mail, card) does not normalise or validate."""


class KeyMaterialError(PrivacyError):
    """Key material is missing, malformed, too short or of the wrong type."""


class VaultError(PrivacyError):
    """Base class of PII-vault failures."""


class DecryptionError(VaultError):
    """Authenticated decryption failed: wrong key, wrong member/field, or tampering."""


class KeyShreddedError(VaultError):
    """The member's data key has been destroyed; the ciphertext can no longer be read."""


class UnknownKeyError(VaultError):
    """A wrapped data key names a key-encryption key this vault does not hold."""


class ReceiptError(PrivacyError):
    """A consent receipt has a missing, unknown or malformed field."""


class ReceiptSignatureError(ReceiptError):
    """A consent receipt's signature does not verify under the given public key."""


class ChainError(PrivacyError):
    """A hash-chain entry or payload is malformed (not a tamper finding)."""


class MerkleError(PrivacyError):
    """Invalid arguments to a Merkle tree operation (index or size out of range)."""


class DPError(PrivacyError):
    """Invalid differential-privacy parameters."""


class SuppressionError(PrivacyError):
    """Invalid input to small-cell suppression."""
