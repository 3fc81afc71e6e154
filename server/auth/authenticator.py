"""Rasa's access decision for one request: static token, then JWT and role, else open or 401.

Pure logic, no HTTP framework: the FastAPI dependency in `server.auth.dependency` feeds it
the `token` query parameter, the Authorization header and the route's conversation id, and
logs the reason of a refusal (`AuthError.why`, `Forbidden.why`) with `refusals`.
"""

from __future__ import annotations

import unicodedata

from server.auth.bearer_jwt import NOT_AUTHENTICATED, JwtVerifier, bearer_token
from server.auth.config import AuthConfig
from server.auth.refusals import RefusalLog
from server.auth.roles import USER, Principal, may_access
from server.auth.static_token import token_matches, warn_if_short
from server.errors import AuthError, Forbidden, brief, told_apart


class Authenticator:
    """Decides who a request is and whether it may reach a route."""

    def __init__(self, config: AuthConfig | None = None):
        self.config = config or AuthConfig()
        self._jwt = JwtVerifier(self.config) if self.config.uses_jwt else None
        if self.config.token:
            warn_if_short(self.config.token)
        self.refusals = RefusalLog()

    @property
    def is_open(self) -> bool:
        return self.config.is_open

    def authenticate(
        self,
        token: str | None,
        authorization: str | None,
        conversation_id: str | None,
    ) -> Principal:
        """The principal of an allowed request; raises AuthError (401) or Forbidden (403).

        Order as in Rasa: a matching static token wins; otherwise a valid JWT decides by
        role (403 when the role does not allow the route); with no security configured
        everything is open; anything else is 401.
        """
        if self.config.token and token_matches(self.config.token, token):
            return Principal("token")
        if self.config.is_open:
            return Principal("open")
        reasons = []
        if token is not None:
            reasons.append("wrong token" if self.config.token else "?token= but no --auth-token")
        if authorization:
            if self._jwt is None:
                reasons.append("an Authorization header but no --jwt-secret")
            else:
                raw = bearer_token(authorization)
                if raw is None:
                    reasons.append("malformed Authorization header (not 'Bearer <jwt>')")
                else:
                    try:
                        payload = self._jwt.verify(raw)
                    except AuthError as rejected:
                        reasons.append(rejected.why)
                    else:
                        return self._authorize(Principal.from_jwt_payload(payload), conversation_id)
        raise AuthError(NOT_AUTHENTICATED, "; ".join(reasons) or "no credentials")

    @staticmethod
    def _authorize(principal: Principal, conversation_id: str | None) -> Principal:
        if may_access(principal, conversation_id):
            return principal
        if principal.role is None:
            why = "the JWT names no role (user.role)"
        elif principal.role != USER:
            why = f"the JWT's role {brief(principal.role)} is neither 'admin' nor 'user'"
        elif conversation_id is None:
            why = f"role 'user' of {brief(principal.username)} may reach only its own conversation"
        else:
            why = (
                f"role 'user' of {brief(principal.username)} may not reach conversation "
                f"{brief(conversation_id)}"
            )
            # Printed alike (one text in two Unicode forms, or long ids cut alike): the
            # operator needs to see why they are not equal.
            username = principal.username or ""
            if _same_text(username, conversation_id):
                why += " (they differ only in Unicode normalisation: "
                why += f"{told_apart(username, conversation_id)})"
            elif brief(username) == brief(conversation_id):
                why += f" (they differ: {told_apart(username, conversation_id)})"
        raise Forbidden("User has insufficient permissions.", why)


def _same_text(username: str | None, conversation_id: str) -> bool:
    """Whether the two are one text in two Unicode forms (NFC 'é', NFD 'e' + accent)."""
    return username is not None and unicodedata.normalize("NFC", username) == unicodedata.normalize(
        "NFC", conversation_id
    )
