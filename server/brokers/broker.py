"""The event broker contract: events go out after the tracker commit, never failing a turn."""

from __future__ import annotations

from typing import Any, Protocol


class EventBroker(Protocol):
    """Publishes a conversation's new events to the outside world."""

    async def publish(
        self,
        sender_id: str,
        events: list[dict[str, Any]],
        previous_event: dict[str, Any] | None = None,
    ) -> None:
        """Queue the events for delivery; returns at once and never raises for a broker outage.

        Call it after the events are committed to the tracker store, with the conversation's
        last event before them (None for a new conversation): it links the messages into a
        chain a consumer can restore the order by (`server.brokers.ordering`). Delivery
        happens in the background, in this process's order, retried while the broker is down.
        """

    async def close(self) -> None:
        """Deliver what is still queued (for a few seconds), then disconnect."""
