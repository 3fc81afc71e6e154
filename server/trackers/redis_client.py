"""redis.asyncio clients from Rasa's Redis endpoint keys, and the key prefix rule they share."""

from __future__ import annotations

import logging
import re
import ssl
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

from redis import exceptions as redis_errors
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from server.errors import InvalidConfig, StoreFailed, StoreUnavailable
from server.outages import OUTAGES
from server.setting_values import count, flag, host_and_port
from server.trackers.tcp_keepalive import dead_connection_timeout, tcp_options

logger = logging.getLogger(__name__)

_PREFIX = re.compile(r"^[A-Za-z0-9_.\-]+$")


def create_client(config: dict[str, Any], default_db: int, subscriber: bool = False) -> Redis:
    """A client for `url`/`host`, `port`, `db`, `username`, `password`, `use_ssl`...

    A `subscriber` (pub/sub) waits for messages without a read timeout, and reads bytes.
    """
    host = str(config.get("url") or config.get("host") or "localhost")
    socket_timeout = float(config.get("socket_timeout", 10))
    if not socket_timeout > 0:  # (NaN too) every command then failed: each turn a 503
        raise InvalidConfig(
            f"socket_timeout must be a positive number of seconds, not {socket_timeout:g}"
        )
    common: dict[str, Any] = {
        "decode_responses": not subscriber,
        "socket_timeout": None if subscriber else socket_timeout,
        "socket_connect_timeout": min(socket_timeout, 5.0),
        "health_check_interval": 30,
        # One retry, at once: a command whose reply a broken connection lost is sent again
        # on a new one. redis-py's default (3 retries, backing off 1 to 4 s) made every
        # turn wait ~3.5 s for its 503 while Redis was down, and /health/ready time out.
        # Not after a timeout: a Redis that did not answer in socket_timeout will not answer
        # the same command sooner; retrying it made a silent Redis a 503 after twice the time.
        "retry": Retry(NoBackoff(), 1, supported_errors=(redis_errors.ConnectionError,)),
    }
    if not host.startswith("unix://"):
        # A connection the network dropped without a word is closed by the kernel before a
        # command on it times out: redis-py then sends it again on a new one (above).
        common["socket_keepalive"] = True
        common["socket_keepalive_options"] = tcp_options(
            min(dead_connection_timeout(), socket_timeout / 2)
        )
    # Also as text: `use_ssl: ${REDIS_TLS}` with REDIS_TLS=false is off (before, any text
    # turned TLS on, as in Rasa, and every connection to a plain Redis failed).
    use_ssl = flag(config, "use_ssl")
    ssl_options = {
        key: config[key]
        for key in ("ssl_keyfile", "ssl_certfile", "ssl_ca_certs")
        if config.get(key)
    }
    if "://" in host:
        # The `db`, `username` and `password` keys for what the URL leaves out (what it says
        # wins): before, they were dropped without a word, and `db: 3` wrote to database 0.
        given = {key: config[key] for key in ("username", "password") if config.get(key)}
        if config.get("db") is not None:
            given["db"] = count(config, "db", 0, least=0)
        if use_ssl and host.lower().startswith("redis://"):
            host = "rediss://" + host[len("redis://") :]  # (was plain text, without a word)
        if host.lower().startswith("rediss://"):
            given.update(ssl_options)
        return Redis.from_url(host, **given, **common)
    # `host:port` split, as for the SQL store and RabbitMQ: before, a host named
    # '127.0.0.1:6379' was looked up (as in Rasa) and every command failed.
    host, port = host_and_port(host, config.get("port"), "Redis")
    return Redis(
        host=host,
        port=6379 if port is None else port,
        db=count(config, "db", default_db, least=0),
        username=config.get("username"),
        password=config.get("password"),
        ssl=use_ssl,
        **ssl_options,
        **common,
    )


@asynccontextmanager
async def watched(client: Redis, *keys: str) -> AsyncIterator[Pipeline]:
    """A transaction pipeline that WATCHes `keys`, on one connection to its EXEC, which
    fails (WatchError) if redis-py reconnected that connection meanwhile. Its health check
    (a PING before a command on a connection idle 30 s) reconnects one that dropped
    without a word, and the commands after it, the EXEC too, ran on a connection that
    watched nothing: the transaction went through whatever was written meanwhile."""
    async with client.pipeline(transaction=True) as pipe:
        await pipe.watch(*keys)
        connection = pipe.connection
        assert connection is not None  # (WATCH took one)
        guard = _WatchGuard(pipe)
        connection.register_connect_callback(guard.reconnected)
        try:
            yield pipe
        finally:
            connection.deregister_connect_callback(guard.reconnected)


