"""Key material: RFC 8032 known answers, key ids, loading from files and environment, generation."""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import pickle
import stat
from pathlib import Path

import pytest

from privacy.errors import KeyMaterialError
from privacy.keys import (
    PublicKey,
    SigningKey,
    derive_kek_id,
    generate_key_files,
    key_id_for,
    load_kek,
    load_pepper,
    load_public_key,
    load_signing_key,
)
from privacy.vault import Vault

# RFC 8032 section 7.1, TEST 1-3: (secret key, public key, message, signature).
RFC8032 = [
    (
        "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
        "",
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
    ),
    (
        "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
        "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
        "72",
        "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
    ),
    (
        "c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
        "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025",
        "af82",
        "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a",
    ),
]


@pytest.mark.parametrize(("sk", "pk", "msg", "sig"), RFC8032)
def test_ed25519_rfc8032_vectors(sk: str, pk: str, msg: str, sig: str) -> None:
    key = SigningKey.from_seed(bytes.fromhex(sk))
    assert key.public_key.raw.hex() == pk
    assert key.sign(bytes.fromhex(msg)).hex() == sig
    public = PublicKey.from_raw(bytes.fromhex(pk))
    assert public.verify(bytes.fromhex(sig), bytes.fromhex(msg))
    assert not public.verify(bytes.fromhex(sig), bytes.fromhex(msg) + b"\x00")


def test_key_id_is_first_16_hex_of_sha256_of_raw_public_key() -> None:
    pk = bytes.fromhex(RFC8032[0][1])
    expected = hashlib.sha256(pk).hexdigest()[:16]
    key = SigningKey.from_seed(bytes.fromhex(RFC8032[0][0]))
    assert key.key_id == expected == key_id_for(pk) == key_id_for(key.public_key)
    assert key_id_for(key.public_key.cryptography_key) == expected


def test_repr_and_pickle_never_leak_the_secret() -> None:
    seed = bytes.fromhex(RFC8032[0][0])
    key = SigningKey.from_seed(seed)
    text = repr(key) + str(key)
    assert seed.hex() not in text and base64.b64encode(seed).decode() not in text
    assert key.key_id in repr(key)
    with pytest.raises(TypeError):
        pickle.dumps(key)


def test_generate_key_files_writes_0600_files_that_load(tmp_path: Path) -> None:
    directory = tmp_path / "keys"
    files = generate_key_files(directory)
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    for path in (files.signing_key, files.public_key, files.kek, files.pepper):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    signing = load_signing_key(files.signing_key)
    assert signing.key_id == files.key_id
    assert load_public_key(files.public_key) == signing.public_key
    kek = load_kek(files.kek)
    assert kek.kek_id == files.kek_id == derive_kek_id(kek.key)
    assert len(load_pepper(files.pepper)) == 32
    Vault({kek.kek_id: kek}, kek.kek_id)  # usable as is


def test_generate_refuses_to_overwrite_unless_asked(tmp_path: Path) -> None:
    first = generate_key_files(tmp_path)
    with pytest.raises(KeyMaterialError):
        generate_key_files(tmp_path)
    assert load_signing_key(first.signing_key).key_id == first.key_id  # untouched
    second = generate_key_files(tmp_path, overwrite=True)
    assert second.key_id != first.key_id
    assert stat.S_IMODE(second.signing_key.stat().st_mode) == 0o600
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_load_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    seed = bytes.fromhex(RFC8032[0][0])
    monkeypatch.setenv("TEST_SIGNING_KEY", base64.urlsafe_b64encode(seed).decode().rstrip("="))
    assert load_signing_key(env="TEST_SIGNING_KEY").public_key.raw.hex() == RFC8032[0][1]

    pem_one_line = SigningKey.from_seed(seed).private_pem().decode().replace("\n", "\\n")
    monkeypatch.setenv("TEST_SIGNING_PEM", pem_one_line)
    assert load_signing_key(env="TEST_SIGNING_PEM").public_key.raw.hex() == RFC8032[0][1]

    monkeypatch.setenv("TEST_KEK", base64.b64encode(bytes(range(32))).decode())
    kek = load_kek(env="TEST_KEK", kek_id="kek-2025")
    assert kek.kek_id == "kek-2025" and kek.key == bytes(range(32))

    monkeypatch.delenv("TEST_MISSING", raising=False)
    with pytest.raises(KeyMaterialError, match="TEST_MISSING"):
        load_pepper(env="TEST_MISSING")


def test_64_byte_secret_public_form(tmp_path: Path) -> None:
    seed, pk = bytes.fromhex(RFC8032[1][0]), bytes.fromhex(RFC8032[1][1])
    path = tmp_path / "k"
    path.write_bytes(base64.b64encode(seed + pk))
    assert load_signing_key(path).public_key.raw == pk
    path.write_bytes(base64.b64encode(seed + bytes(32)))
    with pytest.raises(KeyMaterialError):
        load_signing_key(path)


@pytest.mark.parametrize(
    ("loader", "content"),
    [
        (load_signing_key, b"not base64 !!"),
        (load_signing_key, base64.b64encode(bytes(31))),
        (load_public_key, base64.b64encode(bytes(33))),
        (load_kek, base64.b64encode(bytes(16))),
        (load_pepper, base64.b64encode(bytes(31))),
        (load_signing_key, b"-----BEGIN PRIVATE KEY-----\ngarbage\n-----END PRIVATE KEY-----\n"),
        (load_public_key, b"-----BEGIN PUBLIC KEY-----\ngarbage\n-----END PUBLIC KEY-----\n"),
    ],
)
def test_malformed_key_files_are_rejected(tmp_path: Path, loader, content: bytes) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "key"
    path.write_bytes(content)
    os.chmod(path, 0o600)
    with pytest.raises(KeyMaterialError):
        loader(path)


def test_source_must_be_exactly_one(tmp_path: Path) -> None:
    with pytest.raises(KeyMaterialError):
        load_pepper()
    with pytest.raises(KeyMaterialError):
        load_pepper(tmp_path / "x", env="X")
    with pytest.raises(KeyMaterialError):
        load_pepper(tmp_path / "does-not-exist")


def test_loose_permissions_warn_without_key_material(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    pepper = bytes(range(40))
    encoded = base64.b64encode(pepper).decode()
    path = tmp_path / "pepper.key"
    path.write_text(encoded)
    os.chmod(path, 0o644)
    with caplog.at_level(logging.WARNING, logger="privacy.keys"):
        assert load_pepper(path) == pepper
    assert "pepper.key" in caplog.text
    assert encoded not in caplog.text and pepper.hex() not in caplog.text
