"""The FastAPI dependency that guards a route: `Depends(require_auth("conversation_id"))`.

It reads the Authenticator that `create_app` puts on `app.state.authenticator`, so routers
can be declared before the app (and its security settings) exist.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import Depends, Request
from fastapi.security import APIKeyQuery, HTTPBearer

from server.auth.authenticator import Authenticator
from server.auth.bearer_jwt import NOT_AUTHENTICATED
from server.auth.roles import Principal
from server.auth.static_token import TOKEN_QUERY_PARAMETER
from server.errors import AuthError, Forbidden, Refused

APP_STATE_KEY = "authenticator"

# Declared only so the OpenAPI document lists Rasa's two schemes; the decision itself reads
# the raw request, so these never raise.
_token_scheme = APIKeyQuery(
    name=TOKEN_QUERY_PARAMETER,
    scheme_name="TokenAuth",
    description="The static token given to `--auth-token`.",
    auto_error=False,
)
_jwt_scheme = HTTPBearer(
    scheme_name="JWT",
    bearerFormat="JWT",
    description='A JWT signed with `--jwt-secret`; payload `{"user": {"username", "role"}}`.',
    auto_error=False,
)


def authenticator_of(request: Request) -> Authenticator:
    authenticator = getattr(request.app.state, APP_STATE_KEY, None)
    if not isinstance(authenticator, Authenticator):
        # Fail closed: a protected route on an app built without create_app is a bug.
        raise RuntimeError("app.state.authenticator is not set; build the app with create_app")
    return authenticator


def query_token(request: Request) -> str | None:
    """The `token` query parameter; the first that is not empty when it is repeated, as Rasa
    (Sanic, which drops blank values) reads it."""
    values = request.query_params.getlist(TOKEN_QUERY_PARAMETER)
    return next((value for value in values if value), None)


def authenticate_request(request: Request, conversation_param: str | None = None) -> Principal:
    """The principal `request` acts as on a route whose conversation id is the path parameter
    `conversation_param` (None: no conversation); raises AuthError or Forbidden."""
    conversation_id = None
    if conversation_param is not None:
        value = request.path_params.get(conversation_param)
        conversation_id = value if isinstance(value, str) else None
    authenticator = authenticator_of(request)
    authorizations = request.headers.getlist("authorization")
    try:
        if len(authorizations) > 1 and not authenticator.is_open:
            # The field holds one credential (RFC 9110); a gateway that checked another one
            # than the first must not let the unchecked one in.
            why = f"{len(authorizations)} Authorization headers (one is allowed)"
            raise AuthError(NOT_AUTHENTICATED, why)
        return authenticator.authenticate(
            query_token(request), authorizations[0] if authorizations else None, conversation_id
        )
    except Refused as refused:
        _record(request, refused)
        raise


def forbid(request: Request, why: str) -> Forbidden:
    """The 403 for a request its principal may make but not with what it sends (a route's
    own check, after the guard's), logged as the guard's refusals are; raise it."""
    refused = Forbidden("User has insufficient permissions.", why)
    _record(request, refused)
    return refused


def _record(request: Request, refused: Refused) -> None:
    status = 403 if isinstance(refused, Forbidden) else 401
    client = request.client.host if request.client else "an unknown client"
    what = f"{request.method} {request.url.path} with {status}"
    authenticator_of(request).refusals.record(what, client, refused.why)


def require_auth(
    conversation_param: str | None = None,
) -> Callable[..., Awaitable[Principal]]:
    """A dependency that lets a request through or raises AuthError (401) / Forbidden (403).

    `conversation_param` names the path parameter holding the conversation id, for routes
    a `user`-role JWT may reach when the id equals its username. Put it in the route's
    `dependencies=[...]` (or first among the parameters) so it runs before anything that
    answers 409 or 404, and before the body is read.
    """

    async def check(
        request: Request,
        _token: str | None = Depends(_token_scheme),
        _jwt: object = Depends(_jwt_scheme),
    ) -> Principal:
        principal = authenticate_request(request, conversation_param)
        request.state.principal = principal
        return principal

    check.conversation_param = conversation_param  # type: ignore[attr-defined]
    check.is_auth_guard = True  # type: ignore[attr-defined]
    return check


def _guards(dependant: Any) -> list[Any]:
    found = []
    for sub in getattr(dependant, "dependencies", ()):
        if getattr(sub.call, "is_auth_guard", False):
            found.append(sub.call)
        found.extend(_guards(sub))
    return found


def authorize_matched_route(request: Request) -> None:
    """Run the auth guards of the route `request` matched; raise AuthError or Forbidden.

    FastAPI parses a JSON body before it resolves dependencies, so a malformed body would
    answer 400 ahead of the guard. The error handler calls this first, keeping auth first.
    """
    route = request.scope.get("route")
    for guard in _guards(getattr(route, "dependant", None)):
        authenticate_request(request, guard.conversation_param)
