"""The Redis lock store: one turn at a time per conversation across processes and hosts.

Acquire is atomic (SET NX PX with a random owner token), the lease is renewed while the
turn runs, and release deletes the key only if it still holds our token (a Lua script).
Acquires and releases of one event loop pass share a pipeline (redis_batch.CommandBatch).
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager, suppress
from typing import Any

from redis import exceptions as redis_errors

from server.errors import InvalidConfig, LockTimeout, StoreUnavailable
from server.trackers.memory_lock import DEFAULT_WAIT_TIMEOUT, InMemoryLockStore, timeout_message
from server.trackers.redis_batch import CommandBatch
from server.trackers.redis_client import create_client, key_prefix, store_errors_as

logger = logging.getLogger(__name__)

DEFAULT_LOCK_LIFETIME = 60.0

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

# The prune's batches: every free key taken (SET NX PX) in one call, and given back.
# ARGV: token, lease in ms. Returns 1/0 per key.
_TAKE_FREE = """
local taken = {}
for i, key in ipairs(KEYS) do
  taken[i] = redis.call('SET', key, ARGV[1], 'NX', 'PX', ARGV[2]) and 1 or 0
end
return taken
"""

_RELEASE_ALL = """
for _, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[1] then
    redis.call('DEL', key)
  end
