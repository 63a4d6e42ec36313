"""Brand-local pseudonyms for raw identifiers (phone, e-mail, card number).

A gateway never keys anything on a raw identifier.  It keys on::

    pid = "v<version>." + hex(HMAC-SHA256(pepper_<version>, "<kind>:<normalised>"))

* The pepper is a brand secret (>= 32 bytes), so the same person gets unrelated
  pseudonyms at different brands and a leaked table cannot be reversed by
  hashing a phone-number list without the pepper.
* The ``kind`` prefix separates domains: a card number and a phone number with
  the same digits never collide.
* The version travels inside the pseudonym, so after a pepper rotation the
  gateway can look a member up under every known pepper
  (:meth:`Pseudonymiser.lookup_candidates`) and re-key rows it finds under an
  old version (:meth:`Pseudonymiser.needs_rekey`).

Normalisation decides which spellings are "the same identifier"; it must be
stable across releases, because changing it orphans every stored pseudonym.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import unicodedata
from collections.abc import Mapping
from typing import Final, Literal

import idna
import phonenumbers

from privacy.errors import IdentifierError, KeyMaterialError

__all__ = [
    "IDENTIFIER_KINDS",
    "MIN_PEPPER_BYTES",
    "IdentifierKind",
    "KeyedHasher",
    "Pseudonymiser",
    "luhn_valid",
    "normalise",
    "normalise_card",
    "normalise_email",
    "normalise_phone",
    "parse_pseudonym",
]

IdentifierKind = Literal["phone", "email", "card"]
IDENTIFIER_KINDS: Final[frozenset[str]] = frozenset({"phone", "email", "card"})
MIN_PEPPER_BYTES: Final = 32
# Anything longer than this is not an identifier; refuse before doing work on it.
_MAX_INPUT_CHARS: Final = 320

_PSEUDONYM_RE: Final = re.compile(r"v([1-9][0-9]{0,8})\.([0-9a-f]{64})")
# RFC 5322 "atext" minus nothing, plus "." handled separately; any non-ASCII
# letter is allowed as well (RFC 6531 internationalised local parts).
_LOCAL_FORBIDDEN: Final = frozenset('"(),:;<>@[\\]')
_LABEL_RE: Final = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")


# --------------------------------------------------------------------------
# normalisation
# --------------------------------------------------------------------------


def _require_text(value: object) -> str:
    if not isinstance(value, str):
        raise IdentifierError(f"identifier must be a string, got {type(value).__name__}")
    if len(value) > _MAX_INPUT_CHARS:
        raise IdentifierError("identifier is too long")
    return value


def normalise_phone(value: str, default_region: str | None = None) -> str:
    """Return ``value`` as an E.164 string (``+8613812345678``).

    ``default_region`` (ISO 3166 alpha-2, e.g. ``"CN"``) is used only when the
    number has no ``+`` country code.  Numbers that ``phonenumbers`` does not
    consider valid for their region are rejected, so a typo does not silently
    enrol a second member.
    """
    text = _require_text(value).strip()
    region = default_region.upper() if default_region else None
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException as exc:
        if exc.error_type == phonenumbers.NumberParseException.INVALID_COUNTRY_CODE:
            raise IdentifierError("phone number has no valid country code (and no default region)") from None
        raise IdentifierError("not a phone number") from None
    if not phonenumbers.is_valid_number(number):
        raise IdentifierError("phone number is not valid for its region")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def normalise_email(value: str) -> str:
    """Return ``local@domain`` stripped, case-folded, with an IDNA (A-label) domain.

    The local part is case-folded too: strictly it is case-sensitive, but no
    mainstream provider treats it so, and a member typing ``Alice@`` at one
    till and ``alice@`` at another must be one member.  Sub-addressing
    (``+tag``) and dots are kept as typed because providers disagree on them.
    """
    text = unicodedata.normalize("NFC", _require_text(value).strip())
    if text.count("@") != 1:
        raise IdentifierError("e-mail address must contain exactly one '@'")
    local, domain = text.split("@")
    local = local.casefold()
    if not 1 <= len(local) <= 64:
        raise IdentifierError("e-mail local part must be 1 to 64 characters")
    if local.startswith(".") or local.endswith(".") or ".." in local:
        raise IdentifierError("e-mail local part has a misplaced '.'")
    for ch in local:
        if ch in _LOCAL_FORBIDDEN or ch.isspace() or unicodedata.category(ch).startswith("C"):
            raise IdentifierError("e-mail local part contains a forbidden character")
    domain = domain.rstrip(".").casefold()
    if not domain:
        raise IdentifierError("e-mail address has no domain")
    try:
        ascii_domain = idna.encode(domain, uts46=True).decode("ascii")
    except (idna.IDNAError, UnicodeError):
        raise IdentifierError("e-mail domain is not a valid IDNA name") from None
    labels = ascii_domain.split(".")
    if len(labels) < 2 or len(ascii_domain) > 253:
        raise IdentifierError("e-mail domain must be a fully qualified name")
    if not all(_LABEL_RE.fullmatch(label) for label in labels):
        raise IdentifierError("e-mail domain has an invalid label")
    if labels[-1].isdigit():
        raise IdentifierError("e-mail domain must not end in a numeric label")
    result = f"{local}@{ascii_domain}"
    if len(result) > 254:
        raise IdentifierError("e-mail address is too long")
    return result


def luhn_valid(digits: str) -> bool:
    """True if the ASCII digit string passes the Luhn (mod 10) check."""
    if not digits or not digits.isascii() or not digits.isdigit():
        return False
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def normalise_card(value: str) -> str:
    """Return the card number as 12-19 ASCII digits that pass the Luhn check.

    Spaces and hyphens (as printed on cards and receipts) are removed; any
    other character is an error rather than silently dropped.
    """
    text = unicodedata.normalize("NFKC", _require_text(value))
    digits = text.replace(" ", "").replace("-", "")
    if not digits.isascii() or not digits.isdigit():
        raise IdentifierError("card number may contain only digits, spaces and hyphens")
    if not 12 <= len(digits) <= 19:
        raise IdentifierError("card number must have 12 to 19 digits")
    if not luhn_valid(digits):
        raise IdentifierError("card number fails the Luhn check")
    return digits


def normalise(kind: str, value: str, default_region: str | None = None) -> str:
    """Normalise ``value`` of the given ``kind`` ("phone", "email" or "card").

    Raises :class:`IdentifierError` if the kind is unknown or the value does
    not normalise.  ``default_region`` applies to phones only.
    """
    if kind == "phone":
        return normalise_phone(value, default_region)
    if kind == "email":
        return normalise_email(value)
    if kind == "card":
        return normalise_card(value)
    raise IdentifierError(f"unknown identifier kind {kind!r}; expected one of {sorted(IDENTIFIER_KINDS)}")


# --------------------------------------------------------------------------
# keyed hashing
# --------------------------------------------------------------------------


class KeyedHasher:
    """HMAC-SHA256 with a key fixed at construction.

    The key schedule (inner/outer pads) is computed once; each call copies the
    keyed prototype, which roughly halves the cost of ``hmac.digest`` per
    identifier.  This is the only HMAC code path the pseudonymiser uses, so the
    RFC 4231 known-answer tests exercise exactly what production runs.
    """

    __slots__ = ("_proto",)

    def __init__(self, key: bytes) -> None:
        if not isinstance(key, (bytes, bytearray)) or not key:
            raise KeyMaterialError("HMAC key must be non-empty bytes")
        self._proto = hmac.new(bytes(key), digestmod=hashlib.sha256)

    def digest(self, message: bytes) -> bytes:
        """Return the 32-byte HMAC-SHA256 of ``message``."""
        h = self._proto.copy()
        h.update(message)
        return h.digest()

    def __repr__(self) -> str:
        return "KeyedHasher(<secret>)"


def parse_pseudonym(pseudonym: str) -> tuple[int, str]:
    """Split ``"v2.<64 hex>"`` into ``(2, "<64 hex>")``; raise :class:`IdentifierError` otherwise."""
    m = _PSEUDONYM_RE.fullmatch(pseudonym) if isinstance(pseudonym, str) else None
    if m is None:
        raise IdentifierError("not a pseudonym of the form v<version>.<64 hex digits>")
    return int(m.group(1)), m.group(2)


class Pseudonymiser:
    """Turns identifiers into versioned brand-local pseudonyms.

    ``peppers`` maps version number (>= 1) to pepper bytes (>= 32 bytes);
    ``current_version`` is the pepper new pseudonyms are made with.  Keep old
    versions in the map until every row has been re-keyed, then drop them.
    """

    __slots__ = ("_current", "_hashers", "_order", "default_region")

    def __init__(
        self,
        peppers: Mapping[int, bytes],
        current_version: int,
        *,
        default_region: str | None = None,
    ) -> None:
        if not peppers:
            raise KeyMaterialError("at least one pepper is required")
        hashers: dict[int, KeyedHasher] = {}
        for version, pepper in peppers.items():
            if isinstance(version, bool) or not isinstance(version, int) or version < 1:
                raise KeyMaterialError("pepper versions must be positive integers")
            if not isinstance(pepper, (bytes, bytearray)) or len(pepper) < MIN_PEPPER_BYTES:
                raise KeyMaterialError(f"pepper v{version} must be at least {MIN_PEPPER_BYTES} bytes")
            hashers[version] = KeyedHasher(bytes(pepper))
        if current_version not in hashers:
            raise KeyMaterialError(f"current pepper version v{current_version} is not among the peppers")
        self._hashers = hashers
        self._current = current_version
        # Current first, then newest to oldest: most lookups hit early.
        self._order = [current_version] + sorted((v for v in hashers if v != current_version), reverse=True)
        self.default_region = default_region

    @property
    def current_version(self) -> int:
        """The pepper version used for new pseudonyms."""
        return self._current

    @property
    def versions(self) -> tuple[int, ...]:
        """Known pepper versions, current first."""
        return tuple(self._order)

    def normalise(self, kind: str, value: str) -> str:
        """:func:`normalise` with this pseudonymiser's default phone region."""
        return normalise(kind, value, default_region=self.default_region)

    def pseudonym_of_normalised(self, kind: str, normalised: str, *, version: int | None = None) -> str:
        """Pseudonym of an identifier that is *already* normalised (no validation).

        Use this for batch re-keying of values that came out of :func:`normalise`;
        anything else should call :meth:`pseudonym`.
        """
        v = self._current if version is None else version
        hasher = self._hashers.get(v)
        if hasher is None:
            raise KeyMaterialError(f"unknown pepper version v{v}")
        return f"v{v}.{hasher.digest(f'{kind}:{normalised}'.encode()).hex()}"

    def pseudonym(self, kind: str, value: str) -> str:
        """Pseudonym of ``value`` under the current pepper."""
        return self.pseudonym_of_normalised(kind, self.normalise(kind, value))

    def lookup_candidates(self, kind: str, value: str) -> list[str]:
        """Pseudonyms of ``value`` under every known pepper, current version first.

        A gateway queries ``WHERE pid IN (...)``; a hit on an older version
        means the member enrolled before a rotation and should be re-keyed to
        ``candidates[0]``.
        """
        normalised = self.normalise(kind, value)
        return [self.pseudonym_of_normalised(kind, normalised, version=v) for v in self._order]

    def needs_rekey(self, pseudonym: str) -> bool:
        """True if ``pseudonym`` was made under a pepper other than the current one."""
        version, _ = parse_pseudonym(pseudonym)
        return version != self._current

    def __repr__(self) -> str:
        return f"Pseudonymiser(versions={list(self._order)}, current=v{self._current})"
