"""Brand key material: the Ed25519 receipt-signing key, the vault KEK and the pepper.

Each secret can come from a file or from an environment variable whose value
is the key itself (for container secrets).  Accepted encodings:

* signing key: PKCS#8 PEM, or base64 of the 32-byte RFC 8032 secret key;
* public key: SubjectPublicKeyInfo PEM, or base64 of the 32 raw bytes;
* KEK: base64 of 32 bytes; pepper: base64 of at least 32 bytes.

Base64 may be standard or URL-safe, padded or not.  Objects holding secrets
never print them, and nothing here logs key bytes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from privacy.errors import KeyMaterialError
from privacy.pseudonyms import MIN_PEPPER_BYTES
from privacy.vault import KeyEncryptionKey

__all__ = [
    "GeneratedKeyFiles",
    "PublicKey",
    "SigningKey",
    "derive_kek_id",
    "generate_key_files",
    "key_id_for",
    "load_kek",
    "load_pepper",
    "load_public_key",
    "load_signing_key",
    "write_private",
]

log = logging.getLogger(__name__)

_KEK_ID_LABEL = b"loyalty-alliance/kek-id/v1\x00"
SIGNING_KEY_FILE = "signing.key"
PUBLIC_KEY_FILE = "signing.pub"
KEK_FILE = "kek.key"
PEPPER_FILE = "pepper.key"


def key_id_for(public_key: PublicKey | Ed25519PublicKey | bytes) -> str:
    """Key id of an Ed25519 public key: the first 16 hex digits of SHA-256 of its 32 raw bytes."""
    if isinstance(public_key, PublicKey):
        raw = public_key.raw
    elif isinstance(public_key, Ed25519PublicKey):
        raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    elif isinstance(public_key, (bytes, bytearray)) and len(public_key) == 32:
        raw = bytes(public_key)
    else:
        raise KeyMaterialError("expected an Ed25519 public key or its 32 raw bytes")
    return hashlib.sha256(raw).hexdigest()[:16]


class PublicKey:
    """An Ed25519 public key with its key id."""

    __slots__ = ("_key", "_raw", "key_id")

    def __init__(self, key: Ed25519PublicKey) -> None:
        if not isinstance(key, Ed25519PublicKey):
            raise KeyMaterialError("expected an Ed25519 public key")
        self._key = key
        self._raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        self.key_id = hashlib.sha256(self._raw).hexdigest()[:16]

    @classmethod
    def from_raw(cls, raw: bytes) -> PublicKey:
        """From the 32-byte RFC 8032 encoding."""
        if not isinstance(raw, (bytes, bytearray)) or len(raw) != 32:
            raise KeyMaterialError("an Ed25519 public key is 32 bytes")
        try:
            return cls(Ed25519PublicKey.from_public_bytes(bytes(raw)))
        except ValueError:
            raise KeyMaterialError("not a valid Ed25519 public key") from None

    @classmethod
    def from_pem(cls, pem: bytes) -> PublicKey:
        """From SubjectPublicKeyInfo PEM."""
        try:
            key = serialization.load_pem_public_key(pem)
        except ValueError:
            raise KeyMaterialError("not a PEM public key") from None
        if not isinstance(key, Ed25519PublicKey):
            raise KeyMaterialError("PEM public key is not Ed25519")
        return cls(key)

    @property
    def raw(self) -> bytes:
        """The 32-byte encoding."""
        return self._raw

    @property
    def cryptography_key(self) -> Ed25519PublicKey:
        """The underlying ``cryptography`` object."""
        return self._key

    def verify(self, signature: bytes, data: bytes) -> bool:
        """True if ``signature`` is a valid Ed25519 signature of ``data`` under this key."""
        try:
            self._key.verify(signature, data)
        except InvalidSignature:
            return False
        return True

    def to_pem(self) -> bytes:
        """SubjectPublicKeyInfo PEM."""
        return self._key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PublicKey) and other._raw == self._raw

    def __hash__(self) -> int:
        return hash(self._raw)

    def __repr__(self) -> str:
        return f"PublicKey(key_id={self.key_id!r})"


class SigningKey:
    """A brand's Ed25519 signing key.  ``repr`` shows only the key id."""

    __slots__ = ("_key", "_public")

    def __init__(self, key: Ed25519PrivateKey) -> None:
        if not isinstance(key, Ed25519PrivateKey):
            raise KeyMaterialError("expected an Ed25519 private key")
        self._key = key
        self._public = PublicKey(key.public_key())

    @classmethod
    def generate(cls) -> SigningKey:
        """A fresh random key."""
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> SigningKey:
        """From the 32-byte RFC 8032 secret key."""
        if not isinstance(seed, (bytes, bytearray)) or len(seed) != 32:
            raise KeyMaterialError("an Ed25519 secret key is 32 bytes")
        return cls(Ed25519PrivateKey.from_private_bytes(bytes(seed)))

    @property
    def public_key(self) -> PublicKey:
        """The matching public key."""
        return self._public

    @property
    def key_id(self) -> str:
        """Key id of the public key (see :func:`key_id_for`)."""
        return self._public.key_id

    def sign(self, data: bytes) -> bytes:
        """64-byte Ed25519 signature of ``data``."""
        return self._key.sign(data)

    @property
    def cryptography_key(self) -> Ed25519PrivateKey:
        """The key for a library that signs with it in this process (PyJWT: JWS receipts)."""
        return self._key

    def private_pem(self) -> bytes:
        """Unencrypted PKCS#8 PEM.  Secret: write it only to a 0600 file."""
        return self._key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    def __repr__(self) -> str:
        return f"SigningKey(key_id={self.key_id!r})"

    def __reduce__(self) -> NoReturn:
        # Pickling would copy the secret into caches and queues unnoticed.
        raise TypeError("SigningKey cannot be pickled")


