"""Consent receipts: RFC 8785 known answers, signing, tamper detection, validation, JSON files."""

from __future__ import annotations

import base64
import dataclasses
import json
import struct
import uuid
from datetime import datetime, timedelta, timezone

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from privacy.errors import ReceiptError, ReceiptSignatureError
from privacy.keys import SigningKey
from privacy.receipts import (
    RECEIPT_TYPE,
    Channel,
    ConsentReceipt,
    ConsentState,
    LawfulBasis,
    Purpose,
    SignedReceipt,
    jcs_bytes,
    policy_digest,
    sign_receipt,
    verify_receipt,
)

BRAND_KEY = SigningKey.from_seed(bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60"))
OTHER_KEY = SigningKey.from_seed(bytes(range(32)))
POLICY = "Privacy policy v3. We use your purchases to run the points programme."


def make_receipt(**overrides: str) -> ConsentReceipt:
    fields = dict(
        receipt_id="3b241101-e2bb-4255-8caf-4136c566a962",
        pseudonym="v1." + "ab" * 32,
        purpose="marketing",
        state="granted",
        policy_version="3",
        policy_sha256=policy_digest(POLICY),
        lawful_basis="consent",
        jurisdiction="CN",
        channel="app",
        issued_at="2025-03-01T08:30:00Z",
        issuer="brand-a",
        key_id=BRAND_KEY.key_id,
    )
    fields.update(overrides)
    return ConsentReceipt(**fields)  # type: ignore[arg-type]


# -- RFC 8785 --------------------------------------------------------------

# RFC 8785 Appendix B: IEEE 754 bit patterns and their canonical text.
JCS_NUMBERS = [
    ("0000000000000000", "0"),
    ("8000000000000000", "0"),
    ("0000000000000001", "5e-324"),
    ("8000000000000001", "-5e-324"),
    ("7fefffffffffffff", "1.7976931348623157e+308"),
    ("ffefffffffffffff", "-1.7976931348623157e+308"),
    ("4340000000000000", "9007199254740992"),
    ("c340000000000000", "-9007199254740992"),
    ("4430000000000000", "295147905179352830000"),
    ("44b52d02c7e14af5", "9.999999999999997e+22"),
    ("44b52d02c7e14af6", "1e+23"),
    ("44b52d02c7e14af7", "1.0000000000000001e+23"),
    ("444b1ae4d6e2ef4e", "999999999999999700000"),
    ("444b1ae4d6e2ef4f", "999999999999999900000"),
    ("444b1ae4d6e2ef50", "1e+21"),
    ("3eb0c6f7a0b5ed8c", "9.999999999999997e-7"),
    ("3eb0c6f7a0b5ed8d", "0.000001"),
    ("41b3de4355555553", "333333333.3333332"),
    ("41b3de4355555554", "333333333.33333325"),
    ("41b3de4355555555", "333333333.3333333"),
    ("41b3de4355555556", "333333333.3333334"),
    ("41b3de4355555557", "333333333.33333343"),
    ("becbf647612f3696", "-0.0000033333333333333333"),
    ("43143ff3c1cb0959", "1424953923781206.2"),
]


@pytest.mark.parametrize(("bits", "expected"), JCS_NUMBERS)
def test_jcs_number_serialisation_rfc8785_appendix_b(bits: str, expected: str) -> None:
    value = struct.unpack(">d", bytes.fromhex(bits))[0]
    assert jcs_bytes({"n": value}) == b'{"n":' + expected.encode() + b"}"


def test_jcs_rejects_nan_and_infinity() -> None:
    for bits in ("7fffffffffffffff", "7ff0000000000000"):
        with pytest.raises(rfc8785.CanonicalizationError):
            jcs_bytes({"n": struct.unpack(">d", bytes.fromhex(bits))[0]})


def test_jcs_rfc8785_section_3_2_2_example() -> None:
    data = json.loads(
        '{"numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],'
        ' "string": "\\u20ac$\\u000F\\u000aA\'\\u0042\\u0022\\u005c\\\\\\"\\/",'
        ' "literals": [null, true, false]}'
    )
    expected = (
        '{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],'
        '"string":"\u20ac$\\u000f\\nA\'B\\"\\\\\\\\\\"/"}'
    ).encode()
    assert jcs_bytes(data) == expected


def test_jcs_rfc8785_section_3_2_3_key_ordering() -> None:
    data = {
        "\u20ac": "Euro Sign",
        "\r": "Carriage Return",
        "\ufb33": "Hebrew Letter Dalet With Dagesh",
        "1": "One",
        "\U0001f600": "Emoji: Grinning Face",
        "\u0080": "Control",
        "\u00f6": "Latin Small Letter O With Diaeresis",
    }
    order = [k for k in json.loads(jcs_bytes(data))]
    assert order == ["\r", "1", "\u0080", "\u00f6", "\u20ac", "\U0001f600", "\ufb33"]
    # ASCII-only keys take the fast path; the order rule is the same.
    assert jcs_bytes({"b": "2", "a": "1", "A": "0", "_": "3"}) == b'{"A":"0","_":"3","a":"1","b":"2"}'


@given(st.dictionaries(st.text(max_size=8), st.text(max_size=12), max_size=8))
@settings(max_examples=300)
def test_jcs_fast_path_agrees_with_the_library_on_any_text(data: dict[str, str]) -> None:
    assert jcs_bytes(data) == rfc8785.dumps(data)


@given(
    st.dictionaries(
        st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=8),
        st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=12)
        | st.integers(-(2**53) + 1, 2**53 - 1),
        max_size=8,
    )
)
@settings(max_examples=300)
def test_jcs_fast_path_agrees_with_the_library_on_ascii(data: dict[str, object]) -> None:
    assert jcs_bytes(data) == rfc8785.dumps(data)


