"""The lock store contract: one turn at a time per conversation, in arrival order."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Protocol


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

    def hold_idle(self, conversation_ids: Sequence[str]) -> AbstractAsyncContextManager[list[str]]:
        """Takes, without waiting, the locks of those conversations no turn holds or waits
        for, and yields their ids; the locks are released after the block (the prune).
        Raises `StoreUnavailable` when the store cannot be reached."""
        ...

    async def close(self) -> None:
        """Release connections."""