# --------------------------------------------------------------------------
# loading
# --------------------------------------------------------------------------


def _read_source(source: str | os.PathLike[str] | None, env: str | None) -> tuple[bytes, str]:
    """Bytes of the key and a description of where they came from (for errors, never the value)."""
    if (source is None) == (env is None):
        raise KeyMaterialError("give exactly one of a file path or an environment variable name")
    if env is not None:
        value = os.environ.get(env)
        if not value:
            raise KeyMaterialError(f"environment variable {env} is not set")
        # PEM squeezed into one line by env files keeps its newlines as "\n".
        return value.replace("\\n", "\n").encode(), f"environment variable {env}"
    path = Path(source)  # type: ignore[arg-type]
    try:
        st = path.stat()
        data = path.read_bytes()
    except OSError as exc:
        raise KeyMaterialError(f"cannot read key file {path}: {exc.strerror}") from None
    if stat.S_IMODE(st.st_mode) & 0o077:
        log.warning("key file %s is readable by group or others; chmod 600 it", path)
    return data, f"key file {path}"


def _b64decode(text: bytes, where: str) -> bytes:
    compact = b"".join(text.split())
    try:
        compact.decode("ascii")
    except UnicodeDecodeError:
        raise KeyMaterialError(f"{where} is not base64") from None
    compact += b"=" * (-len(compact) % 4)
    try:
        if b"-" in compact or b"_" in compact:
            return base64.b64decode(compact, altchars=b"-_", validate=True)
        return base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        raise KeyMaterialError(f"{where} is not base64") from None


def load_signing_key(
    source: str | os.PathLike[str] | None = None,
    *,
    env: str | None = None,
    password: bytes | None = None,
) -> SigningKey:
    """Load the Ed25519 signing key from a file or an environment variable.

    PKCS#8 PEM (optionally password-protected), or base64 of the 32-byte
    secret key, or of the 64-byte secret-then-public form some tools write.
    """
    data, where = _read_source(source, env)
    if b"-----BEGIN" in data:
        try:
            key = serialization.load_pem_private_key(data, password=password)
        except (ValueError, TypeError):
            raise KeyMaterialError(f"{where} is not a readable PEM private key") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise KeyMaterialError(f"{where} holds a private key that is not Ed25519")
        return SigningKey(key)
    raw = _b64decode(data, where)
    if len(raw) == 64:
        signing = SigningKey.from_seed(raw[:32])
        if signing.public_key.raw != raw[32:]:
            raise KeyMaterialError(f"{where}: public half does not match the secret key")
        return signing
    if len(raw) != 32:
        raise KeyMaterialError(f"{where}: an Ed25519 secret key is 32 bytes")
    return SigningKey.from_seed(raw)


