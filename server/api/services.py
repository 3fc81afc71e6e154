"""The running services the API routes drive, found on `app.state.services`.

`server.api.server.build_app` fills it; tests may build one around in-memory stores.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import Request

from server.dialogue.agent import Agent
from server.dialogue.processor import DialogueModel
from server.models.holder import ModelHolder
from server.models.source import ModelSource

APP_STATE_KEY = "services"


@dataclass
class Services:
    """What the routes need: the agent, the live model and where models come from.

    `models_dir` is where POST /model/train saves models by default; `models_endpoint` is
    endpoints.yml's `models:` section, which wins over a PUT /model body as in Rasa.
    """

    agent: Agent
    holder: ModelHolder[DialogueModel]
    source: ModelSource
    models_dir: Path = Path("models")
    models_endpoint: dict[str, Any] | None = None
    background: set[asyncio.Task[Any]] = field(default_factory=set)

    def spawn(self, work: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Runs `work` in the background, keeping a reference until it finishes."""
        task = asyncio.create_task(work)
        self.background.add(task)
        task.add_done_callback(self.background.discard)
        return task

    async def cancel_background(self) -> None:
        tasks = list(self.background)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)


async def services_of(request: Request) -> Services:
    """FastAPI dependency: the services of the app serving `request`. A coroutine, so FastAPI
    calls it on the loop rather than sending it to a thread of anyio's pool (a thread hop
    per request, and anyio's pool imported on the loop by the first one)."""
    services = getattr(request.app.state, APP_STATE_KEY, None)
    if not isinstance(services, Services):
        raise RuntimeError("app.state.services is not set; build the app with build_app")
    return services
