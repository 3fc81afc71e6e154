"""Rasa's error body, and the one place where errors become HTTP statuses.

Every failure a client sees is `{"version", "status": "failure", "message", "reason",
"details", "help", "code"}`. `server.errors` classes map to statuses in `ERROR_STATUSES`;
routes that need a specific body raise `ApiError`.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError, ResponseValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import JSONResponse, Response
from starlette.routing import Match
from starlette.types import Scope

from server import RASA_COMPAT_VERSION
from server import errors as e
from server.auth.dependency import authorize_matched_route
from server.auth.log_redaction import redact
from server.logs import RepeatsCounted
from server.outages import OUTAGES

logger = logging.getLogger(__name__)

# A conversation's lock timeouts: a busy conversation, not a fault of the server. Under a
# burst every waiting message times out; one line per conversation and window says it.
LOCK_TIMEOUT_WINDOW_SECONDS = 60.0
BUSY_CONVERSATIONS = RepeatsCounted(logger, LOCK_TIMEOUT_WINDOW_SECONDS)

DOCS_URL = "https://rasa.com/docs/rasa"
HELP_HTTP_API = DOCS_URL + "/user-guide/configuring-http-api/"
HELP_SECURITY = HELP_HTTP_API + "#security-considerations"
HELP_EVENTS = DOCS_URL + "/pages/http-api"
# Rasa sends `help: null` when it has no link, but its own spec types `help` as a string;
# we always send a string so responses validate against the spec.
DEFAULT_HELP = HELP_EVENTS

GENERIC_500_MESSAGE = "An unexpected error occurred. The server log has the details."


def error_body(
    status: int,
    reason: str,
    message: str,
    details: dict[str, Any] | None = None,
    help_url: str | None = None,
) -> dict[str, Any]:
    """Rasa's error JSON, keys in Rasa's order."""
    return {
        "version": RASA_COMPAT_VERSION,
        "status": "failure",
        "message": message,
        "reason": reason,
        "details": details or {},
        "help": help_url or DEFAULT_HELP,
        "code": status,
    }


def error_response(
    status: int,
    reason: str,
    message: str,
    details: dict[str, Any] | None = None,
    help_url: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    return JSONResponse(
        error_body(status, reason, message, details, help_url), status_code=status, headers=headers
    )


class ApiError(Exception):
    """An HTTP error with an exact Rasa body; raise it from a route for a route-specific answer.

    Example: `ApiError(404, "Not found", "Conversation ID not found.")`.
    """

    def __init__(
        self,
        status: int,
        reason: str,
        message: str,
        details: dict[str, Any] | None = None,
        help_url: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message
        self.details = details
        self.help_url = help_url
        self.headers = headers

    def response(self) -> JSONResponse:
        return error_response(
            self.status, self.reason, self.message, self.details, self.help_url, self.headers
        )


def bad_request(
    message: str, parameter: str | None = None, location: str | None = None
) -> ApiError:
    """Rasa's 400 `BadRequest`, with `details` naming the parameter when there is one."""
    details = {"parameter": parameter, "in": location} if parameter and location else None
    return ApiError(400, "BadRequest", message, details)


@dataclass(frozen=True)
class ErrorStatus:
    """How one `server.errors` class is answered. `message=None` sends the error's own text."""

    status: int
    reason: str
    message: str | None = None
    help_url: str | None = None


# The one mapping from our error tree to HTTP. The most specific class wins (MRO order).
ERROR_STATUSES: dict[type[BaseException], ErrorStatus] = {
    e.AuthError: ErrorStatus(401, "NotAuthenticated", "User is not authenticated.", HELP_SECURITY),
    e.Forbidden: ErrorStatus(
        403, "NotAuthorized", "User has insufficient permissions.", HELP_SECURITY
    ),
    e.NoModelLoaded: ErrorStatus(
        409,
        "Conflict",
        "No agent loaded. To continue processing, a model of a trained agent needs to be loaded.",
        HELP_HTTP_API,
    ),
    e.NoDialogueModel: ErrorStatus(409, "Conflict", help_url=HELP_HTTP_API),
    e.InvalidEvent: ErrorStatus(400, "BadRequest", help_url=HELP_EVENTS),
    e.InvalidConversationId: ErrorStatus(400, "BadRequest"),
    e.MessageTooLong: ErrorStatus(400, "BadRequest"),
    e.InvalidProjectFile: ErrorStatus(400, "BadRequest"),
    e.InvalidConfig: ErrorStatus(400, "BadRequest"),
    e.ModelNotFound: ErrorStatus(400, "BadRequest"),
    e.UnsafeArchive: ErrorStatus(400, "BadRequest"),
    e.CorruptArchive: ErrorStatus(400, "BadRequest"),
    e.UnsupportedModel: ErrorStatus(400, "BadRequest"),
    e.SignatureError: ErrorStatus(400, "BadRequest"),
    e.ModelStorageFull: ErrorStatus(
        507,
        "InsufficientStorage",
        "The server has no disk space left for the model; the current model keeps serving.",
    ),
    e.ModelError: ErrorStatus(500, "LoadingError"),
    e.TrainingError: ErrorStatus(500, "TrainingError"),
    # Fixed texts: these errors may carry connection details that are not the client's business.
    e.StoreUnavailable: ErrorStatus(
        503, "ServiceUnavailable", "A storage backend is unavailable; retry later."
    ),
    e.StoreRefusedData: ErrorStatus(400, "BadRequest"),
    e.StoreFailed: ErrorStatus(
        500, "ServerError", "A storage backend failed; the server log has the details."
    ),
    e.LockTimeout: ErrorStatus(503, "ServiceUnavailable", "The conversation is busy; retry later."),
    e.ActionError: ErrorStatus(500, "ConversationError"),
    e.BotServerError: ErrorStatus(500, "ServerError"),
}

