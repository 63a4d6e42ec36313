"""Display masking (脫敏) of phone numbers, e-mail addresses, names and cards.

Masking is for screens, exports and logs read by staff; it is not
anonymisation.  The fixed-width ``***`` in e-mails hides the local part's
length; phone masks keep the national number's length because staff use it to
recognise the number's shape (``138****5678`` is the customary Chinese form).
"""

from __future__ import annotations

import phonenumbers

from privacy.errors import IdentifierError
from privacy.pseudonyms import normalise_card

__all__ = ["mask_card", "mask_email", "mask_name", "mask_phone"]


def mask_phone(value: str, default_region: str | None = None) -> str:
    """Mask a phone number's national significant number, without its country code.

    Numbers of 8+ digits keep the first 3 and last 4 digits
    (``"+8613812345678" -> "138****5678"``); shorter ones keep only the last 2.
    """
    if not isinstance(value, str):
        raise IdentifierError("phone number must be a string")
    try:
        number = phonenumbers.parse(value, default_region.upper() if default_region else None)
    except phonenumbers.NumberParseException:
        raise IdentifierError("not a phone number") from None
    national = phonenumbers.national_significant_number(number)
    if len(national) >= 8:
        return national[:3] + "*" * (len(national) - 7) + national[-4:]
    if len(national) >= 3:
        return "*" * (len(national) - 2) + national[-2:]
    return "*" * len(national)


def mask_email(value: str) -> str:
    """``"alice@example.com" -> "a***e@example.com"``; local parts of 1-2 characters keep only the first."""
    if not isinstance(value, str) or value.count("@") != 1:
        raise IdentifierError("not an e-mail address")
    local, domain = value.strip().split("@")
    if not local or not domain:
        raise IdentifierError("not an e-mail address")
    if len(local) <= 2:
        return f"{local[0]}***@{domain}"
    return f"{local[0]}***{local[-1]}@{domain}"


def mask_name(value: str) -> str:
    """Keep the first character of each word: ``"Alice Smith" -> "A**** S****"``, ``"张三丰" -> "张**"``."""
    if not isinstance(value, str) or not value.strip():
        raise IdentifierError("name must be a non-empty string")
    return " ".join(word[0] + "*" * (len(word) - 1) if len(word) > 1 else "*" for word in value.split())


def mask_card(value: str) -> str:
    """Show only the last four digits: ``"4111 1111 1111 1111" -> "************1111"``."""
    digits = normalise_card(value)
    return "*" * (len(digits) - 4) + digits[-4:]
