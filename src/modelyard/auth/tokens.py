"""API tokens: high-entropy random strings, shown once and stored only as SHA-256 hashes.

A salted slow hash (bcrypt, argon2) protects low-entropy passwords; these tokens carry
256 random bits, so one SHA-256 makes the stored value useless to a thief while keeping
the look-up a single indexed equality.
"""

from __future__ import annotations

import hashlib
import secrets

TOKEN_PREFIX = "myd_"  # noqa: S105  (a public marker, not a secret)
_DISPLAY_PREFIX_LEN = 8


def generate_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def display_prefix(token: str) -> str:
    """The start of a token, safe to show in listings so a person can tell tokens apart."""
    return token[: len(TOKEN_PREFIX) + _DISPLAY_PREFIX_LEN]


def looks_like_api_token(token: str) -> bool:
    return token.startswith(TOKEN_PREFIX)