class _WatchGuard:
    """A connect callback (redis-py keeps a weak reference to a method): the pipeline's
    connection came back while it watched keys, which the old connection took with it."""

    def __init__(self, pipe: Pipeline) -> None:
        self._pipe = pipe

    def reconnected(self, connection: AbstractConnection) -> None:
        if self._pipe.watching and self._pipe.connection is connection:
            raise redis_errors.WatchError("reconnected while watching keys")


def key_prefix(config: dict[str, Any], kind: str, quiet: bool = False) -> str:
    """Rasa's key layout: `<prefix>:<kind>:` or `<kind>:` when no usable prefix is set.
    `quiet`: a further kind of a store whose main kind said what is wrong with the prefix."""
    prefix = config.get("key_prefix")
    if prefix is None or prefix == "" or prefix is False:
        return f"{kind}:"
    if not isinstance(prefix, str):
        # YAML read `key_prefix: 0` (`007`, `true`) as no text: Rasa 3.6 then used no
        # prefix, and that is where its keys are. Before, they were looked for at `0:...`.
        if not quiet:
            logger.warning(
                "key_prefix %r is not text; using no prefix, as Rasa does: keys are "
                "'%s:<id>'. Earlier botserver versions kept them at '%s:%s:<id>': write "
                'key_prefix: "%s" (in quotes) to keep reading those',
                prefix,
                kind,
                prefix,
                kind,
                prefix,
            )
        return f"{kind}:"
    if not _PREFIX.match(str(prefix)):
        if not quiet:
            logger.warning(
                "key_prefix '%s' may only hold letters, digits, '_', '.' and '-'; "
                "using the default '%s:'",
                prefix,
                kind,
            )
        return f"{kind}:"
    return f"{prefix}:{kind}:"


def describe(client: Redis) -> str:
    """ "redis at 127.0.0.1:6379/1" (a Unix socket by its path: before, `?:?`)."""
    return f"redis at {_where(client)}/{client.connection_pool.connection_kwargs.get('db', 0)}"


def dependency(client: Redis, what: str) -> str:
    """ "Redis at 127.0.0.1:6379 (the lock store)", for the outage's lines in the log."""
    return f"Redis at {_where(client)} (the {what})"


def _where(client: Redis) -> str:
    kwargs = client.connection_pool.connection_kwargs
    return kwargs.get("path") or f"{kwargs.get('host', '?')}:{kwargs.get('port', '?')}"


