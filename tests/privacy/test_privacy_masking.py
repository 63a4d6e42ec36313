"""Display masking."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privacy.errors import IdentifierError
from privacy.masking import mask_card, mask_email, mask_name, mask_phone


def test_examples() -> None:
    assert mask_phone("+8613812345678") == "138****5678"
    assert mask_phone("13812345678", "CN") == "138****5678"
    assert mask_phone("+1 415 555 2671") == "415***2671"
    assert mask_email("alice@example.com") == "a***e@example.com"
    assert mask_email("al@example.com") == "a***@example.com"
    assert mask_name("Alice Smith") == "A**** S****"
    assert mask_name("张三丰") == "张**"
    assert mask_name("X") == "*"
    assert mask_card("4111 1111 1111 1111") == "************1111"


@given(st.integers(0, 10**8 - 1))
@settings(max_examples=50)
def test_phone_mask_keeps_only_first_three_and_last_four(suffix: int) -> None:
    national = f"139{suffix:08d}"
    masked = mask_phone("+86" + national)
    assert masked == national[:3] + "****" + national[-4:]
    assert not masked.startswith(("+", "86"))  # the country code stays out


@given(st.text(alphabet="abcdefghij", min_size=3, max_size=30))
def test_email_mask_hides_length(local: str) -> None:
    masked = mask_email(f"{local}@example.com")
    assert masked == f"{local[0]}***{local[-1]}@example.com"


@pytest.mark.parametrize(
    ("fn", "value"),
    [
        (mask_phone, "not a phone"),
        (mask_email, "no-at"),
        (mask_email, "@example.com"),
        (mask_name, "   "),
        (mask_card, "1234"),
        (mask_card, "4111 1111 1111 1112"),
    ],
)
def test_garbage_is_rejected(fn, value: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(IdentifierError):
        fn(value)
