"""/metrics across `botserver run --workers N`: every scrape counts all the workers.

A scrape reaches whichever worker the kernel hands its connection to, and each worker counts
only its own turns: scraped one by one, counters would jump up and down between scrapes. So
each worker writes a snapshot of its numbers to a directory the parent made (every
PUBLISH_SECONDS, and once more when it stops), and a scrape adds the other workers' latest
snapshots to its own live numbers. The snapshot of a worker that died stays, so the sums
never go down when a replacement starts from zero.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from server.api.metrics import ServerMetrics

logger = logging.getLogger(__name__)

# Set by `botserver run --workers N` for its workers: the directory of their snapshots.
METRICS_DIR_ENV = "BOTSERVER_METRICS_DIR"
PUBLISH_SECONDS = 1.0


class SharedMetrics:
    """One worker's side: publishes its snapshot and reads the others'."""

    def __init__(self, metrics: ServerMetrics, directory: Path) -> None:
        self.metrics = metrics
        self.directory = directory
        # A new worker never takes over a dead one's file, even if it gets the same pid.
        self.own = directory / f"{os.getpid()}-{time.time_ns()}.json"
        metrics.peers = self.peers

    def _write(self, snapshot: dict[str, Any]) -> None:
        partial = self.own.with_suffix(".partial")
        partial.write_text(json.dumps(snapshot))
        os.replace(partial, self.own)  # readers see the old file or the new one, whole

    def _read_others(self) -> list[dict[str, Any]]:
        snapshots = []
        for path in self.directory.glob("*.json"):
            if path == self.own:
                continue
            try:
                snapshot = json.loads(path.read_text())
            except (OSError, ValueError) as exc:
                logger.warning("Skipping the metrics snapshot %s: %s", path, exc)
                continue
            if isinstance(snapshot, dict):
                snapshots.append(snapshot)
        return snapshots

    async def publish(self) -> None:
        """Write this worker's numbers (taken on the loop, written in a thread)."""
        await asyncio.to_thread(self._write, self.metrics.snapshot())

    async def peers(self) -> list[dict[str, Any]]:
        return await asyncio.to_thread(self._read_others)

    async def run(self) -> None:
        while True:
            try:
                await self.publish()
            except OSError as exc:
                logger.warning("Could not write the metrics snapshot %s: %s", self.own, exc)
            await asyncio.sleep(PUBLISH_SECONDS)


def share_between_workers(app: FastAPI, metrics: ServerMetrics) -> None:
    """In a worker of `--workers N` (METRICS_DIR_ENV set), publish while the app runs."""
    directory = os.environ.get(METRICS_DIR_ENV)
    if not directory:
        return
    shared = SharedMetrics(metrics, Path(directory))
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[Any]:
        async with inner(app) as state:
            task = asyncio.create_task(shared.run(), name="publish-metrics")
            try:
                yield state
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                with contextlib.suppress(OSError):
                    await shared.publish()  # the final counts of this worker

    app.router.lifespan_context = lifespan
