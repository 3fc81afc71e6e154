"""Dead database connections closed by the kernel: TCP keepalive and TCP_USER_TIMEOUT on the
sockets of PostgreSQL, MySQL/MariaDB and Redis connections.

A connection whose peer vanished without a word (a NAT gateway or load balancer forgot it, a
failed-over host, packets dropped) otherwise waits for an answer until the statement timeout,
while a new connection (the silence check's) answers at once; with these options the kernel
gives it up after `DB_TCP_TIMEOUT` seconds (5), the driver sees it closed, and the pool opens a
new one.
"""

from __future__ import annotations

import logging
import socket
from typing import Any

from server.setting_values import env_seconds

logger = logging.getLogger(__name__)

# Probes before the kernel gives an idle connection up (with TCP_USER_TIMEOUT, Linux gives
# it up at the first unanswered probe past the timeout).
_PROBES = 3
# Linux refuses a keepalive idle time or interval above this (EINVAL).
_MAX_KEEPALIVE_SECONDS = 32767


def dead_connection_timeout() -> float:
    """How long a PostgreSQL, MySQL/MariaDB or Redis connection may go without an
    acknowledgement from its peer before the kernel closes it (TCP_USER_TIMEOUT, keepalive):
    `DB_TCP_TIMEOUT` seconds, 5 by default. Before, a connection the network dropped without
    a word held its statement until SQL_STATEMENT_TIMEOUT (30 s). Here, not beside the SQL
    engines, so that a Redis client does not import SQLAlchemy for it."""
    return env_seconds("DB_TCP_TIMEOUT", 5.0)


def tcp_options(seconds: float) -> dict[int, int]:
    """The IPPROTO_TCP options (name -> value) that close a connection whose peer stopped
    acknowledging for `seconds` (`DB_TCP_TIMEOUT`: `dead_connection_timeout`): data sent
    and not acknowledged (TCP_USER_TIMEOUT), or, while nothing is in flight (idle in the pool, or
    waiting for a slow statement, which the server's kernel keeps acknowledging), keepalive
    probes from half the timeout on, which also keep a NAT gateway's entry alive."""
    idle = min(max(1, round(seconds / 2)), _MAX_KEEPALIVE_SECONDS)
    options = {
        "TCP_KEEPIDLE": idle,
        "TCP_KEEPINTVL": min(max(1, round((seconds - idle) / _PROBES)), _MAX_KEEPALIVE_SECONDS),
        "TCP_KEEPCNT": _PROBES,
        "TCP_USER_TIMEOUT": min(max(1, round(seconds * 1000)), 2**31 - 1),  # milliseconds
    }
    # Platforms without an option (TCP_USER_TIMEOUT is Linux's) go without it.
    return {
        getattr(socket, name): value for name, value in options.items() if hasattr(socket, name)
    }


def guard_socket(sock: Any, options: dict[int, int]) -> None:
    """Keepalive and the user timeout on a TCP socket (nothing for a Unix socket)."""
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        for name, value in options.items():
            sock.setsockopt(socket.IPPROTO_TCP, name, value)
    except OSError as exc:  # the connection still works, as it did without them
        logger.warning("TCP keepalive options refused on a database connection: %s", exc)


def guard_driver_connection(connection: Any, options: dict[int, int]) -> None:
    """`guard_socket` with `options` (made when the store is made: a wrong DB_TCP_TIMEOUT is
    said at start) on the socket of an asyncpg or aiomysql connection. Neither driver has an
    option for it, nor hands its socket out: it is its asyncio transport's (asyncpg's
    `_transport`, aiomysql's `_writer.transport`), whose `get_extra_info("socket")` is
    asyncio's public way to it. A driver that renamed them goes on without, with a warning."""
    transport = getattr(connection, "_transport", None)
    if transport is None:
        writer = getattr(connection, "_writer", None)
        transport = getattr(writer, "transport", None)
    if transport is None:
        logger.warning(
            "%s: no socket found to set TCP keepalive on; a connection dropped silently by "
            "the network waits for the statement timeout",
            type(connection).__name__,
        )
        return
    guard_socket(transport.get_extra_info("socket"), options)