# Redis answers these while it cannot take writes for a while: out of memory (maxmemory
# with noeviction), a read-only replica (a failover under way), snapshots failing (MISCONF),
# a long script running (BUSY), a cluster not ready.
_UNAVAILABLE_REPLIES = (redis_errors.OutOfMemoryError, redis_errors.ReadOnlyError)
_UNAVAILABLE_PREFIXES = ("MISCONF", "BUSY", "LOADING", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN")


@contextmanager
def store_errors_as(what: str, client: Redis) -> Iterator[None]:
    """Redis's errors as ours: StoreUnavailable (503) when Redis cannot be reached or cannot
    take the command for a while, StoreFailed (500, logged) for any other refusal (a key of
    another type, a missing ACL permission). Before, a refusal escaped as an unexplained 500,
    and the REST webhook answered 200 for a message it had neither handled nor stored."""
    sent = OUTAGES.opened
    try:
        yield
    except REDIS_ERRORS as exc:
        raise store_error(what, client, exc) from exc
    if OUTAGES.any_away():
        OUTAGES.reached(dependency(client, what), sent)


# What `store_error` maps (a hot path catches these itself instead of `store_errors_as`).
REDIS_ERRORS = (redis_errors.RedisError, OSError)


def login_refused(exc: BaseException | None) -> str | None:
    """Why Redis would not let this client in when waiting does not mend it (its settings
    do), or None: wrong or missing credentials, a TLS certificate not trusted."""
    if isinstance(exc, redis_errors.AuthenticationError):
        return "Redis refused its credentials (check `username` and `password`)"
    while exc is not None:
        if isinstance(exc, ssl.SSLCertVerificationError):
            return "Redis's TLS certificate is not trusted (check `ssl_ca_certs`)"
        exc = exc.__cause__ or exc.__context__
    return None


# The stores' readiness probe (start-up check, /health/ready): a script that SETs a key
# nobody has, only if it exists (XX: it changes nothing, writes and replicates nothing), so
# that what refuses every turn's writes fails it too, where a PING passes: a read-only
# replica (READONLY), a Redis full under `noeviction` (OOM: a SET may grow it, while a GET,
# DEL or PEXPIRE still runs), a user not allowed scripts (NOPERM).
READINESS_SCRIPT = "return redis.call('SET', KEYS[1], '', 'XX', 'PX', 1)"


# A Redis up but refusing commands for a while, in a StoreUnavailable's message and reason.
CANNOT_TAKE_COMMANDS = "cannot take commands now"


# Replies only a Redis Cluster node gives (redis-py's classes of MOVED, ASK, CROSSSLOT,
# CLUSTERDOWN, TRYAGAIN), and the text of its refusal of SELECT.
_CLUSTER_REPLIES = (
    redis_errors.MovedError,
    redis_errors.AskError,
    redis_errors.ClusterCrossSlotError,
    redis_errors.ClusterDownError,
    redis_errors.TryAgainError,
)
_CLUSTER_REFUSAL = "not allowed in cluster mode"


def cluster_refused(what: str, client: Redis, told_by: str) -> StoreFailed:
    """A Redis Cluster node as a store's server: its keys are spread over other nodes, and a
    script's (a conversation's two, a batch's leases) over slots, which botserver's stores,
    as Rasa's, cannot follow. `told_by`: the reply, or INFO, that showed it."""
    return StoreFailed(
        f"The {what} ({describe(client)}) is a node of a Redis Cluster ({told_by}), which "
        f"the Redis {what} does not support (Rasa's neither): point "
        f"{what.replace(' ', '_')}.url at a standalone Redis server"
    )


async def refuse_a_cluster(what: str, client: Redis) -> None:
    """StoreFailed (`cluster_refused`) when `client`'s server says it runs in cluster mode;
    nothing when it does not, or will not say (a user not allowed INFO). Redis unreachable
    or silent: `store_errors_as`'s error, at once (before the command it comes before, which
    would wait as long again)."""
    with store_errors_as(what, client):
        try:
            info = await client.info("cluster")
        except redis_errors.ResponseError as exc:
            if isinstance(exc, _CLUSTER_REPLIES) or _CLUSTER_REFUSAL in str(exc):
                raise
            return
    if str(info.get("cluster_enabled", 0)) == "1":
        raise cluster_refused(what, client, "cluster_enabled:1 in INFO cluster")


def store_error(what: str, client: Redis, exc: Exception) -> StoreUnavailable | StoreFailed:
    """One of `REDIS_ERRORS` as ours (see `store_errors_as`)."""
    if isinstance(exc, _CLUSTER_REPLIES) or _CLUSTER_REFUSAL in str(exc):
        return cluster_refused(what, client, f"Redis said: {exc}")
    refusal = login_refused(exc)
    if refusal:  # (a kind of ConnectionError)
        return StoreUnavailable(
            f"The {what} ({describe(client)}) is unavailable: {refusal}: {exc}",
            dependency(client, what),
            f"{refusal}: {exc}",
        )
    if isinstance(exc, redis_errors.ConnectionError | redis_errors.TimeoutError | OSError):
        return StoreUnavailable(
            f"The {what} ({describe(client)}) is unavailable: {exc}",
            dependency(client, what),
            str(exc) or type(exc).__name__,
        )
    if isinstance(exc, _UNAVAILABLE_REPLIES) or str(exc).startswith(_UNAVAILABLE_PREFIXES):
        return StoreUnavailable(
            f"The {what} ({describe(client)}) {CANNOT_TAKE_COMMANDS}: {exc}",
            dependency(client, what),
            f"it {CANNOT_TAKE_COMMANDS}: {exc}",
        )
    return StoreFailed(f"The {what} ({describe(client)}) failed: {exc}")
