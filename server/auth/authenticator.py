"""Rasa's access decision for one request: static token, then JWT and role, else open or 401.

Pure logic, no HTTP framework: the FastAPI dependency in `server.auth.dependency` feeds it
the `token` query parameter, the Authorization header and the route's conversation id.
"""

from __future__ import annotations

from server.auth.bearer_jwt import JwtVerifier, bearer_token
from server.auth.config import AuthConfig
from server.auth.roles import Principal, may_access
from server.auth.static_token import token_matches
from server.errors import AuthError, Forbidden


class Authenticator:
    """Decides who a request is and whether it may reach a route."""

    def __init__(self, config: AuthConfig | None = None):
        self.config = config or AuthConfig()
        self._jwt = JwtVerifier(self.config) if self.config.uses_jwt else None

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
        if self._jwt is not None:
            raw = bearer_token(authorization)
            payload = self._jwt.verify(raw) if raw is not None else None
            if payload is not None:
                principal = Principal.from_jwt_payload(payload)
                if may_access(principal, conversation_id):
                    return principal
                raise Forbidden("User has insufficient permissions.")
        if self.config.is_open:
            return Principal("open")
        raise AuthError("User is not authenticated.")
