"""The SQL event broker on a SQLite file with `wait_for_delivery: true`, each publish a
transaction of its own (a turn's four events): per transaction, the hops to a thread and back
(results a thread hands to the event loop, `call_soon_threadsafe`: `run_in_executor`'s and
aiosqlite's alike), the context switches of all the process's threads, and the process's CPU.
`PYTHONPATH=<tree> python bench/sql_broker_transactions.py [TRANSACTIONS]` for each tree."""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from server.brokers.factory import create_event_broker


def context_switches() -> int:
    """Voluntary and involuntary, summed over the process's threads."""
    total = 0
    for status in Path("/proc/self/task").glob("*/status"):
        try:
            lines = status.read_text().splitlines()
        except FileNotFoundError:  # a thread that ended meanwhile
            continue
        total += sum(int(line.split()[1]) for line in lines if "ctxt_switches" in line)
    return total


def turn(number: int) -> list[dict[str, Any]]:
    stamp = float(number)
    return [
        {"event": "user", "timestamp": stamp, "text": f"hi {number}"},
        {"event": "action", "timestamp": stamp, "name": "utter_greet"},
        {"event": "bot", "timestamp": stamp, "text": f"hello {number}"},
        {"event": "action", "timestamp": stamp, "name": "action_listen"},
    ]


async def measure(transactions: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="sql-broker-") as folder:
        broker = create_event_broker(
            {"type": "sql", "dialect": "sqlite", "db": f"{folder}/events.db"}
            | {"wait_for_delivery": True}
        )
        assert broker is not None
        for number in range(50):  # the table made, the connections opened
            await broker.publish("warm-up", turn(number))
        loop = asyncio.get_running_loop()
        hops = 0
        hand_back = loop.call_soon_threadsafe

        def counted(*args: Any, **kwargs: Any) -> Any:
            nonlocal hops
            hops += 1
            return hand_back(*args, **kwargs)

        loop.call_soon_threadsafe = counted  # type: ignore[method-assign,assignment]
        cpu, switches, wall = time.process_time(), context_switches(), time.perf_counter()
        for number in range(transactions):
            await broker.publish("alice", turn(number))
        wall = time.perf_counter() - wall
        cpu, switches = time.process_time() - cpu, context_switches() - switches
        del loop.call_soon_threadsafe
        await broker.close()
    return {
        "transactions": transactions,
        "hops_per_transaction": round(hops / transactions, 3),
        "context_switches_per_transaction": round(switches / transactions, 2),
        "cpu_ms_per_transaction": round(cpu * 1000 / transactions, 3),
        "wall_ms_per_transaction": round(wall * 1000 / transactions, 3),
    }


if __name__ == "__main__":
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    print(json.dumps(asyncio.run(measure(count))))
