"""What the RabbitMQ event broker sustains: a burst of turns' events published as fast as the
loop can, until RabbitMQ confirmed them all. Prints events/s, the process's CPU a event, the
most events queued at once, and (`--cprofile`) Python calls a event. `--text-bytes N` makes
each user message's text N bytes of JSON and also prints the process's peak memory and the
largest socket write of messages (`--trace-memory`: the peak of the burst's Python
allocations); `--as-aiormq 7.3.0` publishes as with an aiormq outside
botserver[rabbitmq]'s pins (through aio-pika's public publish). Compare trees with
`PYTHONPATH=<tree> python bench/rabbitmq_publish.py`; a queue and exchange of the run's own
on the local RabbitMQ, deleted after it."""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import pstats
import resource
import time
import tracemalloc
import uuid
from typing import Any

import aio_pika

from server.brokers import amqp_publish
from server.brokers.rabbitmq import RabbitMQEventBroker

AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"


def turn(sender: str, number: int, text_bytes: int = 0) -> list[dict[str, Any]]:
    """A moodbot turn's six events, as the processor publishes them (the user's text of
    `text_bytes` bytes of JSON when given: a \u00e9 takes six)."""
    stamp = time.time()
    text = "é" * (text_bytes // 12) + "x" * (text_bytes // 2) if text_bytes else f"hello {number}"
    said = {"name": "greet", "confidence": 0.97}
    parse = {"intent": said, "entities": [], "intent_ranking": [said], "text": "hello"}
    return [
        {"event": "user", "timestamp": stamp, "text": text, "parse_data": parse,
         "input_channel": "rest", "message_id": uuid.uuid4().hex, "metadata": {}},
        {"event": "user_featurization", "timestamp": stamp, "use_text_for_featurization": False},
        {"event": "action", "timestamp": stamp, "name": "utter_greet", "policy": "RulePolicy",
         "confidence": 1.0, "action_text": None, "hide_rule_turn": False},
        {"event": "bot", "timestamp": stamp, "text": "Hey! How are you?",
         "data": {"elements": None, "quick_replies": None, "buttons": None, "attachment": None,
                  "image": None, "custom": None}, "metadata": {"utter_action": "utter_greet"}},
        {"event": "action", "timestamp": stamp, "name": "action_listen", "policy": "RulePolicy",
         "confidence": 1.0, "action_text": None, "hide_rule_turn": True},
        {"event": "slot", "timestamp": stamp, "name": "turns", "value": number},
    ]  # fmt: skip


def recorded_writes() -> list[int]:
    """The bytes of each write of messages from now on (frames written on aiormq's channel)."""
    sizes: list[int] = []
    write = amqp_publish.publish

    async def recorded(channel: Any, messages: Any) -> Any:
        sizes.append(sum(len(message.frames) for message in messages))
        return await write(channel, messages)

    amqp_publish.publish = recorded  # type: ignore[assignment]
    return sizes


async def burst(
    turns: int,
    conversations: int,
    profile: cProfile.Profile | None,
    text_bytes: int = 0,
    trace_memory: bool = False,
) -> dict[str, Any]:
    name = f"bench_publish_{uuid.uuid4().hex[:8]}"
    broker = RabbitMQEventBroker(
        {"url": AMQP_URL, "queues": [name], "exchange_name": name, "retry_delay_in_seconds": 0.05}
    )
    try:
        await broker.start()
        await broker.publish("warm", turn("warm", 0))
        assert await broker.flush(30)
        most = 0
        began, cpu = time.perf_counter(), time.process_time()
        if profile is not None:
            profile.enable()
        writes = recorded_writes() if text_bytes else []
        if trace_memory:  # the events made included
            tracemalloc.start()
        for number in range(turns):
            await broker.publish(f"c{number % conversations}", turn("c", number, text_bytes))
            most = max(most, broker.pending)
            await asyncio.sleep(0)  # one turn a loop iteration, as the server takes them
        flushed = await broker.flush(600)
        peak = tracemalloc.get_traced_memory()[1] if trace_memory else 0
        tracemalloc.stop()
        if profile is not None:
            profile.disable()
        cpu, wall = time.process_time() - cpu, time.perf_counter() - began
    finally:
        await broker.close()
        connection = await aio_pika.connect(AMQP_URL)
        channel = await connection.channel()
        queue = await channel.declare_queue(name, passive=True)
        received = queue.declaration_result.message_count or 0
        await channel.queue_delete(name)
        await channel.exchange_delete(name)
        await connection.close()
    events = turns * 6
    result = {
        "events": events,
        "delivered": received - 6,  # less the warm-up turn's
        "flushed": flushed,
        "events_per_s": round(events / wall),
        "cpu_ms_per_event": round(cpu * 1000 / events, 4),
        "most_queued": most,
    }
    if text_bytes:
        result["largest_write_bytes"] = max(writes, default=0)
        result["writes"] = len(writes)
        result["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    if trace_memory:
        result["peak_traced_mib"] = round(peak / 2**20, 1)
    if profile is not None:
        result["calls_per_event"] = round(pstats.Stats(profile).total_calls / events, 1)  # type: ignore[attr-defined]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--turns", type=int, default=2000)
    parser.add_argument("--conversations", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--cprofile", action="store_true", help="count Python calls (slower)")
    parser.add_argument("--text-bytes", type=int, default=0, help="each user text's JSON size")
    parser.add_argument(
        "--trace-memory", action="store_true", help="peak of Python's allocations (tracemalloc)"
    )
    parser.add_argument(
        "--as-aiormq", help="the aiormq version the broker is told is installed (e.g. 7.3.0)"
    )
    args = parser.parse_args()
    if args.as_aiormq:  # outside the pins: published through aio-pika's Exchange.publish
        installed = amqp_publish.installed_version
        amqp_publish.installed_version = lambda name: (  # type: ignore[assignment]
            args.as_aiormq if name == "aiormq" else installed(name)
        )
    for _ in range(args.repeat):
        profile = cProfile.Profile() if args.cprofile else None
        print(
            json.dumps(
                asyncio.run(
                    burst(
                        args.turns, args.conversations, profile, args.text_bytes, args.trace_memory
                    )
                )
            )
        )


if __name__ == "__main__":
    main()
