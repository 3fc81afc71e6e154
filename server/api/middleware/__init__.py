"""Pure ASGI middleware of the HTTP API (no BaseHTTPMiddleware: it is slow and buffers)."""

from server.api.middleware.guard import (
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_RESPONSE_TIMEOUT_SECONDS,
    BodyTooLarge,
    RequestGuardMiddleware,
)

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_RESPONSE_TIMEOUT_SECONDS",
    "BodyTooLarge",
    "RequestGuardMiddleware",
]
