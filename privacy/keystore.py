"""Where a brand's member data keys live: apart from the data they protect, under key-encryption
keys (KEKs) that rotate.

Erasure by crypto-shredding destroys a member's data key. A copy of the wrapped key that outlives
the erasure (the data database's WAL or dead tuples, a backup, a replica, this store's own journal)
would undo it for as long as the KEK that wrapped it exists. So the KEK rotates on a schedule: every
live data key is re-wrapped under a new KEK, then the old KEK is destroyed, and from then on no copy
of an erased member's wrapped key, anywhere, decrypts. **An erasure is final at the next rotation.**

`KeyStore` is what the gateway needs of a store; a KMS or HSM can implement it (its KEKs never
leaving it). `LocalKeyStore`, the default, keeps each KEK in a file of its own (``keks/<id>.key``,
mode 0600) and the wrapped keys in a SQLite file of their own (``datakeys.sqlite``) with
``secure_delete`` on, so a deleted or re-wrapped key's bytes are overwritten in the file, not left
in a free page.
"""

from __future__ import annotations

import base64
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from privacy.errors import KeyMaterialError, VaultError
from privacy.keys import write_private
from privacy.vault import KeyEncryptionKey, Vault, WrappedKey

__all__ = ["KeyStore", "LocalKeyStore", "Rotation", "StaleKek", "destroy_file"]

KEKS_DIR = "keks"
STORE_FILE = "datakeys.sqlite"
_REWRAP_CHUNK = 5_000


class StaleKek(VaultError):
    """A data key wrapped under a KEK that is no longer current: another process rotated meanwhile."""


@dataclass(frozen=True)
class Rotation:
    """What one KEK rotation did."""

    new_kek_id: str
    destroyed_kek_ids: tuple[str, ...]
    rewrapped: int


class KeyStore(Protocol):
    def keks(self) -> tuple[dict[str, KeyEncryptionKey], str]:
        """Every KEK still held, and the id of the current one."""

    def get(self, member_ref: str) -> WrappedKey | None: ...

    def get_many(self, member_refs: list[str]) -> dict[str, WrappedKey]: ...

    def put(self, member_ref: str, wrapped: WrappedKey) -> None:
        """Store a new data key; raises StaleKek unless it is wrapped under the current KEK."""

    def put_many(self, items: list[tuple[str, WrappedKey]]) -> None: ...

    def delete(self, member_ref: str) -> bool:
        """Destroy a data key; False if there was none."""

    def rotate(self, vault: Vault, unless_rotated_since: float | None = None) -> Rotation | None:
        """Re-wrap every data key under a new KEK, then destroy every other KEK (None: another
        process rotated since `unless_rotated_since`)."""

    def rotated_at(self) -> float: ...

    def refs_stored_before(self, unix_time: float) -> list[str]: ...