# Statuses after which a client may simply retry.
_RETRY_AFTER_SECONDS = {503: "1"}


def status_of(exc: BaseException) -> ErrorStatus | None:
    for cls in type(exc).__mro__:
        found = ERROR_STATUSES.get(cls)
        if found is not None:
            return found
    return None


# An `X-Request-ID` a proxy set is kept if it is a plain token (it goes into the log).
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:+/=-]{1,128}")
REQUEST_ID_HEADER = "X-Request-ID"


def request_id(scope: Scope | None) -> str:
    """The request's `X-Request-ID` when a proxy set a plain one, else a new id."""
    for name, value in (scope or {}).get("headers", ()):
        if name == b"x-request-id":
            given = value.decode("latin-1")
            if _REQUEST_ID.fullmatch(given):
                return given
    return uuid.uuid4().hex


def _request_line(scope: Scope | None) -> str:
    if not scope or "method" not in scope:
        return "a request"
    return f"{scope['method']} {scope.get('path', '')}"


CLIENT_DISCONNECTED_MESSAGE = "The client closed the connection before the request body ended."


def response_for(exc: BaseException, scope: Scope | None = None) -> JSONResponse:
    """The error response for any exception; unknown ones are a generic 500, logged once with
    their traceback. A 500 names a request id, in the log line, the `X-Request-ID` header and
    the body's `details`, so a client's report finds its traceback (which the client never
    sees)."""
    if isinstance(exc, ApiError):
        return exc.response()
    if isinstance(exc, StarletteHTTPException) and exc.status_code >= 400:
        return error_response(
            exc.status_code, _reason_for(exc.status_code), str(exc.detail), headers=exc.headers
        )
    if isinstance(exc, ClientDisconnect):
        # The client went away (or was cut off for sending too slowly) before its body
        # ended: nothing of ours failed, and nobody reads the answer. Before, every such
        # request was an "Unhandled error" with a traceback and a 500.
        logger.info(
            "%s: the client closed the connection before its request body ended",
            _request_line(scope),
        )
        return error_response(400, "BadRequest", CLIENT_DISCONNECTED_MESSAGE)
    mapped = status_of(exc)
    if mapped is None or mapped.status >= 500:
        ident = request_id(scope)
        where = _request_line(scope)
        if mapped is None:
            logger.error("Unhandled error in %s (request id %s)", where, ident, exc_info=exc)
        elif isinstance(exc, e.LockTimeout):
            BUSY_CONVERSATIONS.log(
                str(exc),
                "%s in %s (request id %s): %s Answered 503; more of these within %g s are "
                "counted in one line.",
                type(exc).__name__,
                where,
                ident,
                exc,
                BUSY_CONVERSATIONS.window,
            )
        elif isinstance(exc, e.StoreUnavailable) and exc.dependency:
            # One line when it goes away, one a window, one when it is back (server.outages).
            OUTAGES.refused(exc.dependency, exc.reason, f"{mapped.status} {mapped.reason}")
            logger.debug("%s in %s (request id %s): %s", type(exc).__name__, where, ident, exc)
        else:
            logger.error("%s in %s (request id %s): %s", type(exc).__name__, where, ident, exc)
        headers = {REQUEST_ID_HEADER: ident}
        if mapped is None:
            return error_response(
                500, "ServerError", GENERIC_500_MESSAGE, {"request_id": ident}, headers=headers
            )
    else:
        headers = {}
        if not isinstance(exc, e.Refused):  # logged with its route and reason by server.auth
            logger.info("%s: %s", type(exc).__name__, exc)
    retry = _RETRY_AFTER_SECONDS.get(mapped.status)
    if retry:
        headers["Retry-After"] = retry
    return error_response(
        mapped.status,
        mapped.reason,
        mapped.message or redact(str(exc)) or HTTPStatus(mapped.status).phrase,
        {"request_id": headers[REQUEST_ID_HEADER]} if REQUEST_ID_HEADER in headers else None,
        help_url=mapped.help_url,
        headers=headers or None,
    )


