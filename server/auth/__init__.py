"""Security of the HTTP API: the static token, JWTs with roles, and the route guard.

Each name is imported on first use: logging set-up (every CLI command) needs only the log
redaction, not the route guard and the web framework it brings."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from server.auth.authenticator import Authenticator
    from server.auth.config import AuthConfig
    from server.auth.dependency import require_auth
    from server.auth.log_redaction import (
        RedactSecretsFilter,
        install_log_redaction,
        keep_endpoint_secrets_out_of_logs,
        redact,
        redact_also,
    )
    from server.auth.roles import Principal, may_access

_MODULES = {
    "AuthConfig": "server.auth.config",
    "Authenticator": "server.auth.authenticator",
    "Principal": "server.auth.roles",
    "RedactSecretsFilter": "server.auth.log_redaction",
    "install_log_redaction": "server.auth.log_redaction",
    "keep_endpoint_secrets_out_of_logs": "server.auth.log_redaction",
    "may_access": "server.auth.roles",
    "redact": "server.auth.log_redaction",
    "redact_also": "server.auth.log_redaction",
    "require_auth": "server.auth.dependency",
}

__all__ = [
    "AuthConfig",
    "Authenticator",
    "Principal",
    "RedactSecretsFilter",
    "install_log_redaction",
    "keep_endpoint_secrets_out_of_logs",
    "may_access",
    "redact",
    "redact_also",
    "require_auth",
]


def __getattr__(name: str) -> Any:
    if name not in _MODULES:
        raise AttributeError(f"module 'server.auth' has no attribute {name!r}")
    return getattr(importlib.import_module(_MODULES[name]), name)
