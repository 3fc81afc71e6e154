"""What the HTTP server is told at startup (CLI flags of `botserver run`), as one value."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from server.api.middleware import DEFAULT_MAX_BODY_BYTES, DEFAULT_RESPONSE_TIMEOUT_SECONDS
from server.auth import AuthConfig


@dataclass(frozen=True)
class ApiSettings:
    """Settings of the app `create_app` builds.

    `enable_api` serves the OpenAPI document (and docs pages when `docs_ui`); `cors_origins`
    is `--cors` (origins, or `["*"]`; empty means no cross-origin access); `response_timeout`
    in seconds (None or 0: none); `max_body_bytes` (0: no limit).
    """

    auth: AuthConfig = field(default_factory=AuthConfig)
    enable_api: bool = True
    cors_origins: Sequence[str] = ()
    response_timeout: float | None = DEFAULT_RESPONSE_TIMEOUT_SECONDS
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    docs_ui: bool = False
