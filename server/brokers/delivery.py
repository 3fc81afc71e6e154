"""Background delivery shared by the brokers: an in-order queue, retried with back-off."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from server.brokers.in_doubt import InDoubtEvents
from server.brokers.ordering import chain_ids
from server.errors import first_line, how_many
from server.setting_values import flag
from server.tasks import stop, time_left
from server.trackers.events import OFF_LOOP_EVENTS
from server.trackers.store import TrackerStore
from server.trackers.weight import KIB

logger = logging.getLogger(__name__)

DEFAULT_MAX_PENDING = 100_000
MIN_RETRY_DELAY = 0.05
# While deliveries fail, one line at the first failure and one a window after it.
STILL_FAILING_WINDOW_SECONDS = 60.0
# While closing, the longest pause between two attempts (the back-off reaches 30 s).
CLOSING_RETRY_SECONDS = 0.5
# The `event_broker:` key (of every type) that makes a turn's answer wait until the broker
# took its events; off by default: answered at once, as in Rasa.
WAIT_FOR_DELIVERY = "wait_for_delivery"
# With it on, how long a turn's answer waits for the broker to take its events (RabbitMQ's
# confirm, the SQL broker's commit, the file's write); past it, turns are answered without
# waiting until the broker takes events again.
CONFIRM_WAIT_SECONDS = 2.0
# A turn waits only while no more than this many events are queued, its own included: behind
# a bulk import's, or a backlog an outage left, it is answered as before.
HOLD_QUEUED_AT_MOST = 2_000


class _DeliveryIds:
    """Ids unique across processes and restarts: a random half, drawn once per process (again
    in a forked child), and a count. A uuid4 per event cost 10 us, a tenth of the RabbitMQ
    broker's CPU an event."""

    def __init__(self) -> None:
        self._fresh()
        os.register_at_fork(after_in_child=self._fresh)

    def _fresh(self) -> None:
        self._prefix = uuid.uuid4().hex[:16]
        self._count = itertools.count()

    def next(self) -> str:
        return f"{self._prefix}{next(self._count):016x}"


_delivery_ids = _DeliveryIds()


@dataclass(frozen=True)
class Outgoing:
    """One event on its way out; `message_id` stays the same across retries (and processes:
    `submit` derives it from the content), `previous_id` is the conversation's event before."""

    sender_id: str
    event: dict[str, Any]
    message_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    previous_id: str | None = None
    # Unique to this one publish of this event, kept across its retries (the SQL broker's
    # `event_key`): a retry finds what a commit whose reply was lost wrote.
    delivery_id: str = field(default_factory=_delivery_ids.next)
    # Set by `botserver export`, one per run: RabbitMQ's `rasa-export-process-id` header.
    export_process_id: str | None = None
    # What it counts toward the queue's bound: 1, and 1 more per full KiB of its JSON.
    weight: int = 1

    def body(self) -> dict[str, Any]:
        return {"sender_id": self.sender_id, **self.event}


