"""The SQL event broker's first and second publish on a new PostgreSQL database: the Python
calls made on the event loop's thread (a profile hook: counted, not timed) and the modules
imported there. `PYTHONPATH=<tree> python bench/first_publish_calls.py` for each tree."""

from __future__ import annotations

import asyncio
import json
import sys
import threading

from server.brokers.sql import SqlEventBroker
from tests.api.cold_start_probe import _Calls, _LoopImports
from tests.trackers.persistence_fixtures import postgres_database


async def publishes() -> list[dict[str, int]]:
    async with postgres_database() as config:
        broker = SqlEventBroker(config)
        counted = []
        try:
            for n in range(2):
                watch = _LoopImports(threading.get_ident())
                sys.meta_path.insert(0, watch)
                try:
                    with _Calls() as calls:
                        event = {"event": "bot", "timestamp": 1.0, "text": "hi"}
                        await broker.publish(f"sender{n}", [event])
                        assert await broker.flush(10)
                finally:
                    sys.meta_path.remove(watch)
                counted.append({"calls": calls.count, "imports": len(watch.names)})
        finally:
            await broker.close()
        return counted


if __name__ == "__main__":
    print(json.dumps(asyncio.run(publishes())))