def load_public_key(source: str | os.PathLike[str] | None = None, *, env: str | None = None) -> PublicKey:
    """Load an Ed25519 public key (SubjectPublicKeyInfo PEM or base64 of 32 bytes)."""
    data, where = _read_source(source, env)
    if b"-----BEGIN" in data:
        return PublicKey.from_pem(data)
    return PublicKey.from_raw(_b64decode(data, where))


def derive_kek_id(key: bytes) -> str:
    """Stable id for a KEK that has none configured: ``kek-`` + 16 hex digits of a labelled SHA-256.

    A hash of a 256-bit random key reveals nothing usable about it, and every
    process that loads the same key gets the same id without extra config.
    """
    return "kek-" + hashlib.sha256(_KEK_ID_LABEL + key).hexdigest()[:16]


def load_kek(
    source: str | os.PathLike[str] | None = None,
    *,
    env: str | None = None,
    kek_id: str | None = None,
) -> KeyEncryptionKey:
    """Load the vault's AES-256 KEK (base64 of 32 bytes); ``kek_id`` defaults to :func:`derive_kek_id`."""
    data, where = _read_source(source, env)
    key = _b64decode(data, where)
    if len(key) != 32:
        raise KeyMaterialError(f"{where}: a key-encryption key is 32 bytes (AES-256)")
    return KeyEncryptionKey(kek_id or derive_kek_id(key), key)


def load_pepper(source: str | os.PathLike[str] | None = None, *, env: str | None = None) -> bytes:
    """Load a pseudonym pepper (base64 of at least 32 bytes)."""
    data, where = _read_source(source, env)
    pepper = _b64decode(data, where)
    if len(pepper) < MIN_PEPPER_BYTES:
        raise KeyMaterialError(f"{where}: a pepper must be at least {MIN_PEPPER_BYTES} bytes")
    return pepper


# --------------------------------------------------------------------------
# generation
# --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GeneratedKeyFiles:
    """Paths written by :func:`generate_key_files` and the ids of what they hold."""

    directory: Path
    signing_key: Path
    public_key: Path
    kek: Path
    pepper: Path
    key_id: str
    kek_id: str


def write_private(path: Path, data: bytes, overwrite: bool = False) -> None:
    """Create ``path`` as 0600 from the first byte on (no window where it is world-readable)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    target = path
    if overwrite:
        target = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    try:
        fd = os.open(target, flags, 0o600)
    except FileExistsError:
        raise KeyMaterialError(f"{path} already exists; refusing to overwrite a key") from None
    try:
        os.fchmod(fd, 0o600)  # the umask may only remove bits; make the mode exact
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    if overwrite:
        os.replace(target, path)


def generate_key_files(
    directory: str | os.PathLike[str],
    *,
    overwrite: bool = False,
) -> GeneratedKeyFiles:
    """Write a new signing key, its public key, a KEK and a pepper into ``directory``.

    Files are ``signing.key`` (PKCS#8 PEM), ``signing.pub`` (PEM), ``kek.key``
    and ``pepper.key`` (base64), all mode 0600; the directory is created 0700.
    Existing files are never replaced unless ``overwrite`` is true.  The
    returned ``kek_id`` is the one :func:`load_kek` derives from the file.
    """
    root = Path(directory)
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    signing = SigningKey.generate()
    kek_bytes = secrets.token_bytes(32)
    pepper = secrets.token_bytes(32)
    paths = {name: root / name for name in (SIGNING_KEY_FILE, PUBLIC_KEY_FILE, KEK_FILE, PEPPER_FILE)}
    if not overwrite:
        existing = [str(p) for p in paths.values() if p.exists()]
        if existing:
            raise KeyMaterialError(f"refusing to overwrite existing key files: {', '.join(existing)}")
    write_private(paths[SIGNING_KEY_FILE], signing.private_pem(), overwrite)
    write_private(paths[PUBLIC_KEY_FILE], signing.public_key.to_pem(), overwrite)
    write_private(paths[KEK_FILE], base64.b64encode(kek_bytes) + b"\n", overwrite)
    write_private(paths[PEPPER_FILE], base64.b64encode(pepper) + b"\n", overwrite)
    return GeneratedKeyFiles(
        directory=root,
        signing_key=paths[SIGNING_KEY_FILE],
        public_key=paths[PUBLIC_KEY_FILE],
        kek=paths[KEK_FILE],
        pepper=paths[PEPPER_FILE],
        key_id=signing.key_id,
        kek_id=derive_kek_id(kek_bytes),
    )
