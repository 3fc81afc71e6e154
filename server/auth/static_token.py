"""The static `--auth-token`, read from the `token` query parameter only (as Rasa does)."""

from __future__ import annotations

import hmac

TOKEN_QUERY_PARAMETER = "token"


def token_matches(expected: str, provided: str | None) -> bool:
    """Compare in constant time, so response timing does not reveal a prefix of the token."""
    if provided is None:
        return False
    return hmac.compare_digest(expected.encode("utf-8"), provided.encode("utf-8"))
