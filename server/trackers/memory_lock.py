"""The in-memory lock store: FIFO per conversation, for the tasks of one process."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from server.errors import InvalidConfig, LockTimeout
from server.trackers.lock import IdleLocks

DEFAULT_WAIT_TIMEOUT = 60.0


@dataclass
class _Queue:
    users: int = 0
    # asyncio.Lock wakes its waiters in arrival order, which gives FIFO turns. Made by the
    # first user that has to wait (acquired then for the holder): a conversation nobody
    # waits for, the usual case, needs no lock.
    lock: asyncio.Lock | None = None


class InMemoryLockStore:
    """Per-conversation asyncio locks, dropped when nobody holds or waits for them."""

    process_local = True

    def __init__(self, wait_timeout: float = DEFAULT_WAIT_TIMEOUT) -> None:
        self.wait_timeout = wait_timeout
        self._queues: dict[str, _Queue] = {}

    def lock(
        self,
        conversation_id: str,
        wait_timeout: float | None = None,
        on_wait: Callable[[], None] | None = None,
    ) -> _Held:
        """Held for an `async with` block: waits in line (at most the timeout) for its turn."""
        return _Held(self, conversation_id, wait_timeout, on_wait)

    @asynccontextmanager
    async def hold_idle(self, conversation_ids: Sequence[str]) -> AsyncIterator[IdleLocks]:
        held = []
        for conversation_id in dict.fromkeys(conversation_ids):
            if conversation_id not in self._queues:
                turn = _Held(self, conversation_id, None, None)
                await turn.__aenter__()  # free: taken at once
                held.append(turn)
        try:
            yield IdleLocks(turn._id for turn in held)
        finally:
            for turn in held:
                await turn.__aexit__(None, None, None)

    async def close(self) -> None:
        return None


class _Held:
    """One `async with` of a conversation's lock (a class: no generator per turn)."""

    __slots__ = ("_store", "_id", "_timeout", "_queue", "_on_wait")

    def __init__(
        self,
        store: InMemoryLockStore,
        conversation_id: str,
        wait_timeout: float | None,
        on_wait: Callable[[], None] | None,
    ) -> None:
        self._store = store
        self._id = conversation_id
        self._timeout = store.wait_timeout if wait_timeout is None else wait_timeout
        self._on_wait = on_wait

    def take_if_free(self) -> bool:
        """Takes the lock when nobody holds or waits for it (the usual turn), without
        `__aenter__`'s coroutine; `leave` then lets it go. False: `async with` it instead."""
        queues = self._store._queues
        if self._id in queues:
            return False
        self._queue = queues[self._id] = _Queue(users=1)
        return True

    async def __aenter__(self) -> None:
        if self.take_if_free():  # free: taken at once, no lock, no timer
            return
        queue = self._store._queues[self._id]
        queue.users += 1
        self._queue = queue
        lock = queue.lock
        if lock is None:  # the first to wait: the lock, taken for its holder (no waiting)
            lock = queue.lock = asyncio.Lock()
            await lock.acquire()
        timeout = self._timeout
        try:
            if self._on_wait is not None:
                self._on_wait()
            # someone holds it or waits: wait in line, for so long
            try:
                async with asyncio.timeout(timeout):
                    await lock.acquire()
            except TimeoutError:
                raise LockTimeout(timeout_message(self._id, timeout)) from None
        except BaseException:
            self._leave()
            raise

    async def __aexit__(self, *exc_info: object) -> None:
        self.leave()

    def leave(self) -> None:
        """Lets the lock go (after `__aenter__` or `take_if_free`), to the next in line."""
        lock = self._queue.lock
        try:
            if lock is not None:  # someone waited since (or while) this one held it
                lock.release()
        finally:
            self._leave()

    def _leave(self) -> None:
        queue = self._queue
        queue.users -= 1
        if queue.users == 0:
            del self._store._queues[self._id]


def wait_timeout_setting(config: dict[str, Any]) -> float:
    """A lock store's `wait_timeout` (unset or 0: the default). Before, `nan` made a turn
    behind a busy one wait for ever, and a negative one refused every such turn at once."""
    wait_timeout = float(config.get("wait_timeout") or DEFAULT_WAIT_TIMEOUT)
    if not wait_timeout >= 0:
        raise InvalidConfig(
            f"lock_store.wait_timeout must be a number of seconds from 0, not {wait_timeout:g}"
        )
    return wait_timeout


def timeout_message(conversation_id: str, timeout: float) -> str:
    return (
        f"Could not lock conversation '{conversation_id}' within {timeout:g} s: "
        "earlier messages of this conversation are still being handled."
    )
