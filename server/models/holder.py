"""The live model: load off the event loop, then swap one reference.

A turn reads `holder.current` once and uses that object to its end, so turns in flight
finish on the old model while a new one takes over. A failed load keeps the old model.
Of requests for a model that overlap, the one made last wins, whichever finishes last.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import itertools
import logging
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Generic, TypeVar

from server.errors import (
    ModelError,
    ModelStorageFull,
    ModelSuperseded,
    NewerModel,
    OutdatedModel,
)
from server.models.archive import file_sha256, read_archive
from server.models.extraction import extraction_directory
from server.models.safety import DEFAULT_LIMITS, ArchiveLimits
from server.trackers.freeing import release_model_off_loop

logger = logging.getLogger(__name__)

T = TypeVar("T")
Loader = Callable[[Path, dict[str, Any]], T]


@dataclass(frozen=True)
class ModelInfo:
    """What /status says about the loaded model."""

    model_file: str
    model_id: str | None
    fingerprint: str
    loaded_at: datetime
    metadata: dict[str, Any] = field(repr=False)
    source: str = "local"

    @property
    def training_type(self) -> str:
        """What the model holds: "both" (NLU and dialogue), "nlu" or "core"."""
        kind = self.metadata.get("training_type")
        return kind if kind in ("nlu", "core") else "both"


@dataclass(frozen=True)
class LoadedModel(Generic[T]):
    """A model and its info, swapped together so a reader never sees them mismatched."""

    model: T
    info: ModelInfo


class ModelHolder(Generic[T]):
    """Holds the current model; loads new ones off the loop and swaps them in one step.

    `loader(directory, metadata)` builds the in-memory model from an extracted archive. It
    runs in a worker thread and must read everything it needs: the directory is removed as
    soon as it returns.
    """

    def __init__(
        self,
        loader: Loader[T],
        verify_key: bytes | Path | None = None,
        limits: ArchiveLimits = DEFAULT_LIMITS,
    ):
        self._loader = loader
        self.verify_key = verify_key
        self.limits = limits
        self._loaded: LoadedModel[T] | None = None
        self._load_lock = asyncio.Lock()
        # The latest failure (message, when, the ticket of its request), until a request at
        # least as new is served: see `last_error`.
        self._failure: tuple[str, datetime, int] | None = None
        self.num_active_training_jobs = 0
        self._tickets = itertools.count(1)
        self._served_ticket = 0  # the ticket of the request the current model answers
        # Told of a model replaced or unloaded, to let go of what a cache keeps of it.
        self.on_replaced: Callable[[T], None] | None = None

    # ---------------------------------------------------------------------------- reading

    @property
    def current(self) -> T | None:
        """The model a new turn should use (grab once per turn), or None."""
        loaded = self._loaded
        return loaded.model if loaded is not None else None

    @property
    def info(self) -> ModelInfo | None:
        loaded = self._loaded
        return loaded.info if loaded is not None else None

    @property
    def loaded(self) -> LoadedModel[T] | None:
        """Model and info together, consistent with each other."""
        return self._loaded

    @property
    def is_ready(self) -> bool:
        return self._loaded is not None

    @property
    def last_error(self) -> str | None:
        """Why the latest request for a model failed (/status `last_load_error`), or None:
        also once a newer request (a load, a DELETE) has been served. A request that fails
        after a newer one was made never replaces the newer one's failure or success."""
        failure = self._standing_failure()
        return None if failure is None else failure[0]

    @property
    def last_error_at(self) -> datetime | None:
        failure = self._standing_failure()
        return None if failure is None else failure[1]

    def _standing_failure(self) -> tuple[str, datetime, int] | None:
        failure = self._failure
        return None if failure is None or self.superseded(failure[2]) else failure

    def status(self) -> dict[str, Any]:
        """The model part of GET /status."""
        info = self.info
        return {
            "model_id": info.model_id if info else None,
            "model_file": info.model_file if info else None,
            "fingerprint": info.fingerprint if info else None,
            "num_active_training_jobs": self.num_active_training_jobs,
        }

    # ---------------------------------------------------------------------------- loading

    def ticket(self) -> int:
        """Number a request for a model (a PUT, a DELETE, a pull) when it starts.

        A load whose ticket is older than the one of the model already served is discarded
        (ModelSuperseded): a pull that was downloading when a PUT /model came must not
        replace the PUT's model when it finishes after it.
        """
        return next(self._tickets)

    def superseded(self, ticket: int) -> bool:
        """True once a request newer than `ticket` has been served."""
        return ticket < self._served_ticket

    async def load_archive(
        self,
        path: Path,
        fingerprint: str | None = None,
        model_file: str | None = None,
        source: str = "local",
        ticket: int | None = None,
    ) -> ModelInfo:
        """Extract and build a model off the loop, then make it current.

        `fingerprint` is the model server's ETag; without one, the archive's sha256 is used.
        On failure the previous model stays, `last_error` records why, and the error raises
        (for the caller to report: it is not logged here). `ticket` is the request's, taken
        when it started (see `ticket()`); without one the request starts now.
        """
        path = Path(path)
        if ticket is None:
            ticket = self.ticket()
        async with self._load_lock:
            if self.superseded(ticket):
                raise ModelSuperseded(f"'{path.name}': a newer model request was served first")
            try:
                # Cancelled (a request's timeout, a poller stopped by a new PUT, the server
                # stopping), the thread goes on and removes what it extracted when it ends.
                loaded = await asyncio.to_thread(
                    self._build, path, fingerprint, model_file or path.name, source
                )
            except Exception as exc:
                if is_disk_full(exc):  # the server's problem, whatever was writing
                    full = ModelStorageFull(f"no space left on the server to extract {path.name}")
                    self.record_failure(path.name, full, ticket)
                    raise full from exc
                if isinstance(exc, OutdatedModel | NewerModel):  # say which model it was
                    refused = type(exc)(f"Could not load model '{path.name}': {exc}")
                    self.record_failure(path.name, refused, ticket)
                    raise refused from exc
                self.record_failure(path.name, exc, ticket)
                if isinstance(exc, ModelError) and type(exc) is not ModelError:
                    raise  # a kind of its own (unsafe, corrupt, unsupported...), named already
                # A component that cannot load its state: say which model it was.
                raise ModelError(f"Could not load model '{path.name}': {exc}") from exc
            if self.superseded(ticket):
                raise ModelSuperseded(f"'{path.name}': a newer model request was served first")
            previous, self._loaded = self._loaded, loaded
            self._served_ticket = ticket
            if self._failure is not None and self._failure[2] <= ticket:
                self._failure = None  # (a newer request's failure stays)
        if previous is not None:
            self._let_go(previous.model)
        del previous
        logger.info(
            "Loaded model %s (model_id %s, fingerprint %s)",
            loaded.info.model_file,
            loaded.info.model_id,
            loaded.info.fingerprint,
        )
        return loaded.info

    async def load_bytes(
        self,
        data: bytes,
        fingerprint: str | None = None,
        model_file: str = "model.tar.gz",
        source: str = "upload",
    ) -> ModelInfo:
        """Load an archive held in memory (an upload), via a private temporary file."""
        ticket = self.ticket()
        spool = await asyncio.to_thread(_write_temp_archive, data)
        try:
            return await self.load_archive(spool, fingerprint, model_file, source, ticket)
        finally:
            await asyncio.to_thread(shutil.rmtree, spool.parent, True)

    async def unload(self) -> None:
        """Forget the current model (DELETE /model). Turns in flight keep their reference;
        a load that started before is discarded when it finishes."""
        ticket = self.ticket()
        async with self._load_lock:
            previous, self._loaded = self._loaded, None
            self._served_ticket = ticket
        if previous is not None:
            logger.info("Unloaded model %s", previous.info.model_file)
            self._let_go(previous.model)

    def _let_go(self, model: T) -> None:
        """After `model` was replaced or unloaded: the caches told (`on_replaced`), then it
        is freed in the releasing thread once no turn holds it (freed where its last
        reference went, a model of 40,000 responses held the loop 9-11 ms)."""
        if self.on_replaced is not None:
            self.on_replaced(model)
        release_model_off_loop(model)

    def _build(
        self, path: Path, fingerprint: str | None, model_file: str, source: str
    ) -> LoadedModel[T]:
        """Runs in a worker thread: hash, extract, build. The extracted archive is removed
        once built: a model is data in memory, and nothing is left behind by a stop, a
        replaced or cancelled load, or a crash (before, a killed process left its model in
        the temporary directory for good)."""
        if fingerprint is None:
            fingerprint = file_sha256(path)
        with extracted_archive(path, self.verify_key, self.limits) as (directory, metadata):
            model = self._loader(directory, metadata)
        info = ModelInfo(
            model_file=model_file,
            model_id=metadata.get("model_id"),
            fingerprint=fingerprint,
            loaded_at=datetime.now(UTC),
            metadata=metadata,
            source=source,
        )
        return LoadedModel(model=model, info=info)

    def record_failure(self, name: str, exc: BaseException | str, ticket: int) -> None:
        """Keep why loading `name` for the request `ticket` failed, for /status
        (`last_load_error`); also for a failure before the archive reached the holder (a
        remote download). Not kept when a newer request has failed or been served since."""
        if self._failure is not None and ticket < self._failure[2]:
            return
        # Not logged here: the caller reports it once, as what it was doing (startup, a
        # pull it may have reported already, a PUT /model answered with the error).
        # A name from argv or a JSON escape may hold lone surrogates, which no JSON body
        # can carry: /status would fail on them. Escaped, they show what was given.
        error = f"{name}: {exc}"
        escaped = error.encode("utf-8", "backslashreplace").decode("utf-8")
        self._failure = (escaped, datetime.now(UTC), ticket)

    # ---------------------------------------------------------------------------- training

    @contextlib.contextmanager
    def training_job(self) -> Iterator[None]:
        """Counts a running training job for /status while the block runs."""
        self.num_active_training_jobs += 1
        try:
            yield
        finally:
            self.num_active_training_jobs -= 1


@contextlib.contextmanager
def extracted_archive(
    path: Path, verify_key: bytes | Path | None, limits: ArchiveLimits
) -> Iterator[tuple[Path, dict[str, Any]]]:
    """The archive at `path` checked and extracted into a new directory, and its metadata;
    the directory is removed when the block ends."""
    with extraction_directory() as directory:
        yield directory, read_archive(path, directory, verify_key, limits)


def is_disk_full(exc: BaseException) -> bool:
    """Whether `exc`, or an error it was raised from, says the disk or a quota is full."""
    seen: BaseException | None = exc
    for _ in range(10):  # a chain is short; never loop on a cycle
        if seen is None:
            return False
        if isinstance(seen, OSError) and seen.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _write_temp_archive(data: bytes) -> Path:
    directory = Path(tempfile.mkdtemp(prefix="botserver-upload-"))
    path = directory / "model.tar.gz"
    path.write_bytes(data)
    return path
