"""Redis commands issued during one event loop pass, sent together in one pipeline."""

from __future__ import annotations

import asyncio
from typing import Any

from redis.asyncio import Redis


class CommandBatch:
    """Commands queued during one event loop pass go to Redis as one non-transactional
    pipeline (one write, one round trip), and each caller gets its own reply or error.

    redis-py spends ~0.14 ms of Python per command on this machine kind (pool, retry and
    timeout wrappers, packing, parsing); in a pipeline most of that is paid once per batch.
    While a pipeline is out, new commands wait for the next one, so a busy process sends
    fewer, larger pipelines (as the PostgreSQL group commit does); a command alone goes out
    as a plain command. A caller that stops waiting does not unsend its command: one still
    queued is dropped, one already sent runs (callers that must undo it shield the reply).
    """

    def __init__(self, client: Redis) -> None:
        self._client = client
        self._queued: list[tuple[tuple[Any, ...], asyncio.Future[Any]]] = []
        self._sending: asyncio.Task[None] | None = None
        # For tests and stats: round trips made and the commands they carried.
        self.round_trips = 0
        self.commands = 0

    def call(self, *args: Any) -> asyncio.Future[Any]:
        """Queues a command (`"SET", key, value, "NX"`); its reply, parsed as redis-py's
        own method would return it, or its error, comes back in the future."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queued.append((args, future))
        if self._sending is None:
            # Its first step runs after the callbacks already scheduled for this pass.
            self._sending = loop.create_task(self._send())
        return future

    async def _send(self) -> None:
        try:
            while self._queued:
                batch = [(args, reply) for args, reply in self._queued if not reply.done()]
                self._queued = []
                if batch:
                    await self._round_trip(batch)
        finally:
            self._sending = None

    async def _round_trip(self, batch: list[tuple[tuple[Any, ...], asyncio.Future[Any]]]) -> None:
        self.round_trips += 1
        self.commands += len(batch)
        try:
            if len(batch) == 1:
                results = [await self._client.execute_command(*batch[0][0])]
            else:
                pipeline = self._client.pipeline(transaction=False)
                for args, _ in batch:
                    pipeline.execute_command(*args)
                results = await pipeline.execute(raise_on_error=False)
        except Exception as error:  # no reply came back (connection, timeout), or the one
            for _, reply in batch:  # command of a plain call failed
                if not reply.done():
                    reply.set_exception(error)
            return
        except BaseException:
            for _, reply in batch:
                reply.cancel()
            raise
        for (_, reply), result in zip(batch, results, strict=True):
            if reply.done():
                continue
            if isinstance(result, Exception):
                reply.set_exception(result)
            else:
                reply.set_result(result)

    async def close(self) -> None:
        """Waits for the commands already queued to be answered."""
        if self._sending is not None:
            await asyncio.wait([self._sending])
