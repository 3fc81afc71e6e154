"""Where the startup model comes from, in Rasa's priority order.

Model server (then pull on schedule) > remote storage > local `-m` path. A failure is
logged and the server starts without a model, as Rasa does.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from pathlib import Path
from typing import Any

import httpx

from server.errors import BotServerError, ModelNotFound, ModelSuperseded
from server.models.holder import ModelHolder, ModelInfo
from server.models.local import resolve_local_model
from server.models.model_server import ModelServerConfig, ModelServerPoller
from server.models.remote_storage import download_model, model_file_name
from server.worker_claims import first_to_say

logger = logging.getLogger(__name__)

_NO_MODEL = "No model configured: the server starts without a model"


class ModelSource:
    """Loads the first model into a holder and owns the model-server poller."""

    def __init__(self, holder: ModelHolder[Any], client: httpx.AsyncClient | None = None):
        self.holder = holder
        self._client = client
        self.poller: ModelServerPoller | None = None
        self._newest = -1  # the ticket of the latest model-server request

    async def load_initial(
        self,
        model_path: Path | str | None,
        endpoints_models_cfg: dict[str, Any] | None = None,
        remote_storage: str | None = None,
    ) -> ModelInfo | None:
        """Load the startup model; never raises for a model problem, logs it instead."""
        try:
            if endpoints_models_cfg:
                if remote_storage:
                    ignored = (
                        f"--remote-storage {remote_storage} is not read: endpoints.yml has a "
                        "models: section, which comes first (as in Rasa)"
                    )
                    if first_to_say(ignored):  # once for all workers
                        logger.warning(ignored)
                return await self.load_from_model_server(endpoints_models_cfg)
            if remote_storage:
                name = str(model_path or "models")
                return await self.load_from_remote_storage(remote_storage, name)
            if model_path is not None:
                return await self.load_local(Path(model_path))
            if first_to_say(_NO_MODEL):  # once for all workers
                logger.warning(_NO_MODEL)
        except BotServerError as exc:
            if first_to_say(f"Could not load a model at startup: {exc}"):  # once for workers
                logger.error("Could not load a model at startup: %s", exc)
        return None

    async def load_local(self, path: Path) -> ModelInfo:
        ticket = self.holder.ticket()
        try:
            archive = await asyncio.to_thread(resolve_local_model, path)
        except ModelNotFound as exc:  # shown in /status as a failed load would be
            self.holder.record_failure(str(path), exc.reason, ticket)
            raise
        return await self.holder.load_archive(archive, source="local", ticket=ticket)

    async def load_from_remote_storage(self, storage: str, model_name: str) -> ModelInfo:
        ticket = self.holder.ticket()
        try:
            path = await download_model(storage, model_name, self.holder.limits.max_total_bytes)
        except BotServerError as exc:  # shown in /status as a failed load would be
            self.holder.record_failure(model_file_name(model_name), exc, ticket)
            raise
        try:
            return await self.holder.load_archive(
                path,
                model_file=model_file_name(model_name),
                source=f"remote:{storage}",
                ticket=ticket,
            )
        finally:
            await asyncio.to_thread(shutil.rmtree, path.parent, True)

    async def load_from_model_server(
        self, cfg: dict[str, Any], *, anew: bool = False
    ) -> ModelInfo | None:
        """Pull once now, then on schedule; replaces any running poller.

        Returns the model loaded afterwards (a failed pull keeps the previous one and sets
        `self.poller.last_error`). Raises InvalidConfig for a bad `models:` section. `anew`
        (a PUT /model): the model server must send its model (ModelServerPoller.pull_once).
        """
        config = ModelServerConfig.from_endpoint(cfg)
        ticket = self._newest = self.holder.ticket()
        await self.stop()
        # Built in a thread: without a shared client it makes its own, which loads the CA
        # bundle (27-42 ms of CPU; PUT /model held every conversation that long).
        poller = await asyncio.to_thread(
            ModelServerPoller, self.holder, config, self._client, ticket
        )
        if self._newest != ticket:  # a newer request came meanwhile: its poller pulls
            await poller.stop()
            raise ModelSuperseded(f"{config.shown_url}: a newer model request came first")
        self.poller = poller
        await poller.pull_once(anew=anew)
        # Not when a newer request has stopped it meanwhile (it would pull on, unseen).
        if not poller.superseded and self.poller is poller:
            poller.start()
        return self.holder.info

    @property
    def pulls_again(self) -> bool:
        """True while a model server is pulled on schedule: it may bring a model later."""
        return self.poller is not None and self.poller.pulls_again

    @property
    def last_pull_error(self) -> dict[str, str] | None:
        """Why the latest model-server pull failed (message, at, failing_since), or None."""
        return self.poller.error_status() if self.poller is not None else None

    async def stop(self) -> None:
        """Stop pulling (server shutdown)."""
        poller, self.poller = self.poller, None
        if poller is not None:
            await poller.stop()
