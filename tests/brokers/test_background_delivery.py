"""The queue brokers deliver from (`server.brokers.delivery.BackgroundDelivery`): what its
close says of the events still queued."""

from __future__ import annotations

import asyncio
import multiprocessing
from collections import deque
from multiprocessing.connection import Connection

import pytest

from server.brokers.delivery import BackgroundDelivery, Outgoing, outgoing


async def refused(batch: deque[Outgoing]) -> None:
    raise ConnectionRefusedError(111, "Connection refused")


@pytest.mark.parametrize(("seconds", "said"), [(0.0, None), (0.3, "300 ms"), (5.0, "5 s")])
async def test_closing_says_how_long_it_retries_the_events_queued(
    caplog: pytest.LogCaptureFixture, seconds: float, said: str | None
) -> None:
    """A broker's close gets what its read-back of events in doubt left of its 5 s. Before,
    none left (or under half a second) was "retrying for up to 0 s", a retry there was no
    time for."""
    delivery = BackgroundDelivery("test broker", refused, retry_delay=30)
    delivery.enqueue([Outgoing("alice", {"event": "bot", "text": "hi"}) for _ in range(2)])
    for _ in range(100):  # the first attempt fails
        if "delivery failed" in caplog.text:
            break
        await asyncio.sleep(0.01)
    caplog.clear()
    await delivery.close(seconds)
    (closing,) = [r.getMessage() for r in caplog.records if "still queued" in r.getMessage()]
    wait = f"retrying for up to {said}" if said else "no time left to retry them"
    assert closing == (
        f"test broker: closing: 2 events still queued, {wait} (the last attempt failed: "
        "[Errno 111] Connection refused)"
    )


async def test_a_turn_waiting_for_its_events_is_answered_once_the_delivery_closed() -> None:
    """A broker that stopped answering while a turn waits for it to take its events: the
    close gives up on the queue and the turn is answered then. Before, it waited on its own
    bound (2 s) past the close."""

    async def silent(batch: deque[Outgoing]) -> None:
        await asyncio.Event().wait()

    delivery = BackgroundDelivery("test broker", silent)
    item = Outgoing("alice", {"event": "bot", "text": "hi"})
    delivery.enqueue([item])
    turn = asyncio.create_task(delivery.wait_taken(item, timeout=60))
    await asyncio.sleep(0.05)
    await delivery.close(0.05)
    await asyncio.wait_for(turn, 5)


def child_delivery_id(pipe: Connection) -> None:
    pipe.send(Outgoing("alice", {"event": "bot"}).delivery_id)


def test_a_forked_worker_gives_its_events_delivery_ids_of_its_own() -> None:
    """The SQL broker skips a row whose delivery id (`event_key`) it holds already: workers
    forked from one process must not hand out the same ids. Each id is a random half drawn
    once per process, and again in a forked child, and a count."""
    before = Outgoing("alice", {"event": "bot"}).delivery_id
    receiving, sending = multiprocessing.get_context("fork").Pipe(duplex=False)
    child = multiprocessing.get_context("fork").Process(target=child_delivery_id, args=(sending,))
    child.start()
    in_child = receiving.recv()
    child.join(10)
    after = Outgoing("alice", {"event": "bot"}).delivery_id

    assert len({before, in_child, after}) == 3
    assert in_child[:16] != before[:16] == after[:16]  # the child drew its own half
    assert all(len(key) == 32 for key in (before, in_child, after))


async def test_a_queue_of_events_under_1_kib_still_holds_its_whole_bound() -> None:
    """The bound by size leaves small events their number: 100,000 bot messages under 1 KiB
    of JSON are all kept while the broker is away, the next one drops the oldest alone; a
    user message of 1 KiB or more (a long intent ranking) counts 2."""
    delivery = BackgroundDelivery("test broker", refused, retry_delay=30)
    small = [{"event": "bot", "text": f"line {n}", "timestamp": n} for n in range(100_001)]
    try:
        delivery.enqueue(outgoing("alice", small[:-1], None))
        assert (delivery.pending, delivery.dropped) == (100_000, 0)
        delivery.enqueue(outgoing("alice", small[-1:], small[-2]))
        assert (delivery.pending, delivery.dropped) == (100_000, 1)
        user = {"event": "user", "text": "hi", "parse_data": {"ranking": "x" * 1_000}}
        delivery.enqueue(outgoing("alice", [user], small[-1]))
        assert (delivery.pending, delivery.dropped) == (99_999, 3)
    finally:
        await delivery.close(0)