def outgoing(
    sender_id: str,
    events: list[dict[str, Any]],
    previous_event: dict[str, Any] | None,
    before: Sequence[dict[str, Any]] = (),
) -> list[Outgoing]:
    """The messages for `events`, chained after `previous_event` (`before`: see `chain_ids`);
    touches no shared state."""
    sizes: list[int] = []
    ids = chain_ids(sender_id, events, previous_event, before, sizes)
    return [
        Outgoing(sender_id, event, message_id, previous_id, weight=1 + size // KIB)
        for event, (message_id, previous_id), size in zip(events, ids, sizes, strict=True)
    ]


# Delivers messages from the left of the deque, popping each one once it is safely delivered;
# raises when the broker fails (what was popped stays delivered).
Sender = Callable[[deque[Outgoing]], Awaitable[None]]


async def _outgoing(
    sender_id: str,
    events: list[dict[str, Any]],
    previous_event: dict[str, Any] | None,
    before: Sequence[dict[str, Any]],
) -> list[Outgoing]:
    """`outgoing`; of a bulk (or after a client's long run of one timestamp) in a thread."""
    if len(events) + len(before) > OFF_LOOP_EVENTS:
        return await asyncio.to_thread(outgoing, sender_id, events, previous_event, before)
    return outgoing(sender_id, events, previous_event, before)


def count_dropped(pending: deque[Outgoing], count: int = 1) -> None:
    """Says that `count` messages about to leave `pending` are dropped, not delivered (for
    /metrics: only a broker's own queue counts; `botserver export`'s has no figures)."""
    if isinstance(pending, _Queue):
        pending.dropped += count


def pop_delivered(pending: deque[Outgoing], delivered: Sequence[Outgoing]) -> None:
    """Pops from the front of `pending` the messages of `delivered` (taken from its front,
    in order) it still holds: a full queue drops its oldest for room, perhaps some being
    delivered, and popping by count then took later messages, never delivered, with them."""
    for item in delivered:
        if pending and pending[0] is item:
            pending.popleft()


def waits_for_delivery(config: dict[str, Any]) -> bool:
    """The section's `wait_for_delivery` (false when absent); anything but true or false
    stops the start."""
    return flag(config, WAIT_FOR_DELIVERY, default=False)


class _Queue(deque[Outgoing]):
    """The messages still to deliver; a waiter on one (`BackgroundDelivery.taken`) is woken
    when it leaves the queue, delivered or dropped. It counts those dropped (`count_dropped`):
    the others that left were delivered; and what those queued weigh (`Outgoing.weight`)."""

    def __init__(self, heaviest: int) -> None:
        super().__init__()
        self.dropped = 0
        # What those queued weigh, each at most `heaviest`: a quarter of the bound, so that
        # one huge event (RabbitMQ refuses it, or takes it) drops none queued before it.
        self.weight = 0
        self.heaviest = heaviest
        # id of a queued message -> (the message, kept alive for its id; its waiter)
        self.waiters: dict[int, tuple[Outgoing, asyncio.Future[None]]] = {}

    def extend(self, items: Iterable[Outgoing], /) -> None:
        if not isinstance(items, list):
            items = list(items)
        super().extend(items)
        heaviest = self.heaviest
        self.weight += sum([min(item.weight, heaviest) for item in items])

    def popleft(self) -> Outgoing:
        item = super().popleft()
        self.weight -= min(item.weight, self.heaviest)
        if self.waiters:
            self._left(item)
        return item

    def remove(self, value: Outgoing, /) -> None:
        super().remove(value)
        self.weight -= min(value.weight, self.heaviest)
        if self.waiters:
            self._left(value)

    def _left(self, item: Outgoing) -> None:
        waiter = self.waiters.pop(id(item), None)
        if waiter is not None and not waiter[1].done():
            waiter[1].set_result(None)


class BackgroundDelivery:
    """One task drains the queue in order; failures wait (back-off) and retry forever."""

    def __init__(
        self,
        name: str,
        send: Sender,
        retry_delay: float = 5.0,
        max_retry_delay: float = 30.0,
        warn_after_attempts: int = 20,
        max_pending: int = DEFAULT_MAX_PENDING,
    ) -> None:
        self.name = name
        self._send = send
        # `retry_delay_in_seconds: 0` (or less) retried a broker that is down thousands of
        # times a second, a log line each, at full CPU.
        self._retry_delay = max(retry_delay, MIN_RETRY_DELAY)
        self._max_retry_delay = max(max_retry_delay, retry_delay)
        self._warn_after = warn_after_attempts
        self._max_pending = max_pending
        self._pending = _Queue(heaviest=max(1, max_pending // 4))
        self._wakeup = asyncio.Event()
        # Cuts a back-off pause short: closing retries at once what waits for the next attempt.
        self._retry_now = asyncio.Event()
        self._closing = False
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self._dropped = 0
        self.failed_attempts = 0  # delivery attempts that raised (/metrics)
        self._enqueued = 0  # messages ever queued (/metrics: `delivered`)
        self._last_error: str | None = None  # why the latest attempt failed; None once one works
        self._attempt_since: float | None = None  # when the attempt under way began
        # Why the broker takes no events for now, as it said (`release_turns`).
        self._held_by: str | None = None
        # A turn's events were not taken within CONFIRM_WAIT_SECONDS: turns are answered
        # without waiting until the broker takes one again.
        self._overdue = False

    @property
    def pending(self) -> int:
        return len(self._pending)

    @property
    def delivered(self) -> int:
        """Messages delivered (confirmed, committed, written) since the start: those queued
        that left the queue and were not dropped (counted so, a turn's message costs no
        count of its own as it leaves)."""
        return self._enqueued - len(self._pending) - self._pending.dropped

    @property
    def dropped(self) -> int:
        """Messages dropped since the start: for room in a full queue, or refused by the
        broker (larger than it takes)."""
        return self._pending.dropped

    @property
    def failing(self) -> bool:
        """Whether the latest delivery attempt failed (until one works)."""
        return self._last_error is not None

    def holds_turns(self) -> bool:
        """Whether a turn waits for its events to be taken: not while the broker fails or is
        overdue, nor behind a long queue."""
        return (
            self._last_error is None
            and not self._overdue
            and len(self._pending) <= HOLD_QUEUED_AT_MOST
            and self._pending.weight < self._max_pending  # nothing queued was dropped
        )

    async def wait_taken(self, item: Outgoing, timeout: float = CONFIRM_WAIT_SECONDS) -> bool:
        """Wait until `item`, queued, has left the queue (delivered, or dropped), at most
        `timeout` seconds, or until a delivery attempt fails; True if it left. Past `timeout`,
        `holds_turns` is False until the broker takes it, said once."""
        queue = self._pending
        waiter = asyncio.get_running_loop().create_future()
        queue.waiters[id(item)] = (item, waiter)
        try:
            await asyncio.wait_for(waiter, timeout)
        except TimeoutError:
            if id(item) not in queue.waiters:  # it left as the time ran out
                return True
            resumed = asyncio.get_running_loop().create_future()
            resumed.add_done_callback(self._taken_again)
            queue.waiters[id(item)] = (item, resumed)
            if not self._overdue:
                self._overdue = True
                # Each process (`--workers N`) says it of its own queue: the process named,
                # N such lines read as N processes, not as N outages.
                logger.warning(
                    "%s: a turn's events were not taken within %g s (%s queued in process "
                    "%d); its turns are answered without waiting for the broker until it "
                    "takes them",
                    self.name,
                    timeout,
                    how_many(len(queue), "event"),
                    os.getpid(),
                )
            return False
        return True

    def _taken_again(self, _: asyncio.Future[None]) -> None:
        if self._overdue:
            self._overdue = False
            logger.info(
                "%s: takes events again; the turns of process %d wait for it again",
                self.name,
                os.getpid(),
            )

    def release_turns(self, why: str) -> None:
        """The broker knows it cannot take events for now, `why` (RabbitMQ blocks
        publishing): the turns waiting are answered (their events stay queued), and a close
        meanwhile names it as what kept them (until `resumed`)."""
        self._held_by = why
        self._release_waiters()

    def resumed(self) -> None:
        """The broker takes events again (what `release_turns` said no longer holds)."""
        self._held_by = None

    def _release_waiters(self) -> None:
        """A failed attempt, or the close: the turns waiting are answered (their events stay
        queued)."""
        self._overdue = False  # known down now: the failure's own warning says it
        waiters, self._pending.waiters = self._pending.waiters, {}
        for _, waiter in waiters.values():
            if not waiter.done():
                waiter.set_result(None)

    def enqueue(self, items: list[Outgoing]) -> None:
        """Queues messages `outgoing` made (perhaps in a thread: a bulk append's 100,000
        events took 0.7 s to hash and wrap on the event loop)."""
        pending = self._pending
        pending.extend(items)
        self._enqueued += len(items)
        overflow = 0
        # The oldest go first: a bound on memory (an event of 300 KiB of metadata counts
        # 301), not only on the events' number.
        while pending.weight > self._max_pending and len(pending) > 1:
            pending.popleft()
            overflow += 1
        if overflow:
            count_dropped(pending, overflow)
            self._dropped += overflow
            logger.error(
                "%s: %s dropped (the broker has been down too long; %d queued at most, an "
                "event of 1 KiB or more counting 1 more per KiB)",
                self.name,
                how_many(self._dropped, "event"),
                self._max_pending,
            )
        if self._pending:
            self._idle.clear()
            self._wakeup.set()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name=f"{self.name} delivery")

    async def _run(self) -> None:
        failures = 0
        down_since = reported = 0.0
        while True:
            if not self._pending:
                self._idle.set()
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            try:
                self._attempt_since = time.monotonic()
                try:
                    await self._send(self._pending)
                finally:
                    self._attempt_since = None
                self._last_error = None
                if failures:
                    logger.warning(
                        "%s: reachable again after %.1f s (%s failed); the events that "
                        "waited are delivered, in order",
                        self.name,
                        time.monotonic() - down_since,
                        how_many(failures, "attempt"),
                    )
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                self.failed_attempts += 1
                self._last_error = first_line(exc, limit=None)
                self._release_waiters()
                now = time.monotonic()
                delay = min(self._retry_delay * 2 ** min(failures - 1, 16), self._max_retry_delay)
                if failures == 1:
                    down_since = reported = now
                    logger.warning(
                        "%s: delivery failed (attempt 1, %s queued), retrying in %.1f s: "
                        "%s. Clients are answered as usual; events wait in memory (%d at most, "
                        "fewer large ones) and go out when it is back; the log says how it goes "
                        "every %g s.",
                        self.name,
                        how_many(len(self._pending), "event"),
                        delay,
                        first_line(exc, limit=None),
                        self._max_pending,
                        STILL_FAILING_WINDOW_SECONDS,
                    )
                elif now - reported >= STILL_FAILING_WINDOW_SECONDS:
                    reported = now
                    log = logger.error if failures >= self._warn_after else logger.warning
                    log(
                        "%s: delivery still failing after %.0f s (attempt %d, %s "
                        "queued), retrying in %.1f s: %s",
                        self.name,
                        now - down_since,
                        failures,
                        how_many(len(self._pending), "event"),
                        delay,
                        first_line(exc, limit=None),
                    )
                else:
                    logger.debug(
                        "%s: delivery failed (attempt %d, %s queued), retrying in %.1f s: %s",
                        self.name,
                        failures,
                        how_many(len(self._pending), "event"),
                        delay,
                        first_line(exc, limit=None),
                    )
                await self._pause(delay)

    async def _pause(self, delay: float) -> None:
        """The back-off before the next attempt: `delay` seconds, cut short when closing."""
        if self._closing:
            delay = min(delay, CLOSING_RETRY_SECONDS)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._retry_now.wait(), delay)
        self._retry_now.clear()

    def _why_not_delivered(self) -> str:
        if self._held_by is not None:
            return f" ({self._held_by})"
        if self._last_error is not None:
            return f" (the last attempt failed: {self._last_error})"
        if self._attempt_since is not None:  # a broker that stopped answering: no error yet
            return (
                f" (an attempt under way for {time.monotonic() - self._attempt_since:.1f} s "
                "had not ended)"
            )
        return ""

    async def send_now(self, items: deque[Outgoing]) -> None:
        """Delivers `items` in this task, bypassing the queue: each is popped from the left
        once delivered, and the first failure raises, with no retry."""
        await self._send(items)

    async def flush(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds until everything queued is delivered; True if so."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def close(self, timeout: float = 5.0) -> None:
        """Wait up to `timeout` for the queue to drain, then stop."""
        if self._task is None:
            return
        # Before, the task slept out its back-off (up to 30 s): closing waited its `timeout`
        # without an attempt, and lost what it said it was retrying.
        self._closing = True
        self._retry_now.set()
        if self._pending and (self._last_error is not None or self._held_by is not None):
            # Said before the wait: after Ctrl-C, a silent pause reads as a hang.
            logger.warning(
                "%s: closing: %s still queued, %s%s",
                self.name,
                how_many(len(self._pending), "event"),
                # None left: what the read-back of events in doubt took of the close's time.
                f"retrying for up to {time_left(timeout)}"
                if timeout > 0
                else "no time left to retry them",
                self._why_not_delivered(),
            )
        if not await self.flush(timeout):
            logger.error(
                "%s: closing with %s not delivered; %s lost%s",
                self.name,
                how_many(len(self._pending), "event"),
                "it is" if len(self._pending) == 1 else "they are",
                self._why_not_delivered(),
            )
        await stop(self._task)
        self._task = None
        self._closing = False
        # The turns still waiting for their events are answered now, not at their bound.
        self._release_waiters()


# How long closing a broker may take to deliver what is still queued (after the graceful
# period of the requests and turns in flight: docs/deployment.md).
CLOSE_SECONDS = 5.0


class QueuedBroker:
    """Base of brokers that queue events and deliver them from a background task.

    A subclass sets `self._delivery` (a BackgroundDelivery around its own `_send`) and
    `self.waits_for_delivery` (`waits_for_delivery(config)`), and calls `_close_delivery`
    from its `close`.
    """

    _delivery: BackgroundDelivery
    _in_doubt: InDoubtEvents | None = None  # made on the first save that fails
    # The `event_broker:` keys every type reads.
    SHARED_SETTINGS = frozenset({WAIT_FOR_DELIVERY})
    # `wait_for_delivery: true`: `publish` waits until the broker took the events.
    waits_for_delivery = False

    @property
    def pending(self) -> int:
        """Events queued and not yet delivered."""
        return self._delivery.pending

    @property
    def held(self) -> int:
        """Events held until a failed save of their conversation is read back."""
        return 0 if self._in_doubt is None else self._in_doubt.held

    def _reachable(self) -> bool:
        """Whether the broker takes events: its latest delivery attempt did not fail."""
        return not self._delivery.failing

    @property
    def blocked(self) -> bool:
        """Whether the broker said it takes no events for now (RabbitMQ's connection.blocked)."""
        return False

    def figures(self) -> dict[str, int]:
        """What /metrics shows of the broker: events queued (not yet delivered, or held),
        whether it is connected and blocked (1 or 0), and the totals since the start of
        events delivered and dropped and of delivery attempts that failed."""
        delivery = self._delivery
        return {
            "queued": delivery.pending + self.held,
            "connected": int(self._reachable()),
            "blocked": int(self.blocked),
            "published": delivery.delivered,
            "dropped": delivery.dropped,
            "failed": delivery.failed_attempts,
        }

    async def publish(
        self,
        sender_id: str,
        events: list[dict[str, Any]],
        previous_event: dict[str, Any] | None = None,
        before: Sequence[dict[str, Any]] = (),
    ) -> None:
        """Queues the events and, with `wait_for_delivery` on and while the broker works,
        waits until it has taken them (CONFIRM_WAIT_SECONDS at most); never raises for an
        outage."""
        if self._in_doubt is not None and self._in_doubt.holds(sender_id):
            self._in_doubt.add_committed(sender_id, events, previous_event, before)
        else:
            items = await _outgoing(sender_id, events, previous_event, before)
            self._delivery.enqueue(items)
            if items and self.waits_for_delivery and self._holds_turns():
                await self._delivery.wait_taken(items[-1])

    def _holds_turns(self) -> bool:
        """Whether `publish` waits (CONFIRM_WAIT_SECONDS at most) until the broker has taken
        the events: while it is known to work."""
        return self._delivery.holds_turns()

    async def deliver(self, items: deque[Outgoing]) -> None:
        """Delivers `items` now, in order, popping each once delivered; the first failure
        raises (no retry), leaving the rest in `items`."""
        await self._delivery.send_now(items)

    def publish_in_doubt(
        self,
        sender_id: str,
        events: list[dict[str, Any]],
        previous_event: dict[str, Any] | None,
        store: TrackerStore,
        before: Sequence[dict[str, Any]] = (),
    ) -> None:
        """Events whose save raised: published once `store` shows them committed (dropped if
        it does not), before any later event of the conversation."""
        if self._in_doubt is None:
            self._in_doubt = InDoubtEvents(self._delivery.name, _outgoing, self._delivery.enqueue)
        self._in_doubt.add_in_doubt(sender_id, events, previous_event, store, before)

    async def flush(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds until every queued event is delivered and no event
        is held; True if so."""
        deadline = time.monotonic() + timeout
        while self.held:
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.05)
        return await self._delivery.flush(max(0.0, deadline - time.monotonic()))

    async def _close_delivery(self, timeout: float = CLOSE_SECONDS) -> None:
        """Read back what is in doubt, then deliver what is queued, `timeout` seconds in all
        (before: each, so a silent database held the stop twice as long as documented)."""
        deadline = time.monotonic() + timeout
        if self._in_doubt is not None:
            await self._in_doubt.settle(timeout)
        await self._delivery.close(max(0.0, deadline - time.monotonic()))
