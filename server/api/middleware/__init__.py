"""Pure ASGI middlewares of the HTTP API (no BaseHTTPMiddleware: it is slow and buffers)."""

from server.api.middleware.body_limit import DEFAULT_MAX_BODY_BYTES, BodyLimitMiddleware
from server.api.middleware.catch_all import CatchAllMiddleware
from server.api.middleware.timeout import (
    DEFAULT_RESPONSE_TIMEOUT_SECONDS,
    ResponseTimeoutMiddleware,
)

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_RESPONSE_TIMEOUT_SECONDS",
    "BodyLimitMiddleware",
    "CatchAllMiddleware",
    "ResponseTimeoutMiddleware",
]
