"""Pseudonyms: RFC 4231 known answers, normalisation, rotation, brand separation."""

from __future__ import annotations

import hashlib
import hmac
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privacy.errors import IdentifierError, KeyMaterialError, PrivacyError
from privacy.pseudonyms import (
    KeyedHasher,
    Pseudonymiser,
    luhn_valid,
    normalise,
    normalise_card,
    normalise_email,
    normalise_phone,
    parse_pseudonym,
)

PEPPER_A = bytes(range(32))
PEPPER_B = bytes(range(100, 132))
PEPPER_V2 = hashlib.sha256(b"pepper v2").digest()

# RFC 4231 section 4, test cases 1-4 (HMAC-SHA-256 rows).
RFC4231 = [
    (bytes([0x0B] * 20), b"Hi There", "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"),
    (b"Jefe", b"what do ya want for nothing?", "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"),
    (bytes([0xAA] * 20), bytes([0xDD] * 50), "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe"),
    (bytes(range(1, 26)), bytes([0xCD] * 50), "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b"),
    # Test case 6: a key longer than the SHA-256 block, as a long pepper would be.
    (
        bytes([0xAA] * 131),
        b"Test Using Larger Than Block-Size Key - Hash Key First",
        "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
    ),
]


@pytest.mark.parametrize(("key", "data", "expected"), RFC4231)
def test_keyed_hasher_matches_rfc4231(key: bytes, data: bytes, expected: str) -> None:
    hasher = KeyedHasher(key)
    assert hasher.digest(data).hex() == expected
    # The prototype must not be consumed: a second call gives the same answer.
    assert hasher.digest(data).hex() == expected


def test_pseudonym_is_hmac_of_kind_and_normalised_value_through_the_same_path() -> None:
    p = Pseudonymiser({1: PEPPER_A}, 1)
    expected_digest = KeyedHasher(PEPPER_A).digest(b"email:alice@example.com")
    assert expected_digest == hmac.new(PEPPER_A, b"email:alice@example.com", hashlib.sha256).digest()
    assert p.pseudonym("email", "  Alice@Example.COM ") == "v1." + expected_digest.hex()


# -- normalisation ---------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "region", "expected"),
    [
        ("+86 138 1234 5678", None, "+8613812345678"),
        ("13812345678", "CN", "+8613812345678"),
        ("138-1234-5678", "cn", "+8613812345678"),
        ("(415) 555-2671", "US", "+14155552671"),
        ("+1 415 555 2671", "CN", "+14155552671"),
        ("+44 20 7946 0958", None, "+442079460958"),
    ],
)
def test_normalise_phone_to_e164(value: str, region: str | None, expected: str) -> None:
    assert normalise("phone", value, default_region=region) == expected
    assert normalise_phone(value, region) == expected


@pytest.mark.parametrize(
    ("value", "region"),
    [("12345", "US"), ("13812345678", None), ("not a phone", "CN"), ("+86 138", None), ("", "CN")],
)
def test_normalise_phone_rejects_invalid(value: str, region: str | None) -> None:
    with pytest.raises(IdentifierError):
        normalise("phone", value, default_region=region)


@given(st.integers(0, 10**8 - 1), st.lists(st.sampled_from([" ", "-", ""]), min_size=10, max_size=10))
@settings(max_examples=60, deadline=None)
def test_phone_spellings_collapse_to_one_pseudonym(suffix: int, seps: list[str]) -> None:
    digits = f"138{suffix:08d}"
    spelled = "".join(d + s for d, s in zip(digits, seps + [""], strict=True))
    p = Pseudonymiser({1: PEPPER_A}, 1, default_region="CN")
    assert p.pseudonym("phone", spelled) == p.pseudonym("phone", "+86" + digits)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("  Alice@Example.COM ", "alice@example.com"),
        ("user+tag@sub.example.org", "user+tag@sub.example.org"),
        ("user@Bücher.example", "user@xn--bcher-kva.example"),
        ("ÉLODIE@exemple.fr", "élodie@exemple.fr"),
        ("x@example.com.", "x@example.com"),
    ],
)
def test_normalise_email(value: str, expected: str) -> None:
    assert normalise("email", value) == expected
    assert normalise_email(expected) == expected  # idempotent


@pytest.mark.parametrize(
    "value",
    [
        "no-at-sign",
        "a@b@example.com",
        "@example.com",
        "alice@",
        "alice@localhost",
        "al ice@example.com",
        ".alice@example.com",
        "alice.@example.com",
        "al..ice@example.com",
        "alice@-bad-.example",
        "alice@example.123",
        "alice@exa_mple.com",
        'al"ice@example.com',
        "a" * 65 + "@example.com",
        "alice@" + "a" * 64 + ".com",
    ],
)
def test_normalise_email_rejects_invalid(value: str) -> None:
    with pytest.raises(IdentifierError):
        normalise("email", value)


