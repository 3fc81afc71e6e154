"""Security of the HTTP API: the static token, JWTs with roles, and the route guard."""

from server.auth.authenticator import Authenticator
from server.auth.config import AuthConfig
from server.auth.dependency import require_auth
from server.auth.log_redaction import (
    RedactSecretsFilter,
    install_log_redaction,
    redact,
    redact_also,
)
from server.auth.roles import Principal, may_access

__all__ = [
    "AuthConfig",
    "Authenticator",
    "Principal",
    "RedactSecretsFilter",
    "install_log_redaction",
    "may_access",
    "redact",
    "redact_also",
    "require_auth",
]
