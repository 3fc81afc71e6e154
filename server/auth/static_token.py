"""The static `--auth-token`, read from the `token` query parameter only (as Rasa does)."""

from __future__ import annotations

import hashlib
import hmac
import logging

logger = logging.getLogger(__name__)

TOKEN_QUERY_PARAMETER = "token"
# Each guess costs an attacker one request; 16 random characters are out of reach.
MIN_TOKEN_CHARS = 16


def warn_if_short(token: str) -> None:
    if len(token) < MIN_TOKEN_CHARS:
        logger.warning(
            "--auth-token is shorter than %d characters; a longer random one is safer "
            "(python -c 'import secrets; print(secrets.token_urlsafe(32))').",
            MIN_TOKEN_CHARS,
        )


def token_matches(expected: str, provided: str | None) -> bool:
    """Compare in constant time, so response timing reveals neither a prefix nor the length.

    `hmac.compare_digest` returns early when its arguments differ in length, so both sides
    are hashed first: the compared values always have the same length.
    """
    if provided is None:
        return False
    return hmac.compare_digest(_digest(expected), _digest(provided))


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
