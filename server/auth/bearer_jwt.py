"""JWTs from `Authorization: Bearer`: extraction and verification against one pinned algorithm.

Only the configured algorithm is accepted, which refuses `alg: none` and HS/RS confusion
(a token signed with HMAC using the public key as secret).
"""

from __future__ import annotations

from typing import Any

from server.auth.config import AuthConfig, verification_key
from server.errors import AuthError

NOT_AUTHENTICATED = "User is not authenticated."


def bearer_token(authorization: str | None) -> str | None:
    """The credentials of an `Authorization: Bearer <token>` header, else None.

    The scheme name is case-insensitive (RFC 7235); anything malformed counts as absent.
    """
    if not authorization:
        return None
    scheme, _, credentials = authorization.strip().partition(" ")
    credentials = credentials.strip()
    if scheme.lower() != "bearer" or not credentials or " " in credentials:
        return None
    return credentials


class JwtVerifier:
    """Verifies JWT signatures and time claims with the key and method of an AuthConfig."""

    def __init__(self, config: AuthConfig):
        self._method = config.jwt_method
        self._key = verification_key(config)
        self._leeway = config.jwt_leeway
        self._audience = list(config.jwt_audience) or None

    def verify(self, token: str) -> dict[str, Any]:
        """The payload of a valid token; raises AuthError saying why (expired, bad signature,
        algorithm...) otherwise. The reason names the error's class, never the token."""
        import jwt  # here: a server without JWT settings never loads PyJWT

        try:
            payload = jwt.decode(
                token,
                self._key,
                algorithms=[self._method],
                leeway=self._leeway,
                audience=self._audience,
                options={"verify_signature": True, "verify_exp": True, "verify_nbf": True},
            )
        except jwt.InvalidAudienceError as exc:
            if self._audience is None:
                why = (
                    "the JWT names an audience ('aud'), and none is accepted; set "
                    "--jwt-audience (or BOTSERVER_JWT_AUDIENCE) to the audience it names"
                )
            else:
                why = f"JWT rejected: {exc} (its 'aud' is not an accepted audience)"
            raise AuthError(NOT_AUTHENTICATED, why) from None
        except jwt.PyJWTError as exc:
            raise AuthError(NOT_AUTHENTICATED, f"JWT rejected: {type(exc).__name__}") from None
        if not isinstance(payload, dict):
            raise AuthError(NOT_AUTHENTICATED, "JWT rejected: its payload is not an object")
        return payload