# -- signing ---------------------------------------------------------------


def test_policy_digest_is_sha256() -> None:
    assert policy_digest("") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert policy_digest(b"abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_sign_verify_and_json_file_round_trip() -> None:
    receipt = make_receipt()
    signed = sign_receipt(receipt, BRAND_KEY)
    verify_receipt(signed, BRAND_KEY.public_key)
    text = signed.to_json()
    assert json.loads(text)["receipt"]["purpose"] == "marketing"
    again = SignedReceipt.from_json(text)
    assert again == signed
    verify_receipt(again, BRAND_KEY.public_key.raw)
    verify_receipt(again, BRAND_KEY.public_key.cryptography_key)
    assert receipt.canonical_bytes().startswith(b'{"channel":"app",')
    assert f'"type":"{RECEIPT_TYPE}"'.encode() in receipt.canonical_bytes()
    assert receipt.canonical_bytes() == rfc8785.dumps({"type": RECEIPT_TYPE, **receipt.to_dict()})


def test_signature_is_deterministic_ed25519_over_canonical_bytes() -> None:
    receipt = make_receipt()
    signed = sign_receipt(receipt, BRAND_KEY)
    assert BRAND_KEY.public_key.verify(base64.urlsafe_b64decode(signed.signature + "=="), receipt.canonical_bytes())
    assert sign_receipt(receipt, BRAND_KEY).signature == signed.signature


# A different valid value for every field.
TAMPERED = {
    "receipt_id": "9f0c5b4e-6a2d-4e55-9f3a-0c1d2e3f4a5b",
    "pseudonym": "v1." + "cd" * 32,
    "purpose": "federated_training",
    "state": "withdrawn",
    "policy_version": "4",
    "policy_sha256": policy_digest(POLICY + " "),
    "lawful_basis": "legitimate_interest",
    "jurisdiction": "DE",
    "channel": "pos",
    "issued_at": "2025-03-01T08:30:01Z",
    "issuer": "brand-b",
    "key_id": OTHER_KEY.key_id,
}


@pytest.mark.parametrize("field", sorted(TAMPERED))
def test_tampering_any_field_breaks_verification(field: str) -> None:
    signed = sign_receipt(make_receipt(), BRAND_KEY)
    forged = SignedReceipt(dataclasses.replace(signed.receipt, **{field: TAMPERED[field]}), signed.signature)
    with pytest.raises(ReceiptSignatureError):
        verify_receipt(forged, BRAND_KEY.public_key)
    # The same forgery through the JSON file a member would hold.
    data = json.loads(signed.to_json())
    data["receipt"][field] = TAMPERED[field]
    with pytest.raises(ReceiptSignatureError):
        verify_receipt(SignedReceipt.from_json(json.dumps(data)), BRAND_KEY.public_key)


def test_wrong_key_fails() -> None:
    signed = sign_receipt(make_receipt(), BRAND_KEY)
    with pytest.raises(ReceiptSignatureError, match=f"signed with key {BRAND_KEY.key_id}"):
        verify_receipt(signed, OTHER_KEY.public_key)
    # Relabelling the receipt with the other key's id does not help either.
    relabelled = SignedReceipt(dataclasses.replace(signed.receipt, key_id=OTHER_KEY.key_id), signed.signature)
    with pytest.raises(ReceiptSignatureError):
        verify_receipt(relabelled, OTHER_KEY.public_key)


@given(st.integers(0, 63), st.integers(0, 7))
@settings(max_examples=60, deadline=None)
def test_any_flipped_signature_bit_fails(byte: int, bit: int) -> None:
    signed = sign_receipt(make_receipt(), BRAND_KEY)
    raw = bytearray(base64.urlsafe_b64decode(signed.signature + "=="))
    raw[byte] ^= 1 << bit
    bad = SignedReceipt(signed.receipt, base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode())
    with pytest.raises(ReceiptSignatureError):
        verify_receipt(bad, BRAND_KEY.public_key)


def test_malformed_signatures_fail() -> None:
    signed = sign_receipt(make_receipt(), BRAND_KEY)
    for sig in ("", "!!!", signed.signature + "A", signed.signature[:-2] + "==", signed.signature[:-1]):
        with pytest.raises(ReceiptSignatureError):
            verify_receipt(SignedReceipt(signed.receipt, sig), BRAND_KEY.public_key)


def test_signing_with_a_key_the_receipt_does_not_name_is_refused() -> None:
    with pytest.raises(ReceiptError):
        sign_receipt(make_receipt(), OTHER_KEY)


# -- validation ------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("purpose", "profiling"),
        ("state", "maybe"),
        ("lawful_basis", "vital_interest"),
        ("channel", "carrier_pigeon"),
        ("receipt_id", "a8098c1a-f86e-11da-bd1a-00112444be1e"),  # a version-1 UUID (RFC 4122's example): fixed, so that
        # every pytest-xdist worker collects the same parameters
        ("receipt_id", "3B241101-E2BB-4255-8CAF-4136C566A962"),
        ("receipt_id", "not-a-uuid"),
        ("pseudonym", ""),
        ("pseudonym", "has space"),
        ("policy_version", ""),
        ("policy_sha256", "E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855"),
        ("policy_sha256", "abc"),
        ("jurisdiction", "XX"),
        ("jurisdiction", "cn"),
        ("jurisdiction", "CHN"),
        ("issued_at", "2025-03-01T08:30:00+00:00"),
        ("issued_at", "2025-03-01T08:30:00.5Z"),
        ("issued_at", "2025-02-30T08:30:00Z"),
        ("issuer", ""),
        ("issuer", "brand a"),
        ("key_id", "ABCDEF0123456789"),
        ("key_id", "abc"),
    ],
)
def test_invalid_fields_are_rejected(field: str, value: str) -> None:
    with pytest.raises(ReceiptError):
        make_receipt(**{field: value})


