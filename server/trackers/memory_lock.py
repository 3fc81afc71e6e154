"""The in-memory lock store: FIFO per conversation, for the tasks of one process."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from server.errors import LockTimeout

DEFAULT_WAIT_TIMEOUT = 60.0


@dataclass
class _Queue:
    # asyncio.Lock wakes its waiters in arrival order, which gives FIFO turns.
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0


class InMemoryLockStore:
    """Per-conversation asyncio locks, dropped when nobody holds or waits for them."""

    process_local = True

    def __init__(self, wait_timeout: float = DEFAULT_WAIT_TIMEOUT) -> None:
        self.wait_timeout = wait_timeout
        self._queues: dict[str, _Queue] = {}

    @asynccontextmanager
    async def lock(
        self, conversation_id: str, wait_timeout: float | None = None
    ) -> AsyncIterator[None]:
        timeout = self.wait_timeout if wait_timeout is None else wait_timeout
        queue = self._queues.setdefault(conversation_id, _Queue())
        queue.users += 1
        try:
            if queue.users > 1:  # someone holds it or waits: wait in line, for so long
                try:
                    async with asyncio.timeout(timeout):
                        await queue.lock.acquire()
                except TimeoutError:
                    raise LockTimeout(timeout_message(conversation_id, timeout)) from None
            else:  # free: taken at once, no timer (about 7 µs a turn)
                await queue.lock.acquire()
            try:
                yield
            finally:
                queue.lock.release()
        finally:
            queue.users -= 1
            if queue.users == 0:
                del self._queues[conversation_id]

    async def close(self) -> None:
        return None


def timeout_message(conversation_id: str, timeout: float) -> str:
    return (
        f"Could not lock conversation '{conversation_id}' within {timeout:g} s: "
        "earlier messages of this conversation are still being handled."
    )
