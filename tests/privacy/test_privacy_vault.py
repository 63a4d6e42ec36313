"""PII vault: round trips, AAD binding, KEK rotation, crypto-shredding, the data-key cache."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privacy.errors import (
    DecryptionError,
    KeyMaterialError,
    KeyShreddedError,
    PrivacyError,
    UnknownKeyError,
    VaultError,
)
from privacy.vault import ErasureEvidence, KeyEncryptionKey, ShreddingCertificate, Vault, WrappedKey

KEK1 = KeyEncryptionKey("kek-1", bytes(range(32)))
KEK2 = KeyEncryptionKey("kek-2", bytes(range(32, 64)))
ALICE, BOB = "v1." + "a" * 64, "v1." + "b" * 64


@pytest.fixture
def vault() -> Vault:
    return Vault({"kek-1": KEK1}, "kek-1")


@given(st.text(max_size=300), st.sampled_from(["name", "phone", "email", "birthday"]))
@settings(max_examples=100, deadline=None)
def test_round_trip(plaintext: str, field: str) -> None:
    vault = Vault({"kek-1": KEK1}, "kek-1")
    wrapped = vault.new_data_key(ALICE)
    ct = vault.encrypt_field(wrapped, ALICE, field, plaintext)
    if len(plaintext.encode()) >= 8:  # shorter strings can occur in random bytes by chance
        assert plaintext.encode() not in ct
    assert vault.decrypt_field(wrapped, ALICE, field, ct) == plaintext


def test_same_plaintext_encrypts_differently(vault: Vault) -> None:
    wrapped = vault.new_data_key(ALICE)
    a = vault.encrypt_field(wrapped, ALICE, "name", "Alice")
    b = vault.encrypt_field(wrapped, ALICE, "name", "Alice")
    assert a != b  # fresh 96-bit nonce each time


def test_ciphertext_moved_to_other_field_fails(vault: Vault) -> None:
    wrapped = vault.new_data_key(ALICE)
    ct = vault.encrypt_field(wrapped, ALICE, "phone", "+8613812345678")
    with pytest.raises(DecryptionError):
        vault.decrypt_field(wrapped, ALICE, "email", ct)


def test_ciphertext_moved_to_other_member_fails(vault: Vault) -> None:
    alice_key, bob_key = vault.new_data_key(ALICE), vault.new_data_key(BOB)
    ct = vault.encrypt_field(alice_key, ALICE, "name", "Alice")
    # Bob's row, Bob's key: the ciphertext does not belong to him.
    with pytest.raises(DecryptionError):
        vault.decrypt_field(bob_key, BOB, "name", ct)
    # Alice's wrapped key copied onto Bob's row does not even unwrap for Bob.
    with pytest.raises(DecryptionError):
        vault.decrypt_field(alice_key, BOB, "name", ct)


def test_ciphertext_under_a_replaced_data_key_fails(vault: Vault) -> None:
    old_key, new_key = vault.new_data_key(ALICE), vault.new_data_key(ALICE)
    ct = vault.encrypt_field(old_key, ALICE, "name", "Alice")
    with pytest.raises(DecryptionError):
        vault.decrypt_field(new_key, ALICE, "name", ct)


@given(st.data())
@settings(max_examples=60, deadline=None)
def test_any_flipped_ciphertext_byte_is_detected(data: st.DataObject) -> None:
    vault = Vault({"kek-1": KEK1}, "kek-1")
    wrapped = vault.new_data_key(ALICE)
    ct = bytearray(vault.encrypt_field(wrapped, ALICE, "name", "Alice Example"))
    i = data.draw(st.integers(0, len(ct) - 1))
    ct[i] ^= data.draw(st.integers(1, 255))
    with pytest.raises(DecryptionError):
        vault.decrypt_field(wrapped, ALICE, "name", bytes(ct))


def test_tampered_wrapped_key_is_detected(vault: Vault) -> None:
    wrapped = vault.new_data_key(ALICE)
    ct = vault.encrypt_field(wrapped, ALICE, "name", "Alice")
    bad = WrappedKey(wrapped.dek_id, wrapped.kek_id, wrapped.wrapped[:-1] + bytes([wrapped.wrapped[-1] ^ 1]))
    with pytest.raises(DecryptionError):
        vault.decrypt_field(bad, ALICE, "name", ct)
    other_id = WrappedKey("0" * 32, wrapped.kek_id, wrapped.wrapped)
    with pytest.raises(DecryptionError):
        vault.decrypt_field(other_id, ALICE, "name", ct)


def test_kek_rotation_keeps_data_readable() -> None:
    old_vault = Vault({"kek-1": KEK1}, "kek-1")
    wrapped = old_vault.new_data_key(ALICE)
    cts = old_vault.encrypt_fields(wrapped, ALICE, {"name": "Alice", "email": "alice@example.com"})

    rotating = Vault({"kek-1": KEK1, "kek-2": KEK2}, "kek-2")
    rewrapped = rotating.rewrap(wrapped, ALICE)
    assert rewrapped.kek_id == "kek-2" and rewrapped.dek_id == wrapped.dek_id
    assert rewrapped.wrapped != wrapped.wrapped
    assert rotating.rewrap(rewrapped, ALICE) is rewrapped  # already current

    new_vault = Vault({"kek-2": KEK2}, "kek-2")  # old KEK retired
    assert new_vault.decrypt_fields(rewrapped, ALICE, cts) == {"name": "Alice", "email": "alice@example.com"}
    with pytest.raises(UnknownKeyError):
        new_vault.decrypt_field(wrapped, ALICE, "name", cts["name"])
    with pytest.raises(DecryptionError):
        rotating.rewrap(wrapped, BOB)  # rewrap also checks the member binding


def test_shredded_key_raises_and_evidence_names_it(vault: Vault) -> None:
    wrapped = vault.new_data_key(ALICE)
    ct = vault.encrypt_field(wrapped, ALICE, "name", "Alice")
    moment = datetime(2025, 3, 1, 8, 30, 15, 123456, tzinfo=UTC)
    evidence = vault.shred(wrapped, ALICE, now=moment)
    assert isinstance(evidence, ErasureEvidence) and ShreddingCertificate is ErasureEvidence
    assert evidence.wrapped_key_sha256 == wrapped.fingerprint
    assert re.fullmatch(r"[0-9a-f]{64}", evidence.wrapped_key_sha256)
    assert evidence.shredded_at == "2025-03-01T08:30:15Z"
    assert evidence.dek_id == wrapped.dek_id and evidence.member_ref == ALICE
    # The storage layer deleted the row, so the gateway now passes None.
    with pytest.raises(KeyShreddedError) as info:
        vault.decrypt_field(None, ALICE, "name", ct)
    assert isinstance(info.value, PrivacyError)
    with pytest.raises(KeyShreddedError):
        vault.encrypt_field(None, ALICE, "name", "Alice")
    # Auditor's check over the fingerprints still stored.
    others = [vault.new_data_key(BOB).fingerprint]
    assert evidence.confirms_absence(others)
    assert not evidence.confirms_absence(others + [wrapped.fingerprint])
    assert wrapped.wrapped.hex() not in str(evidence.to_dict())


def test_shred_refuses_someone_elses_key(vault: Vault) -> None:
    wrapped = vault.new_data_key(ALICE)
    with pytest.raises(DecryptionError):
        vault.shred(wrapped, BOB)


def test_shred_evicts_cached_data_key(vault: Vault) -> None:
    wrapped = vault.new_data_key(ALICE)
    vault.encrypt_field(wrapped, ALICE, "name", "Alice")
    assert len(vault._cache) == 1
    vault.shred(wrapped, ALICE)
    assert len(vault._cache) == 0


def test_batch_of_fields_unwraps_once(monkeypatch: pytest.MonkeyPatch, vault: Vault) -> None:
    wrapped = vault.new_data_key(ALICE)
    calls = []
    real = vault._unwrap_raw
    monkeypatch.setattr(vault, "_unwrap_raw", lambda w, ref: calls.append(1) or real(w, ref))
    cts = vault.encrypt_fields(wrapped, ALICE, {f"f{i}": str(i) for i in range(10)})
    vault.decrypt_fields(wrapped, ALICE, cts)
    assert len(calls) == 1


def test_cache_is_bounded_and_expires(monkeypatch: pytest.MonkeyPatch) -> None:
    vault = Vault({"kek-1": KEK1}, "kek-1", cache_size=2, cache_ttl=0.05)
    members = [f"member-{i}" for i in range(5)]
    keys = {m: vault.new_data_key(m) for m in members}
    for m in members:
        vault.encrypt_field(keys[m], m, "name", m)
    assert len(vault._cache) == 2
    calls = []
    real = vault._unwrap_raw
    monkeypatch.setattr(vault, "_unwrap_raw", lambda w, ref: calls.append(1) or real(w, ref))
    vault.encrypt_field(keys[members[-1]], members[-1], "name", "x")
    assert calls == []  # most recent member still cached
    time.sleep(0.1)
    vault.encrypt_field(keys[members[-1]], members[-1], "name", "x")
    assert calls == [1]  # expired, unwrapped again


def test_wrapped_key_record_round_trip(vault: Vault) -> None:
    wrapped = vault.new_data_key(ALICE)
    record = wrapped.to_record()
    assert all(isinstance(v, str) for v in record.values())
    assert WrappedKey.from_record(record) == wrapped
    for bad in ({"dek_id": "x"}, {**record, "wrapped": "!!"}, {**record, "wrapped": "AAAA"}):
        with pytest.raises(VaultError):
            WrappedKey.from_record(bad)


def test_kek_validation_and_repr() -> None:
    with pytest.raises(KeyMaterialError):
        KeyEncryptionKey("k", bytes(16))
    with pytest.raises(KeyMaterialError):
        Vault({"other-name": KEK1}, "other-name")
    with pytest.raises(KeyMaterialError):
        Vault({"kek-1": KEK1}, "kek-2")
    kek = KeyEncryptionKey.generate("fresh")
    assert kek.key.hex() not in repr(kek) and "fresh" in repr(kek)
    assert KEK1.key.hex() not in repr(Vault({"kek-1": KEK1}, "kek-1"))


def test_bad_inputs_are_vault_errors(vault: Vault) -> None:
    wrapped = vault.new_data_key(ALICE)
    with pytest.raises(VaultError):
        vault.new_data_key("")
    with pytest.raises(VaultError):
        vault.encrypt_field(wrapped, ALICE, "", "x")
    with pytest.raises(VaultError):
        vault.encrypt_field(wrapped, ALICE, "name", b"bytes")  # type: ignore[arg-type]
    with pytest.raises(DecryptionError):
        vault.decrypt_field(wrapped, ALICE, "name", b"\x02" + bytes(40))
    with pytest.raises(DecryptionError):
        vault.decrypt_field(wrapped, ALICE, "name", b"\x01short")
    with pytest.raises(VaultError):
        vault.shred(wrapped, ALICE, now=datetime(2025, 1, 1))  # naive: which timezone?