def test_unknown_purpose_error_lists_the_allowed_ones() -> None:
    with pytest.raises(ReceiptError, match="loyalty_core.*alliance_exchange"):
        make_receipt(purpose="profiling")


def test_valid_variants_and_enum_coercion() -> None:
    r = make_receipt(jurisdiction="US-CA", channel="web", lawful_basis="contract", purpose="loyalty_core")
    assert r.purpose is Purpose.LOYALTY_CORE and r.channel is Channel.WEB
    assert r.lawful_basis is LawfulBasis.CONTRACT and r.state is ConsentState.GRANTED
    assert make_receipt(jurisdiction="EU").jurisdiction == "EU"
    assert {p.value for p in Purpose} == {
        "loyalty_core",
        "alliance_exchange",
        "federated_training",
        "marketing",
        "overlap_analytics",
    }


def test_create_fills_id_and_time() -> None:
    r = ConsentReceipt.create(
        pseudonym="v1." + "ab" * 32,
        purpose=Purpose.ALLIANCE_EXCHANGE,
        state=ConsentState.GRANTED,
        policy_version="3",
        policy_sha256=policy_digest(POLICY),
        lawful_basis=LawfulBasis.CONSENT,
        jurisdiction="CN",
        channel=Channel.CLI,
        issuer="brand-a",
        key_id=BRAND_KEY.key_id,
    )
    assert uuid.UUID(r.receipt_id).version == 4
    assert r.issued_at.endswith("Z") and len(r.issued_at) == 20
    moment = datetime(2025, 3, 1, 16, 30, 5, 999, tzinfo=timezone(timedelta(hours=8)))
    assert dataclasses.replace(r, issued_at="2025-03-01T08:30:05Z") == ConsentReceipt.create(
        **{**{k: v for k, v in r.to_dict().items() if k not in ("issued_at",)}, "issued_at": moment}
    )
    with pytest.raises(ReceiptError):
        ConsentReceipt.create(
            **{**{k: v for k, v in r.to_dict().items() if k != "issued_at"}, "issued_at": datetime(2025, 3, 1)}
        )


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        "[]",
        '{"receipt": {}, "alg": "Ed25519", "signature": "x"}',
        '{"receipt": {}, "alg": "Ed25519"}',
    ],
)
def test_from_json_rejects_malformed_files(text: str) -> None:
    with pytest.raises(ReceiptError):
        SignedReceipt.from_json(text)


