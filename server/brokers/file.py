"""The file event broker: Rasa's event log, one `{"sender_id": ..., **event}` JSON line per
event appended to `path` (`rasa_event.log` by default), written from a background task."""

from __future__ import annotations

import asyncio
import os
from collections import deque
from itertools import islice
from pathlib import Path
from typing import Any

from server.brokers.delivery import BackgroundDelivery, Outgoing, QueuedBroker, pop_delivered
from server.brokers.delivery import waits_for_delivery as read_wait_setting
from server.brokers.event_json import rasa_text
from server.errors import InvalidConfig, first_line

DEFAULT_PATH = "rasa_event.log"
BATCH_SIZE = 500


class FileEventBroker(QueuedBroker):
    """Appends events to a file, in order, off the event loop."""

    # The `event_broker:` keys read: Rasa's FileEventBroker's `path`, and ours.
    SETTINGS = frozenset({"path", "retry_delay_in_seconds"} | QueuedBroker.SHARED_SETTINGS)

    def __init__(self, config: dict[str, Any]) -> None:
        self.waits_for_delivery = read_wait_setting(config)
        self.path = Path(str(config.get("path") or DEFAULT_PATH))
        # As Rasa's broker, which opens its file when it is made: a path that cannot be
        # appended to stops the start, instead of every event's write failing later.
        try:
            self._append("")
        except OSError as exc:
            raise InvalidConfig(
                f"path {str(self.path)!r} cannot be opened for appending: "
                f"{exc.strerror or first_line(exc)}"
            ) from None
        self._delivery = BackgroundDelivery(
            "file event broker",
            self._send,
            retry_delay=float(config.get("retry_delay_in_seconds", 1)),
        )

    async def _send(self, pending: deque[Outgoing]) -> None:
        while pending:
            batch = list(islice(pending, BATCH_SIZE))
            await asyncio.to_thread(self._append_batch, batch)
            pop_delivered(pending, batch)

    def _append_batch(self, batch: list[Outgoing]) -> None:
        """Written out (and turned into JSON: 20 ms a batch) off the event loop."""
        self._append("".join(rasa_text(item.body()) + "\n" for item in batch))

    def _append(self, lines: str) -> None:
        # One write of the whole batch to a file opened for appending: the lines of several
        # processes (--workers) never interleave, which a buffered file's several writes allow.
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            data = memoryview(lines.encode("utf-8"))
            while data:  # a regular file takes it in one write but on a full disk
                data = data[os.write(fd, data) :]
        finally:
            os.close(fd)

    async def close(self) -> None:
        await self._close_delivery()