_REASONS = {400: "BadRequest", 404: "NotFound", 413: "PayloadTooLarge"}


def _reason_for(status: int) -> str:
    if status in _REASONS:
        return _REASONS[status]
    try:
        return HTTPStatus(status).phrase.replace(" ", "").replace("-", "")
    except ValueError:
        return "Error"


def _http_exception_message(request: Request, exc: StarletteHTTPException) -> str:
    default_phrase = _reason_phrase(exc.status_code)
    if exc.detail and exc.detail != default_phrase:
        return str(exc.detail)
    if exc.status_code == 404:
        return f"Requested URL {request.url.path} not found"
    if exc.status_code == 405:
        return f"Method {request.method} not allowed for URL {request.url.path}"
    return default_phrase


def _reason_phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _first_validation_error(exc: RequestValidationError) -> tuple[str, dict[str, Any] | None]:
    """A message and Rasa-style details for the first problem, never echoing the input."""
    errors = exc.errors()
    if not errors:
        return "The request is invalid.", None
    first = errors[0]
    loc = [str(part) for part in first.get("loc", ())]
    if first.get("type") == "json_invalid":
        return "Failed when parsing body as json.", {"in": "body"}
    location = loc[0] if loc else "body"
    parameter = ".".join(loc[1:]) if len(loc) > 1 else None
    what = f"{location} parameter '{parameter}'" if parameter else f"request {location}"
    message = f"Invalid {what}: {first.get('msg', 'invalid value')}"
    details: dict[str, Any] = {"in": location}
    if parameter:
        details["parameter"] = parameter
    return message, details


async def _on_api_error(request: Request, exc: Exception) -> Response:
    return response_for(exc, request.scope)


async def _on_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    status = exc.status_code
    if status < 400 or status in (204, 304):
        return Response(status_code=status, headers=exc.headers)
    headers = dict(exc.headers) if exc.headers else None
    if status == 405 and headers and "Allow" in headers:
        headers["Allow"] = _allowed(request, headers["Allow"])
        if request.method == "OPTIONS":
            # OPTIONS on a route names its methods, without credentials, as Rasa's automatic
            # OPTIONS answers do (HAProxy's default health check is `OPTIONS /`).
            return Response(status_code=200, headers=headers)
    return error_response(
        status, _reason_for(status), _http_exception_message(request, exc), headers=headers
    )


_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


def _allowed(request: Request, allow: str) -> str:
    """The `Allow` header of a path: every method some route of the path answers (the router
    names only its first route's: `PUT` for /model, which answers `DELETE` too), HEAD (with
    GET) and OPTIONS."""
    routes = request.app.router.routes
    methods = [m.strip() for m in allow.split(",") if m.strip()]
    for method in _METHODS:
        scope = {**request.scope, "method": method}
        if method not in methods and any(r.matches(scope)[0] is Match.FULL for r in routes):
            methods.append(method)
    if "GET" in methods and "HEAD" not in methods:
        methods.append("HEAD")
    if "OPTIONS" not in methods:
        methods.append("OPTIONS")
    return ", ".join(methods)


async def _on_validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    try:
        authorize_matched_route(request)
    except (e.AuthError, e.Forbidden) as denied:
        return response_for(denied)
    message, details = _first_validation_error(exc)
    return error_response(400, "BadRequest", message, details)


async def _on_response_validation_error(request: Request, exc: Exception) -> Response:
    logger.error("A response broke its declared schema: %s", exc)
    return error_response(500, "ServerError", GENERIC_500_MESSAGE)


def install_error_handlers(app: FastAPI) -> None:
    """Route every error FastAPI/Starlette or our code raises to Rasa's error body.

    Unknown exceptions are answered by `server.api.middleware.RequestGuardMiddleware`, inside
    CORS, so that even a 500 carries the CORS headers.
    """
    app.add_exception_handler(ApiError, _on_api_error)
    app.add_exception_handler(e.BotServerError, _on_api_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_exception)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(ResponseValidationError, _on_response_validation_error)