def test_normalise_card() -> None:
    assert normalise("card", "4111 1111 1111 1111") == "4111111111111111"
    assert normalise("card", "4111-1111-1111-1111") == "4111111111111111"
    assert normalise_card("４１１１１１１１１１１１１１１１") == "4111111111111111"  # full-width digits
    for bad in ("4111 1111 1111 1112", "41111111111", "4" * 20, "4111x1111y1111z1111", ""):
        with pytest.raises(IdentifierError):
            normalise("card", bad)


def _with_check_digit(body: str) -> str:
    for d in "0123456789":
        if luhn_valid(body + d):
            return body + d
    raise AssertionError("every body has a Luhn check digit")


@given(st.text(alphabet="0123456789", min_size=11, max_size=18), st.data())
@settings(max_examples=80)
def test_luhn_accepts_valid_and_catches_every_single_digit_error(body: str, data: st.DataObject) -> None:
    number = _with_check_digit(body)
    assert normalise_card(number) == number
    pos = data.draw(st.integers(0, len(number) - 1))
    wrong = data.draw(st.sampled_from([d for d in "0123456789" if d != number[pos]]))
    with pytest.raises(IdentifierError):
        normalise_card(number[:pos] + wrong + number[pos + 1 :])


def test_unknown_kind_and_non_string_are_identifier_errors() -> None:
    with pytest.raises(IdentifierError) as info:
        normalise("passport", "X123")
    assert isinstance(info.value, PrivacyError) and isinstance(info.value, ValueError)
    with pytest.raises(IdentifierError):
        normalise("email", 12345)  # type: ignore[arg-type]
    with pytest.raises(IdentifierError):
        normalise("email", "a" * 1000 + "@example.com")


# -- pseudonymiser ---------------------------------------------------------


def test_pseudonymiser_rejects_bad_peppers() -> None:
    with pytest.raises(KeyMaterialError):
        Pseudonymiser({1: b"short"}, 1)
    with pytest.raises(KeyMaterialError):
        Pseudonymiser({1: PEPPER_A}, 2)
    with pytest.raises(KeyMaterialError):
        Pseudonymiser({0: PEPPER_A}, 0)
    with pytest.raises(KeyMaterialError):
        Pseudonymiser({}, 1)


def test_rotation_keeps_members_findable_and_flags_rekey() -> None:
    before = Pseudonymiser({1: PEPPER_A}, 1)
    enrolled = before.pseudonym("email", "alice@example.com")
    assert enrolled.startswith("v1.")

    after = Pseudonymiser({1: PEPPER_A, 2: PEPPER_V2}, 2)
    candidates = after.lookup_candidates("email", "ALICE@example.com")
    assert candidates[0] == after.pseudonym("email", "alice@example.com")
    assert candidates[0].startswith("v2.")
    assert enrolled in candidates
    assert candidates == [candidates[0], enrolled]
    assert after.needs_rekey(enrolled) is True
    assert after.needs_rekey(candidates[0]) is False
    assert after.versions == (2, 1)


def test_lookup_candidates_orders_current_first_then_newest() -> None:
    p = Pseudonymiser({1: PEPPER_A, 2: PEPPER_B, 3: PEPPER_V2}, 2)
    versions = [parse_pseudonym(c)[0] for c in p.lookup_candidates("card", "4111111111111111")]
    assert versions == [2, 3, 1]


_local = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_+-", min_size=1, max_size=20)


@given(_local, st.sampled_from(["example.com", "mail.example.org", "brand.cn"]))
@settings(max_examples=100)
def test_same_identifier_differs_between_brands(local: str, domain: str) -> None:
    brand_a = Pseudonymiser({1: PEPPER_A}, 1)
    brand_b = Pseudonymiser({1: PEPPER_B}, 1)
    email = f"{local}@{domain}"
    pa, pb = brand_a.pseudonym("email", email), brand_b.pseudonym("email", email)
    assert pa != pb
    assert re.fullmatch(r"v1\.[0-9a-f]{64}", pa)
    assert brand_a.pseudonym("email", email.upper()) == pa  # deterministic and case-insensitive


def test_kind_separates_domains() -> None:
    p = Pseudonymiser({1: PEPPER_A}, 1)
    assert p.pseudonym_of_normalised("phone", "4111111111111111") != p.pseudonym_of_normalised(
        "card", "4111111111111111"
    )


def test_parse_pseudonym() -> None:
    digest = "ab" * 32
    assert parse_pseudonym(f"v12.{digest}") == (12, digest)
    for bad in (f"v0.{digest}", f"12.{digest}", f"v1.{digest[:-1]}", f"v1.{digest.upper()}", None):
        with pytest.raises(IdentifierError):
            parse_pseudonym(bad)  # type: ignore[arg-type]


def test_repr_never_shows_pepper() -> None:
    p = Pseudonymiser({1: PEPPER_A, 2: PEPPER_V2}, 2)
    text = repr(p) + repr(KeyedHasher(PEPPER_A))
    assert PEPPER_A.hex() not in text and PEPPER_V2.hex() not in text
    assert "v2" in repr(p)
