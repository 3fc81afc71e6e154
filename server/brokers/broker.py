"""The event broker contract: events go out after the tracker commit (with
`wait_for_delivery: true`, before the turn's answer while the broker works), never failing a
turn."""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

from server.trackers.store import TrackerStore

if TYPE_CHECKING:
    from server.brokers.delivery import Outgoing


class EventBroker(Protocol):
    """Publishes a conversation's new events to the outside world."""

    async def publish(
        self,
        sender_id: str,
        events: list[dict[str, Any]],
        previous_event: dict[str, Any] | None = None,
        before: Sequence[dict[str, Any]] = (),
    ) -> None:
        """Queue the events for delivery; with `wait_for_delivery: true` and while the broker
        works, wait (2 s at most) until it has taken them, so that a turn answered after it
        is published. Never raises for a broker outage; returns at once by default, and
        while the broker is known to be down.

        Call it after the events are committed to the tracker store, with the conversation's
        last event before them (None for a new conversation): it links the messages into a
        chain a consumer can restore the order by (`server.brokers.ordering`). `before`: the
        stored events up to `previous_event` that share its timestamp (`same_time_run`),
        which tell byte-identical events apart. Delivery happens in the background, in this
        process's order, retried while the broker is down.
        """

    def publish_in_doubt(
        self,
        sender_id: str,
        events: list[dict[str, Any]],
        previous_event: dict[str, Any] | None,
        store: TrackerStore,
        before: Sequence[dict[str, Any]] = (),
    ) -> None:
        """Events whose save raised (the commit may have happened all the same): published,
        as `publish` would have, once `store` shows them committed, and dropped if it shows
        they were not. Until then the conversation's later events wait behind them."""

    async def deliver(self, items: deque[Outgoing]) -> None:
        """Delivers `items` now, in order, popping each once delivered; the first failure
        raises (no retry), leaving the rest in `items` (`botserver export`)."""

    async def close(self) -> None:
        """Deliver what is still queued (for a few seconds), then disconnect."""