def test_from_json_rejects_extra_fields_and_other_algorithms() -> None:
    data = json.loads(sign_receipt(make_receipt(), BRAND_KEY).to_json())
    data["receipt"]["note"] = "extra"
    with pytest.raises(ReceiptError):
        SignedReceipt.from_json(json.dumps(data))
    data = json.loads(sign_receipt(make_receipt(), BRAND_KEY).to_json())
    data["alg"] = "none"
    with pytest.raises(ReceiptSignatureError):
        SignedReceipt.from_json(json.dumps(data))


receipts = st.builds(
    make_receipt,
    purpose=st.sampled_from([p.value for p in Purpose]),
    state=st.sampled_from(["granted", "withdrawn"]),
    channel=st.sampled_from([c.value for c in Channel]),
    pseudonym=st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=40),
    receipt_id=st.uuids(version=4).map(str),
)


@given(receipts)
@settings(max_examples=50, deadline=None)
def test_any_valid_receipt_signs_round_trips_and_verifies(receipt: ConsentReceipt) -> None:
    signed = sign_receipt(receipt, BRAND_KEY)
    again = SignedReceipt.from_json(signed.to_json())
    assert again == signed
    verify_receipt(again, BRAND_KEY.public_key)
    assert receipt.canonical_bytes() == rfc8785.dumps({"type": RECEIPT_TYPE, **receipt.to_dict()})


# ---------------------------------------------------------------------- Kantara CR v1.1 as compact JWS


def _kantara(purpose: str = "alliance_exchange", state: str = "granted"):
    from privacy.receipts import Controller, sign_kantara

    key = SigningKey.generate()
    receipt = ConsentReceipt.create(pseudonym="4f1c2a9e-member-ref", purpose=purpose, state=state, policy_version="2026-01",
                                    policy_sha256="ab" * 32, lawful_basis="consent", jurisdiction="CN", channel="app",
                                    issuer="grocery", key_id=key.key_id, issued_at="2026-05-04T13:37:21Z")
    controller = Controller("Grocery", "privacy@grocery.example", "https://grocery.example", "https://grocery.example/privacy")
    return key, receipt, sign_kantara(receipt, controller, key)


