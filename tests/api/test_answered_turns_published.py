"""With `wait_for_delivery: true`, a turn answered while RabbitMQ is connected has its events
in the queue already (RabbitMQ confirmed them): a process killed right after the answer loses
none of them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import aio_pika

from tests.brokers.test_rabbitmq_broker import AMQP_URL


async def queued(queue: str) -> int:
    """How many messages the queue holds, as RabbitMQ counts them."""
    connection = await aio_pika.connect(AMQP_URL)
    try:
        channel = await connection.channel()
        declared = await channel.declare_queue(queue, passive=True)
        count = declared.declaration_result.message_count
        assert count is not None
        return count
    finally:
        await connection.close()


async def test_each_answered_turn_has_its_events_in_the_queue_when_it_is_answered(
    rabbitmq: dict[str, Any], make_client: Callable[..., Any]
) -> None:
    """Without the setting, the answer comes first and the events go out after it, from
    memory: at the moment of the answer the queue held none of the turn's events."""
    client = await make_client(
        endpoints={
            "tracker_store": {"type": "in_memory"},
            "event_broker": {**rabbitmq, "wait_for_delivery": True},
        }
    )
    for text in ["hello", "I am sad", "yes", "goodbye"]:
        said = {"sender": "ana", "message": text}
        answered = await client.post("/webhooks/rest/webhook", json=said)
        assert answered.status_code == 200 and answered.json()

        in_queue = await queued(rabbitmq["queues"][0])

        tracker = await client.get("/conversations/ana/tracker?include_events=ALL")
        assert in_queue == len(tracker.json()["events"]), text
