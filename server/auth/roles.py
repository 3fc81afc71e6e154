"""Who a request acts as, and what that identity may reach (Rasa's two JWT roles)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

ADMIN = "admin"
USER = "user"

PrincipalKind = Literal["open", "token", "jwt"]


@dataclass(frozen=True)
class Principal:
    """The identity a request was let in as.

    `open` when the API has no security, `token` for the static `--auth-token` (full
    access), `jwt` for a verified JWT, whose payload `user` object gives username and role.
    """

    kind: PrincipalKind
    username: str | None = None
    role: str | None = None

    @classmethod
    def from_jwt_payload(cls, payload: dict[str, Any]) -> Principal:
        user = payload.get("user")
        if not isinstance(user, dict):
            return cls("jwt")
        username = user.get("username")
        role = user.get("role")
        return cls(
            "jwt",
            username=username if isinstance(username, str) else None,
            role=role if isinstance(role, str) else None,
        )

    @property
    def is_admin(self) -> bool:
        return self.kind != "jwt" or self.role == ADMIN


def may_access(principal: Principal, conversation_id: str | None) -> bool:
    """Whether `principal` may use a route about `conversation_id` (None: no conversation).

    An admin (or the static token) may do everything; a `user` only routes whose
    conversation id is exactly its username; any other role, or none, nothing.
    """
    if principal.is_admin:
        return True
    if principal.role == USER:
        return conversation_id is not None and principal.username == conversation_id
    return False
