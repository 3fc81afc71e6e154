"""/metrics across `botserver run --workers N`: every scrape counts all the workers.

A scrape reaches whichever worker the kernel hands its connection to, and each worker counts
only its own turns: scraped one by one, counters would jump up and down between scrapes. So
each worker writes a snapshot of its numbers to the directory the workers share (every
PUBLISH_SECONDS, and once more when it stops), and a scrape adds the other workers' latest
snapshots to its own live numbers. The snapshot of a worker that died stays, so the sums
never go down when a replacement starts from zero.
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
        metrics.peers = self.peers

    def _read_others(self) -> list[dict[str, Any]]:
        paths = (path for path in self.directory.glob("*.json") if path != self.own)
        return [snapshot for path in paths if (snapshot := read_object(path)) is not None]

    async def publish(self) -> None:
        """Write this worker's numbers (taken on the loop, written in a thread)."""
        try:
            await asyncio.to_thread(write_json, self.own, self.metrics.snapshot())
        except OSError as exc:
            logger.warning("Could not write the metrics snapshot %s: %s", self.own, exc)

    async def peers(self) -> list[dict[str, Any]]:
        return await asyncio.to_thread(self._read_others)

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
