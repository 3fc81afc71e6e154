"""/metrics across `botserver run --workers N`: every scrape counts all the workers.

A scrape reaches whichever worker the kernel hands its connection to, and each worker counts
only its own turns: scraped one by one, counters would jump up and down between scrapes. So
each worker writes a snapshot of its numbers to the directory the workers share (every
PUBLISH_SECONDS, once more when it stops, and at each scrape it answers), and a scrape
answers the sum of the workers' snapshots, its own written first. So a number a scrape shows
is on disk before the answer leaves, and a later scrape of any worker reads at least that: the
sums never go down between scrapes (Prometheus would take a dip for a counter reset). The
snapshot of a worker that died stays, so the sums never go down when a replacement starts
from zero.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from server.api.metrics import ServerMetrics
from server.api.worker_files import read_object, run_beside, workers_dir, write_json

logger = logging.getLogger(__name__)

PUBLISH_SECONDS = 1.0


class SharedMetrics:
    """One worker's side: publishes its snapshot and reads the others'."""

    def __init__(self, metrics: ServerMetrics, directory: Path) -> None:
        self.metrics = metrics
        self.directory = directory
        # A new worker never takes over a dead one's file, even if it gets the same pid.
        self.own = directory / f"{os.getpid()}-{time.time_ns()}.json"
        # Snapshots reach the file in the order they were taken (a scrape's and the timer's).
        self._writing = asyncio.Lock()
        metrics.exposition = self.exposition

    def _read_others(self) -> list[dict[str, Any]]:
        paths = (path for path in self.directory.glob("*.json") if path != self.own)
        return [snapshot for path in paths if (snapshot := read_object(path)) is not None]

    async def publish(self) -> None:
        """Write this worker's numbers (taken on the loop, written in a thread)."""
        await self._published()

    async def _published(self) -> dict[str, Any]:
        """`publish`, returning the numbers written."""
        async with self._writing:
            snapshot = self.metrics.snapshot()
            try:
                await asyncio.to_thread(write_json, self.own, snapshot)
            except OSError as exc:
                logger.warning("Could not write the metrics snapshot %s: %s", self.own, exc)
            return snapshot

    async def exposition(self) -> bytes:
        """A scrape's answer: this worker's snapshot, published first, plus the others'."""
        own = await self._published()
        others = await asyncio.to_thread(self._read_others)
        return self.metrics.render([own, *others], own=False)

    async def run(self) -> None:
        while True:
            await self.publish()
            await asyncio.sleep(PUBLISH_SECONDS)


def share_between_workers(app: FastAPI, metrics: ServerMetrics) -> None:
    """In a worker of `--workers N`, publish while the app runs (the final counts last)."""
    shared = workers_dir()
    if shared is None:
        return
    directory = shared / "metrics"
    directory.mkdir(exist_ok=True)
    sharing = SharedMetrics(metrics, directory)
    run_beside(app, sharing.run, last=sharing.publish)
