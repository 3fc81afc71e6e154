"""Redis commands issued during one event loop pass, sent together in one write."""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable, Sequence
from typing import Any

from redis import exceptions as redis_errors
from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection

_pack_command: Callable[[tuple[Any, ...]], bytes] | None
try:  # the C packer that comes with redis-py's hiredis extra: one call per command
    from hiredis import pack_command as _pack_command
except ImportError:  # pragma: no cover - redis-py's own packing then
    _pack_command = None


class CommandBatch:
    """Commands queued during one event loop pass go to Redis in one write (one round trip,
    not a transaction), and each caller gets its own reply or error.

    The batch has a connection of its own (one batch is out at a time), made with the
    client's settings, and speaks to it directly: redis-py's client and pipeline spend
    ~0.14 ms of Python per command on this machine kind (pool checkout, retry and timeout
    wrappers, packing each argument, parsing callbacks, metrics), most of it per command.
    The client's socket timeout bounds the whole batch (one timer, not one per reply). While a
    batch is out, new commands wait for the next one, so a busy process sends fewer, larger
    batches (as the PostgreSQL group commit does). A caller that stops waiting does not
    unsend its command: one still queued is dropped unless queued with `keep`, one already
    sent runs. A connection that breaks is reconnected and the batch sent again, once (the
    client's retry policy), as redis-py does for a command or a pipeline; `resent` tells
    the replies of such a second send. A connection Redis closed (a restart) is found
    before a batch is sent on it, as redis-py's pool finds it, and replaced: the batch then
    goes out once.
    """

    def __init__(self, client: Redis) -> None:
        self._client = client
        self._queued: list[tuple[tuple[Any, ...], asyncio.Future[Any], bool]] = []
        self._sending: asyncio.Task[None] | None = None
        self._connection: AbstractConnection | None = None
        self._timeout: float | None = None
        # Reply callbacks by command name as the callers spell it (redis-py's own: "OK"
        # -> True for SET...), so that a reply is what the client's method would return.
        self._callbacks: dict[Any, Callable[[Any], Any] | None] = {}
        # For tests and stats: round trips made and the commands they carried.
        self.round_trips = 0
        self.commands = 0
        # The sends of the round trip out (two when the connection broke after the first).
        self._sends = 0
        # Replies of batches sent a second time (`resent`): only those.
        self._resent: weakref.WeakSet[asyncio.Future[Any]] = weakref.WeakSet()

    def call(self, *args: Any, keep: bool = False) -> asyncio.Future[Any]:
        """Queues a command (`"SET", key, value, "NX"`); its reply, parsed as redis-py's
        own method would return it, or its error, comes back in the future. `keep`: the
        command goes out even if its caller stopped waiting before the send (a release)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queued.append((args, future, keep))
        if self._sending is None:
            # Its first step runs after the callbacks already scheduled for this pass.
            self._sending = loop.create_task(self._send())
        return future

    def resent(self, reply: asyncio.Future[Any]) -> bool:
        """Whether `reply` came from its batch's second send: the connection broke after the
        first went out, so Redis may have run the command twice, the first reply lost."""
        return reply in self._resent

    async def _send(self) -> None:
        try:
            while self._queued:
                batch = [item for item in self._queued if item[2] or not item[1].done()]
                self._queued = []
                if batch:
                    await self._round_trip(batch)
        finally:
            self._sending = None

    async def _round_trip(
        self, batch: list[tuple[tuple[Any, ...], asyncio.Future[Any], bool]]
    ) -> None:
        self.round_trips += 1
        self.commands += len(batch)
        commands = [args for args, _, _ in batch]
        self._sends = 0
        try:
            connection = self._connection or self._connect()
            results = await connection.retry.call_with_retry(
                lambda: self._exchange(connection, commands), self._disconnect
            )
        except Exception as error:  # no reply came back (connection, timeout)
            for _, reply, _ in batch:
                if not reply.done():
                    reply.set_exception(error)
            return
        except BaseException:
            for _, reply, _ in batch:
                reply.cancel()
            raise
        if self._sends > 1:
            self._resent.update(reply for _, reply, _ in batch)
        for (_, reply, _), result in zip(batch, results, strict=True):
            if reply.done():
                continue
            if isinstance(result, Exception):
                reply.set_exception(result)
            else:
                reply.set_result(result)

    def _connect(self) -> AbstractConnection:
        """The batch's connection (it connects on its first send), with no socket timeout
        of its own: `_exchange` applies the client's to the whole batch."""
        pool = self._client.connection_pool
        settings = pool.connection_kwargs
        self._timeout = settings.get("socket_timeout")
        self._connection = pool.connection_class(**{**settings, "socket_timeout": None})
        return self._connection

    async def _exchange(
        self, connection: AbstractConnection, commands: Sequence[tuple[Any, ...]]
    ) -> list[Any]:
        """Sends the commands in one write and reads their replies (a refusal as its
        exception, in its place); a broken or timed-out connection is closed."""
        if _pack_command is None:  # pragma: no cover
            packed = connection.pack_commands(commands)
        else:
            packed = [_pack_command(args) for args in commands]
        results: list[Any] = []
        callbacks = self._callbacks
        try:
            async with asyncio.timeout(self._timeout):
                await _drop_if_closed(connection)
                await connection.send_packed_command(packed)  # (connects when not connected)
                self._sends += 1  # sent: from here on, Redis may run the commands
                for args in commands:
                    try:
                        result = await connection.read_response()
                    except redis_errors.ResponseError as refused:
                        results.append(refused)
                        continue
                    name = args[0]
                    callback = callbacks.get(name, _UNKNOWN)
                    if callback is _UNKNOWN:
                        callback = callbacks[name] = self._client.response_callbacks.get(name)
                    results.append(result if callback is None else callback(result))
        except TimeoutError as exc:  # Redis did not answer within the socket timeout
            await connection.disconnect(nowait=True)
            raise redis_errors.TimeoutError(f"No reply within {self._timeout:g} s") from exc
        return results

    async def _disconnect(self, error: Exception) -> None:
        if self._connection is not None:
            await self._connection.disconnect()

    async def close(self) -> None:
        """Waits for the commands already queued to be answered."""
        if self._sending is not None:
            await asyncio.wait([self._sending])
        if self._connection is not None:
            connection, self._connection = self._connection, None
            await connection.disconnect()


# Whether a connection has data to read, or raise if Redis closed it (redis-py 8's name; 5 to
# 7 call it can_read_destructive, which 8 deprecates).
_CAN_READ = "can_read" if hasattr(AbstractConnection, "can_read") else "can_read_destructive"


async def _drop_if_closed(connection: AbstractConnection) -> None:
    """Disconnects a connection Redis closed (restarted, dropped its clients), or left unread
    data on, before a batch goes out on it, as redis-py's pool checks one it hands out: the
    batch then goes out once, on a new one. Before, it went out on the closed one, failed at
    its reply and was sent again, as after a reply that was lost."""
    if not connection.is_connected:
        return
    try:
        if not await getattr(connection, _CAN_READ)():
            return
    except (redis_errors.ConnectionError, OSError):
        pass
    await connection.disconnect()


def _UNKNOWN(result: Any) -> Any:  # a callback not looked up yet
    return result
