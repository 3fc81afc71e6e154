"""socket.io rooms shared through Redis: a bot message emitted by any worker of any host
reaches the room's sockets on every one (python-socketio's Redis client manager).

Used when the socket.io channel names a Redis (`rooms_redis`), or endpoints.yml's lock store
or tracker store is one; otherwise `socketio_routing` relays pushes between the workers of
one host.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import socketio

from server.errors import InvalidConfig
from server.trackers.redis_client import create_client, key_prefix

logger = logging.getLogger(__name__)

# A publish is one round trip to Redis: a Redis that does not answer within this is skipped
# rather than waited for at every bot message (the sockets of this worker have the message
# already: it is emitted here before it is published).
_PUBLISH_SECONDS = 3.0
_SKIP_SECONDS = 30.0
_SCHEMES = ("redis://", "rediss://", "unix://")
# The sections of endpoints.yml whose Redis may carry the rooms, in order of preference, and
# the database each uses by default (as their stores do).
_SECTIONS = (("lock_store", 1), ("tracker_store", 0))


def rooms_redis_setting(value: Any) -> dict[str, Any] | bool | None:
    """`rooms_redis` from credentials.yml: a URL, a mapping of endpoints.yml's Redis keys,
    `false` (never share rooms through Redis), or None (take endpoints.yml's Redis if any)."""
    if value is None or value is True:
        return None
    if value is False:
        return False
    if isinstance(value, str) and value.strip():
        value = {"url": value.strip()}
    if isinstance(value, dict) and (value.get("url") or value.get("host")):
        where = str(value.get("url") or value.get("host"))
        if "://" in where and not where.startswith(_SCHEMES):
            raise InvalidConfig(
                f"'rooms_redis' must be a redis://, rediss:// or unix:// URL, not '{where}'"
            )
        return dict(value)
    raise InvalidConfig(
        "'rooms_redis' must be a Redis URL (redis://host:6379/0), a mapping with 'url' or "
        "'host' (and 'port', 'db', 'password', 'use_ssl', 'key_prefix'), or false"
    )


def endpoints_redis(endpoints: dict[str, Any]) -> tuple[dict[str, Any], int] | None:
    """The Redis endpoints.yml already uses (lock store, else tracker store) and its default
    database; None if none."""
    for section, default_db in _SECTIONS:
        config = endpoints.get(section)
        if isinstance(config, dict) and str(config.get("type", "")).lower() == "redis":
            return config, default_db
    return None


class RedisRooms(socketio.AsyncRedisManager):  # type: ignore[misc]
    """python-socketio's Redis manager on a Redis endpoint's keys, with a bounded publish.

    Its channel is `<key_prefix>:socketio:rooms:<db>`: the servers of one deployment share it
    (as they share the lock store's keys), another deployment on the same Redis has its own,
    by its prefix or its database (Redis's pub/sub channels are shared by every database).
    """

    def __init__(self, config: dict[str, Any], default_db: int) -> None:
        publisher = create_client(config, default_db)
        db = publisher.connection_pool.connection_kwargs.get("db", 0)
        super().__init__(channel=f"{key_prefix(config, 'socketio')}rooms:{db}")
        self.config = config
        self.default_db = default_db
        self._publisher = publisher
        self._skipped_until = 0.0

    async def emit(
        self,
        event: str,
        data: Any,
        namespace: str | None = None,
        room: str | None = None,
        **kw: Any,
    ) -> Any:
        room = kw.pop("to", None) or room
        if room is not None and self.is_connected(room, namespace or "/"):
            # A socket id held here (a reply without session_persistence): no other server
            # can hold it, so it is not published (which costs about half a turn).
            kw["ignore_queue"] = True
        return await super().emit(event, data, namespace=namespace, room=room, **kw)

    def _redis_connect(self) -> None:
        # The subscriber's connection waits for messages as long as none come: no read
        # timeout (one would drop the subscription, and the messages meanwhile, every time
        # the rooms are quiet that long), bytes as python-socketio compares them.
        self.redis = create_client(self.config, self.default_db, subscriber=True)
        self.pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
        self.connected = True

    async def _publish(self, data: Any) -> None:
        now = time.monotonic()
        if now < self._skipped_until:
            return
        try:
            await asyncio.wait_for(
                self._publisher.publish(self.channel, self.json.dumps(data)), _PUBLISH_SECONDS
            )
        except Exception as exc:  # Redis down or silent: this worker's sockets have it
            self._skipped_until = now + _SKIP_SECONDS
            logger.warning(
                "socketio: a bot message could not be sent to the other servers through "
                "Redis (%s: %s); only this worker's sockets get bot messages for %g s",
                type(exc).__name__,
                exc,
                _SKIP_SECONDS,
            )

    async def aclose(self) -> None:
        """Stop listening and close both connections, when the server stops."""
        listener = getattr(self, "thread", None)
        if listener is not None:
            listener.cancel()
            await asyncio.gather(listener, return_exceptions=True)
        if self.redis is not None:
            await self.redis.aclose()
        await self._publisher.aclose()