def test_kantara_receipt_has_every_field_and_is_a_compact_eddsa_jws():
    import jwt

    key, receipt, signed = _kantara()
    header = jwt.get_unverified_header(signed.jws)
    assert signed.jws.count(".") == 2 and header == {"alg": "EdDSA", "kid": key.key_id, "typ": "kantara-cr+jwt"}
    c = signed.claims
    assert c["version"] == "KI-CR-v1.1.0" and c["jurisdiction"] == "CN" and c["consentTimestamp"] == 1777901841
    assert c["collectionMethod"] == "app" and c["consentReceiptID"] == receipt.receipt_id and c["publicKey"] == key.key_id
    assert c["language"] == "en" and c["piiPrincipalId"] == "4f1c2a9e-member-ref" and c["policyUrl"] == "https://grocery.example/privacy"
    assert c["piiControllers"] == [{"piiController": "Grocery", "contact": "privacy@grocery.example", "email": "privacy@grocery.example",
                                    "piiControllerUrl": "https://grocery.example"}]
    (purpose,) = c["services"][0]["purposes"]
    assert purpose["purpose"] == "alliance_exchange" and purpose["consentType"] == "EXPLICIT" and purpose["purposeCategory"]
    assert purpose["piiCategory"] and purpose["termination"].startswith("until withdrawn")
    assert purpose["thirdPartyDisclosure"] is True and "public" in purpose["thirdPartyName"] and "permanent" in purpose["thirdPartyName"]
    assert "alliance operator" in purpose["thirdPartyName"]
    assert c["sensitive"] is False and c["spiCat"] == []
    assert (c["state"], c["lawfulBasis"], c["policyVersion"], c["policySha256"], c["issuer"]) == ("granted", "consent", "2026-01", "ab" * 32, "grocery")


def test_kantara_jws_is_standard_both_ways():
    """PyJWT (the reference) verifies what the brand signs, and verify_receipt refuses what PyJWT would."""
    import jwt

    from privacy.receipts import load_receipt

    key, _, signed = _kantara()
    assert jwt.decode(signed.jws, key.public_key.cryptography_key, algorithms=["EdDSA"]) == signed.claims
    unsigned = jwt.encode(signed.claims, None, algorithm="none", headers={"kid": key.key_id})
    with pytest.raises(ReceiptSignatureError):
        verify_receipt(load_receipt({"format": "kantara-cr-1.1+jws", "jws": unsigned, "receipt": signed.claims}), key.public_key)
    header, payload, sig = signed.jws.split(".")
    for broken in (f"{header}.{payload}", f"{header}.{payload}.{sig}=", f"{header}.{payload}.{sig[:-4]}"):
        with pytest.raises(ReceiptSignatureError):
            verify_receipt(load_receipt({"format": "kantara-cr-1.1+jws", "jws": broken, "receipt": signed.claims}), key.public_key)


def test_kantara_receipt_round_trips_verifies_and_refuses_tampering():
    from privacy.receipts import load_receipt

    key, receipt, signed = _kantara(state="withdrawn")
    loaded = load_receipt(json.loads(signed.to_json()))
    assert loaded.receipt == receipt
    verify_receipt(loaded, key.public_key)
    with pytest.raises(ReceiptSignatureError):
        verify_receipt(loaded, SigningKey.generate().public_key)  # another brand's key
    shown = json.loads(signed.to_json())
    shown["receipt"]["state"] = "granted"  # the readable copy beside the JWS
    with pytest.raises(ReceiptSignatureError, match="not the one signed"):
        verify_receipt(load_receipt(shown), key.public_key)
    header, payload, sig = signed.jws.split(".")
    forged = json.loads(base64.urlsafe_b64decode(payload + "=="))
    forged["state"] = "granted"
    body = base64.urlsafe_b64encode(json.dumps(forged).encode()).rstrip(b"=").decode()
    with pytest.raises(ReceiptSignatureError):
        verify_receipt(load_receipt({"format": "kantara-cr-1.1+jws", "jws": f"{header}.{body}.{sig}", "receipt": forged}), key.public_key)


def test_receipts_of_both_formats_verify_and_the_auditor_checks_both():
    from privacy.hashchain import HashChain
    from privacy.receipts import load_receipt
    from settlement.audit import check_signatures

    key, _, new = _kantara()
    old = sign_receipt(ConsentReceipt.create(pseudonym="m-old", purpose="marketing", state="granted", policy_version="2025-01",
                                             policy_sha256="cd" * 32, lawful_basis="consent", jurisdiction="CN", channel="web",
                                             issuer="grocery", key_id=key.key_id), key)
    for signed in (old, new):
        verify_receipt(load_receipt(json.loads(signed.to_json())), key.public_key)
    chain = HashChain()
    entries = [chain.append(json.loads(s.to_json())) for s in (old, new)]
    assert check_signatures(entries, key.public_key, "pinned").status == "pass"
    other = SigningKey.generate()
    assert check_signatures(entries, other.public_key, "pinned").status == "fail"