end
return 0
"""

_FIRST_POLL = 0.002
_MAX_POLL = 0.05
_FIRST_RELEASE_RETRY = 0.1
_MAX_RELEASE_RETRY = 2.0


class RedisLockStore:
    """Conversation locks in Redis, FIFO among the waiters of this process."""

    process_local = False

    def __init__(self, config: dict[str, Any]) -> None:
        self._redis = create_client(config, default_db=1)
        self._prefix = key_prefix(config, "lock")
        default_lifetime = os.environ.get("TICKET_LOCK_LIFETIME") or DEFAULT_LOCK_LIFETIME
        self.lock_lifetime = float(config.get("lock_lifetime") or default_lifetime)
        self.wait_timeout = float(config.get("wait_timeout") or DEFAULT_WAIT_TIMEOUT)
        if not self.lock_lifetime >= 0.001:  # Redis refuses a lease under 1 ms: every turn
            raise InvalidConfig(
                f"lock_store.lock_lifetime (or TICKET_LOCK_LIFETIME) must be at least 0.001 "
                f"seconds, not {self.lock_lifetime:g}"
            )
        # Tasks of this process queue here first, so only one of them polls Redis.
        self._local = InMemoryLockStore(self.wait_timeout)
        self._renew = self._redis.register_script(_RENEW)
        self._release = self._redis.register_script(_RELEASE)
        self._take_free = self._redis.register_script(_TAKE_FREE)
        self._release_all = self._redis.register_script(_RELEASE_ALL)
        self._batch = CommandBatch(self._redis)
        # Releases of leases whose acquiring turn was cancelled while its SET was out.
        self._returns: set[asyncio.Task[None]] = set()
        # Releases retried after Redis could not be reached (cancelled on close).
        self._retries: set[asyncio.Task[None]] = set()

    async def ping(self) -> None:
        """Raises StoreUnavailable when Redis cannot be reached (for /health/ready)."""
        with store_errors_as("lock store", self._redis):
            await self._redis.ping()

    @asynccontextmanager
    async def lock(
        self,
        conversation_id: str,
        wait_timeout: float | None = None,
        on_wait: Callable[[], None] | None = None,
    ) -> AsyncIterator[None]:
        timeout = self.wait_timeout if wait_timeout is None else wait_timeout
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        async with self._local.lock(conversation_id, timeout, on_wait):
            key = self._prefix + conversation_id
            token = secrets.token_hex(16)
            await self._acquire(key, token, deadline, conversation_id, timeout, on_wait)
            # Most turns end long before a third of the lease: the renewal task only starts
            # for those that do not (no task per turn).
            renewal: list[asyncio.Task[None]] = []
            start_renewal = loop.call_later(
                self.lock_lifetime / 3,
                lambda: renewal.append(
                    asyncio.ensure_future(self._keep_alive(key, token, conversation_id, now=True))
                ),
            )
            try:
                yield
            finally:
                start_renewal.cancel()
                for task in renewal:
                    task.cancel()
                    with suppress(asyncio.CancelledError):
                        await task
                await self._give_back(key, token, conversation_id)

    @asynccontextmanager
    async def hold_idle(self, conversation_ids: Sequence[str]) -> AsyncIterator[list[str]]:
        """Two scripts a batch: one takes every free key (one token for them all), one
        gives them back (compare-and-delete)."""
        async with self._local.hold_idle(conversation_ids) as free_here:
            token = secrets.token_hex(16)
            lifetime_ms = int(self.lock_lifetime * 1000)
            keys = [self._prefix + conversation_id for conversation_id in free_here]
            with store_errors_as("lock store", self._redis):
                taken = await self._take_free(keys=keys, args=[token, lifetime_ms]) if keys else []
            held = [c for c, ok in zip(free_here, taken, strict=True) if ok]
            try:
                yield held
            finally:
                await self._give_back_all([self._prefix + c for c in held], token)

    async def _give_back_all(self, keys: list[str], token: str) -> None:
        if not keys:
            return
        try:
            await self._release_all(keys=keys, args=[token])
        except (redis_errors.RedisError, OSError) as exc:
            logger.warning("Could not release %d conversation locks: %s", len(keys), exc)
            for key in keys:
                self._release_in_background(key, token)

    async def _acquire(
        self,
        key: str,
        token: str,
        deadline: float,
        conversation_id: str,
        timeout: float,
        on_wait: Callable[[], None] | None = None,
    ) -> None:
        loop = asyncio.get_running_loop()
        lifetime_ms = int(self.lock_lifetime * 1000)
        pause = _FIRST_POLL
        while True:
            try:
                with store_errors_as("lock store", self._redis):
                    if await self._take(key, token, lifetime_ms, conversation_id):
                        return
            except StoreUnavailable:
                # The connection may have broken after Redis ran the SET: a lease nobody
                # would give back, which held the conversation for the whole lifetime.
                self._release_in_background(key, token)
                raise
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise LockTimeout(timeout_message(conversation_id, timeout))
            if on_wait is not None:
                on_wait()
            await asyncio.sleep(min(pause, remaining))
            pause = min(pause * 2, _MAX_POLL)

    async def _take(self, key: str, token: str, lifetime_ms: int, conversation_id: str) -> bool:
        """SET NX PX. A turn cancelled meanwhile (a client gone, shutdown) gives back the
        lease its command may still take, so the next turn does not wait out the lease."""
        reply = self._batch.call("SET", key, token, "NX", "PX", lifetime_ms)
        try:
            if await asyncio.shield(reply):
                return True
        except asyncio.CancelledError:
            reply.add_done_callback(
                lambda taken: self._give_back_taken(taken, key, token, conversation_id)
            )
            raise
        # Refused, perhaps by our own lease: redis-py sends a command again when the
        # connection breaks, also after Redis ran it and only its reply was lost. Asked only
        # when the SET fails (another turn holds the lock), so a turn pays nothing for it.
        try:
            held = await self._batch.call("GET", key)
        except asyncio.CancelledError:
            self._release_in_background(key, token)
            raise
        return bool(held == token)

    def _give_back_taken(
        self, reply: asyncio.Future[Any], key: str, token: str, conversation_id: str
    ) -> None:
        if reply.cancelled() or reply.exception() is not None or not reply.result():
            return
        task = asyncio.ensure_future(self._give_back(key, token, conversation_id))
        self._returns.add(task)
        task.add_done_callback(self._returns.discard)

    async def _keep_alive(
        self, key: str, token: str, conversation_id: str, now: bool = False
    ) -> None:
        lifetime_ms = int(self.lock_lifetime * 1000)
        while True:
            if not now:
                await asyncio.sleep(self.lock_lifetime / 3)
            now = False
            try:
                renewed = await self._renew(keys=[key], args=[token, lifetime_ms])
            except (redis_errors.RedisError, OSError) as exc:
                logger.warning("Could not renew the lock of '%s': %s", conversation_id, exc)
                continue
            if not renewed:
                logger.error(
                    "The lock of conversation '%s' expired while its turn was still running; "
                    "raise lock_lifetime if turns take longer than %g s.",
                    conversation_id,
                    self.lock_lifetime,
                )
                return

    async def _give_back(self, key: str, token: str, conversation_id: str) -> None:
        try:
            # Shielded: a cancelled turn still gives its lease back.
            await asyncio.shield(self._batch.run_script(self._release, [key], [token]))
        except (redis_errors.RedisError, OSError) as exc:
            logger.warning(
                "Could not release the lock of '%s' (retrying until its lease ends): %s",
                conversation_id,
                exc,
            )
            self._release_in_background(key, token)

    def _release_in_background(self, key: str, token: str) -> None:
        task = asyncio.ensure_future(self._release_later(key, token))
        self._retries.add(task)
        task.add_done_callback(self._retries.discard)

    async def _release_later(self, key: str, token: str) -> None:
        """Retries a release that failed (Redis unreachable as the turn ended) or a lease
        an acquire may have left, until the lease would have run out: the conversation's
        next turn then waits for Redis to be back, not for the whole lease. Safe to repeat:
        it deletes only our own token."""
        loop = asyncio.get_running_loop()
        expires = loop.time() + self.lock_lifetime
        pause = _FIRST_RELEASE_RETRY
        while loop.time() + pause < expires:
            await asyncio.sleep(pause)
            pause = min(pause * 2, _MAX_RELEASE_RETRY)
            with suppress(redis_errors.RedisError, OSError):
                await self._release(keys=[key], args=[token])
                return

    async def close(self) -> None:
        await self._batch.close()
        if self._returns:
            await asyncio.wait(self._returns)
        for task in list(self._retries):  # their leases run out by themselves
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task
        await self._redis.aclose()
