"""The lock store contract: one turn at a time per conversation, in arrival order."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from server.trackers.redis_leases import RedisLeases


class IdleLocks:
    """The conversations whose locks a prune holds (`LockStore.hold_idle`). One whose lock
    is found lost meanwhile (Redis lost it, the prune stalled past its lifetime) is let go
    of at once: no longer held, listed in `lost`, never touched again by the prune.
    `check`: asks the lock store which are still held (`still_held`). `leases`: the Redis
    lock store's leases, which a Redis tracker store's delete checks in the same step."""

    __slots__ = ("_held", "lost", "_check", "leases")

    def __init__(
        self,
        conversation_ids: Iterable[str],
        check: Callable[[IdleLocks], Awaitable[None]] | None = None,
        leases: RedisLeases | None = None,
    ) -> None:
        self._held = dict.fromkeys(conversation_ids)
        self.lost: list[str] = []
        self._check = check
        self.leases = leases

    def ids(self) -> list[str]:
        """Those still held, in the order given."""
        return list(self._held)

    async def still_held(self) -> list[str]:
        """Those still held, asked of the lock store (for a delete about to go out)."""
        if self._check is not None and self._held:
            await self._check(self)
        return list(self._held)

    def __contains__(self, conversation_id: object) -> bool:
        return conversation_id in self._held

    def lose(self, conversation_id: str) -> None:
        """Its lock was found lost."""
        if conversation_id in self._held:
            del self._held[conversation_id]
            self.lost.append(conversation_id)


class LockStore(Protocol):
    """Serialises work on one conversation; FIFO among the waiters of one process."""

    # True when the lock only excludes tasks of this process (refused with several workers).
    process_local: bool

    def lock(
        self,
        conversation_id: str,
        wait_timeout: float | None = None,
        on_wait: Callable[[], None] | None = None,
    ) -> AbstractAsyncContextManager[None]:
        """Hold the conversation's lock inside the `async with` block.

        Waits at most `wait_timeout` seconds (None: the store's configured wait), then
        raises `LockTimeout`. Raises `StoreUnavailable` when the store cannot be reached.
        `on_wait` is called when the lock is not free at once, perhaps more than once (a
        turn that takes it straight away, the usual case, pays nothing for it).
        """
        ...

    def hold_idle(self, conversation_ids: Sequence[str]) -> AbstractAsyncContextManager[IdleLocks]:
        """Takes, without waiting, the locks of those conversations no turn holds or waits
        for, and yields them; the locks are released after the block (the prune). A lock
        found lost meanwhile is let go of (`IdleLocks.lose`). Raises `StoreUnavailable` when
        the store cannot be reached."""
        ...

    async def close(self) -> None:
        """Release connections."""
