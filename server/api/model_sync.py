"""PUT /model and DELETE /model across `botserver run --workers N`: every worker follows.

Such a request reaches one worker. That worker loads (or unloads) the model as it would alone,
then writes the request to `model.json` in the directory the workers share; every other worker
checks the file each FOLLOW_SECONDS and makes the same request of its own model source. Of two
requests served by two workers at once, the one that came later wins, whichever load ends
last: a request is numbered when it arrives, from a counter the workers share (never from the
wall clock, which NTP may step back), and never overwrites a newer one in the file. A
worker that starts later (a replacement) makes the latest request once it has loaded its
startup model, so it does not serve an older model than its siblings. A worker that cannot
make a request (the model server or the storage failed it just then) keeps its model and
tries again after RETRY_SECONDS, doubling up to RETRY_MAX_SECONDS, until it succeeds or a
newer request comes.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from server.api.errors import ApiError
from server.api.model import apply_model_request
from server.api.services import Services
from server.api.worker_files import (
    next_serial,
    read_object,
    run_beside,
    workers_dir,
    write_json_if_newer,
)

logger = logging.getLogger(__name__)

FOLLOW_SECONDS = 1.0
RETRY_SECONDS = 1.0
RETRY_MAX_SECONDS = 60.0


class ModelSync:
    """One worker's side: publishes the model requests it served, follows the others'."""

    def __init__(self, path: Path, services: Services) -> None:
        self.path = path
        self.services = services
        self.origin = f"{os.getpid()}-{time.time_ns()}"
        self.seen: int | None = None  # the serial of the last request made here
        # Held while this worker changes its model (a request it serves, or one it follows),
        # so a follower never applies an older request after this worker's newer one.
        self.changing = asyncio.Lock()
        # The request that failed here last, and when to try it again.
        self.failed: int | None = None
        self.retry_delay = RETRY_SECONDS
        self.retry_at = 0.0

    async def publish(self, request: dict[str, Any] | None, serial: int) -> None:
        """Tell the other workers to load the model of `request` (None: unload), unless a
        request that came after `serial` (when this one came) is there already."""
        record = {"serial": serial, "origin": self.origin, "request": request}
        if await asyncio.to_thread(write_json_if_newer, self.path, record, "serial"):
            self.seen = serial
        else:  # this worker follows the newer request on its next check
            logger.info("A newer model request came to another worker: %s is replaced", request)

    async def change(
        self, change: Callable[[], Awaitable[None]], request: dict[str, Any] | None
    ) -> None:
        """Change this worker's model (a PUT or DELETE /model it serves), then tell the
        others to make `request` too."""
        serial = await asyncio.to_thread(next_serial, self.path)
        async with self.changing:
            await change()
            await self.publish(request, serial)

    async def follow_once(self, *, own_too: bool = False) -> None:
        """Make the latest request if it is new here (and another worker's, unless `own_too`)."""
        async with self.changing:
            await self._follow(own_too)

    async def _follow(self, own_too: bool) -> None:
        record = await asyncio.to_thread(read_object, self.path)
        if record is None or record.get("serial") == self.seen:
            return
        serial = record.get("serial")
        if record.get("origin") == self.origin and not own_too:
            self.seen = serial
            return
        if serial == self.failed and time.monotonic() < self.retry_at:
            return
        request = record.get("request")
        if await self._make(request):
            self.seen, self.failed, self.retry_delay = serial, None, RETRY_SECONDS
            return
        if serial == self.failed:
            self.retry_delay = min(self.retry_delay * 2, RETRY_MAX_SECONDS)
        else:
            self.failed, self.retry_delay = serial, RETRY_SECONDS
        self.retry_at = time.monotonic() + self.retry_delay
        logger.error("This worker keeps its model and tries again in %g s", self.retry_delay)

    async def _make(self, request: Any) -> bool:
        """Make another worker's request here; False (logged) when it fails."""
        try:
            if request is None:
                await self.services.holder.unload()
                logger.info("Model unloaded, as another worker was asked")
            elif isinstance(request, dict):
                await apply_model_request(self.services, request)
                logger.info("Model loaded as another worker was asked: %s", request)
            else:
                logger.error("Ignoring a model request that is not an object: %r", request)
            return True
        except ApiError as exc:
            logger.error("Could not load the model another worker loaded (%s): %s", request, exc)
        except Exception:  # a broken archive, a store: this worker keeps its model and serves
            logger.exception("Could not load the model another worker loaded (%s)", request)
        return False

    async def run(self) -> None:
        while True:
            await asyncio.sleep(FOLLOW_SECONDS)
            try:
                await self.follow_once()
            except Exception:  # the follower must outlive a failed load
                logger.exception("Following the other workers' model failed")


def follow_other_workers(app: FastAPI, services: Services) -> None:
    """In a worker of `--workers N`, make model requests served by the other workers too;
    PUT and DELETE /model find the sync in `app.state.model_sync`."""
    shared = workers_dir()
    if shared is None:
        return
    sync = ModelSync(shared / "model.json", services)
    app.state.model_sync = sync

    async def catch_up() -> None:  # a replacement serves the latest model from the start
        await sync.follow_once(own_too=True)

    run_beside(app, sync.run, first=catch_up)