class LocalKeyStore:
    """KEK files and a SQLite file of wrapped keys in one directory (the brand's keys directory).

    Safe for several processes: writes take SQLite's write lock, and a rotation commits the new
    current KEK together with every re-wrapped key, so a key another process wraps under the old
    one is refused (StaleKek) rather than lost when the old KEK is destroyed."""

    def __init__(self, directory: Path, legacy_kek: KeyEncryptionKey | None = None):
        self.directory = Path(directory)
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.kek_dir = self.directory / KEKS_DIR
        self.kek_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.path = self.directory / STORE_FILE
        self._local = threading.local()
        with self._write() as db:
            db.execute("CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)")
            db.execute("CREATE TABLE IF NOT EXISTS data_keys (member_ref TEXT PRIMARY KEY, record TEXT NOT NULL, "
                       "created_at REAL NOT NULL)")
            if db.execute("SELECT value FROM meta WHERE name = 'current_kek'").fetchone() is None:
                first = legacy_kek or KeyEncryptionKey.generate("kek-" + secrets.token_hex(8))
                self._write_kek(first)
                db.execute("INSERT INTO meta VALUES ('current_kek', ?), ('rotated_at', ?)", (first.kek_id, repr(time.time())))
        os.chmod(self.path, 0o600)

    # ------------------------------------------------------------ connections

    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA secure_delete = ON")  # a deleted key's bytes are zeroed, not left in a free page
            db.execute("PRAGMA journal_mode = DELETE")  # no WAL file keeping old page images after a commit
            db.execute("PRAGMA synchronous = FULL")
            self._local.db = db
        return db

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        db = self._db()
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    # ------------------------------------------------------------ KEKs

    def _kek_path(self, kek_id: str) -> Path:
        if not kek_id.replace("-", "").isalnum():
            raise KeyMaterialError(f"bad KEK id {kek_id!r}")
        return self.kek_dir / f"{kek_id}.key"

    def _write_kek(self, kek: KeyEncryptionKey) -> None:
        path = self._kek_path(kek.kek_id)
        if not path.exists():
            write_private(path, base64.b64encode(kek.key) + b"\n")

    def _destroy_kek(self, kek_id: str) -> None:
        destroy_file(self._kek_path(kek_id))

    def keks(self) -> tuple[dict[str, KeyEncryptionKey], str]:
        current = self._db().execute("SELECT value FROM meta WHERE name = 'current_kek'").fetchone()[0]
        found = {}
        for path in self.kek_dir.glob("*.key"):
            kek_id = path.name.removesuffix(".key")
            try:
                found[kek_id] = KeyEncryptionKey(kek_id, base64.b64decode(path.read_bytes().strip(), validate=True))
            except (ValueError, KeyMaterialError, FileNotFoundError):
                continue  # destroyed meanwhile, or not a key of ours
        if current not in found:
            raise KeyMaterialError(f"the current KEK {current!r} is missing from {self.kek_dir}")
        return found, current

    # ------------------------------------------------------------ data keys

    def get(self, member_ref: str) -> WrappedKey | None:
        row = self._db().execute("SELECT record FROM data_keys WHERE member_ref = ?", (member_ref,)).fetchone()
        return None if row is None else WrappedKey.from_record(_record(row[0]))

    def get_many(self, member_refs: list[str]) -> dict[str, WrappedKey]:
        found: dict[str, WrappedKey] = {}
        for start in range(0, len(member_refs), 500):  # SQLite's bound-parameter limit
            chunk = member_refs[start:start + 500]
            marks = ",".join("?" * len(chunk))
            found |= {ref: WrappedKey.from_record(_record(record)) for ref, record in
                      self._db().execute(f"SELECT member_ref, record FROM data_keys WHERE member_ref IN ({marks})", chunk)}
        return found

    def put(self, member_ref: str, wrapped: WrappedKey) -> None:
        self.put_many([(member_ref, wrapped)])

    def put_many(self, items: list[tuple[str, WrappedKey]]) -> None:
        """`put` for many keys in one transaction (a migration, an import)."""
        with self._write() as db:
            current = db.execute("SELECT value FROM meta WHERE name = 'current_kek'").fetchone()[0]
            stale = [w.kek_id for _, w in items if w.kek_id != current]
            if stale:
                raise StaleKek(f"a data key is wrapped under {stale[0]}, the current KEK is {current}")
            now = time.time()
            db.executemany("INSERT OR REPLACE INTO data_keys VALUES (?, ?, ?)", [(ref, _text(w), now) for ref, w in items])

    def delete(self, member_ref: str) -> bool:
        with self._write() as db:
            return db.execute("DELETE FROM data_keys WHERE member_ref = ?", (member_ref,)).rowcount > 0

    def count(self) -> int:
        return self._db().execute("SELECT count(*) FROM data_keys").fetchone()[0]

    def refs_stored_before(self, unix_time: float) -> list[str]:
        return [ref for (ref,) in self._db().execute("SELECT member_ref FROM data_keys WHERE created_at < ?", (unix_time,))]

    def rotated_at(self) -> float:
        """When the current KEK replaced the previous one (Unix time)."""
        return float(self._db().execute("SELECT value FROM meta WHERE name = 'rotated_at'").fetchone()[0])

    def rotate(self, vault: Vault, unless_rotated_since: float | None = None) -> Rotation | None:
        """Re-wrap every data key under a new KEK, then destroy every other KEK. With
        `unless_rotated_since`, nothing happens (None) if a rotation ran since then (another process
        of the brand got there first)."""
        with self._write() as db:
            if unless_rotated_since is not None and self.rotated_at() > unless_rotated_since:
                return None
            new = KeyEncryptionKey.generate("kek-" + secrets.token_hex(8))
            self._write_kek(new)
            held, _ = self.keks()
            vault.load_keks(held, new.kek_id)
            rows = db.execute("SELECT member_ref, record FROM data_keys").fetchall()
            for start in range(0, len(rows), _REWRAP_CHUNK):
                db.executemany("UPDATE data_keys SET record = ? WHERE member_ref = ?",
                               [(_text(vault.rewrap(WrappedKey.from_record(_record(record)), ref)), ref)
                                for ref, record in rows[start:start + _REWRAP_CHUNK]])
            rewrapped = len(rows)
            db.execute("UPDATE meta SET value = ? WHERE name = 'current_kek'", (new.kek_id,))
            db.execute("UPDATE meta SET value = ? WHERE name = 'rotated_at'", (repr(time.time()),))
        # Committed: no stored key needs an old KEK any more. Destroy them, then compact the store so
        # not even its free pages hold an old wrap (secure_delete zeroes them; VACUUM gives them back).
        old = tuple(sorted(k for k in held if k != new.kek_id))
        for kek_id in old:
            self._destroy_kek(kek_id)
        self._db().execute("VACUUM")
        vault.load_keks({new.kek_id: new}, new.kek_id)
        return Rotation(new.kek_id, old, rewrapped)


def destroy_file(path: Path) -> None:
    """Overwrite a key file before unlinking it, so its bytes do not stay in a free block of the file
    system (as far as it overwrites in place: snapshots and copy-on-write file systems are the
    operator's to purge)."""
    try:
        size = path.stat().st_size
        with open(path, "r+b") as fh:
            fh.write(secrets.token_bytes(size))
            fh.flush()
            os.fsync(fh.fileno())
        path.unlink()
    except FileNotFoundError:
        pass


def _text(wrapped: WrappedKey) -> str:
    r = wrapped.to_record()
    return f"{r['dek_id']}:{r['kek_id']}:{r['wrapped']}"


def _record(text: str) -> dict[str, str]:
    dek_id, kek_id, wrapped = text.split(":")
    return {"dek_id": dek_id, "kek_id": kek_id, "wrapped": wrapped}
