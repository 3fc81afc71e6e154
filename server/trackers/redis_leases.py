"""The leases a prune holds in the Redis lock store, as a Redis tracker store on the same
server checks them in the script that deletes a conversation (the look and the delete in one
step)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from redis.asyncio import Redis

# A Redis server and the user a client logs in as (`server_of`).
Server = tuple[str, int | None, str | None]


def server_of(client: Redis) -> Server:
    """Where `client` connects (host and port, or a socket's path) and as whom: two clients
    alike reach the same data, with the same rights to it. (A host written two ways,
    `localhost` and `127.0.0.1`, is two servers here.)"""
    kwargs = client.connection_pool.connection_kwargs
    if kwargs.get("path"):
        return str(kwargs["path"]), None, kwargs.get("username")
    return (
        str(kwargs.get("host", "localhost")),
        int(kwargs.get("port", 6379)),
        kwargs.get("username"),
    )


def database_of(client: Redis) -> int:
    return int(client.connection_pool.connection_kwargs.get("db") or 0)


@dataclass(frozen=True)
class RedisLeases:
    """`IdleLocks.leases` of the Redis lock store: the server and database the leases are
    in, each held conversation's lease key and token, and `gone`, told of the leases the
    delete's scripts found gone (said, and let go of, as those its renewal finds gone)."""

    server: Server
    db: int
    held: dict[str, tuple[str, str]]
    gone: Callable[[Sequence[str]], None]

    def lease_of(self, client: Redis, conversation_id: str) -> tuple[str, str] | None:
        """The lease key and token a script of `client` checks before it deletes the
        conversation, or None when `client` is not on this server as the same user."""
        if not self.on_server_of(client):
            return None
        return self.held.get(conversation_id)

    def on_server_of(self, client: Redis) -> bool:
        """Whether `client` reaches these leases' server as the same user."""
        return server_of(client) == self.server
