"""Field types shared by the request schemas."""

import unicodedata
from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator, AwareDatetime, BeforeValidator, EmailStr, Field, StringConstraints

PASSWORD_MIN_BYTES = 8
PASSWORD_MAX_BYTES = 72  # bcrypt reads no further; longer passwords are refused, not truncated


def _storable(value: str) -> str:
    """Refuse what PostgreSQL cannot store in a text column or UTF-8 cannot encode."""
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    try:
        value.encode()
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode text") from None
    return value


def _password(value: str) -> str:
    size = len(_storable(value).encode())
    if not PASSWORD_MIN_BYTES <= size <= PASSWORD_MAX_BYTES:
        raise ValueError(f"must be {PASSWORD_MIN_BYTES} to {PASSWORD_MAX_BYTES} bytes long in UTF-8")
    return value


def _nfkc(value: object) -> object:
    """Compatibility forms (fullwidth letters, ligatures...) read as the plain characters they stand for."""
    return unicodedata.normalize("NFKC", value) if isinstance(value, str) else value


Storable = AfterValidator(_storable)
Email = Annotated[EmailStr, BeforeValidator(_nfkc), StringConstraints(max_length=254), AfterValidator(str.lower)]
"""An address as stored and looked up: NFKC-normalised, validated, lower-cased."""
Password = Annotated[str, AfterValidator(_password), Field(description="8 to 72 bytes in UTF-8")]


def _aware_to_utc(value: datetime) -> datetime:
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("is out of range once converted to UTC") from None


Instant = Annotated[AwareDatetime, AfterValidator(_aware_to_utc)]
