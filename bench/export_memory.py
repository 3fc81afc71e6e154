"""Peak memory (tracemalloc) of `botserver export` over a SQLite store of long conversations:
one batch (100 conversations) of them, the broker keeping nothing. Runs against whichever tree
PYTHONPATH names, so that two trees compare in one run:

    for tree in /tmp/base /work/wt-x; do PYTHONPATH=$tree python bench/export_memory.py; done
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import tracemalloc
from pathlib import Path
from typing import Any

import server
from server.brokers import export
from server.trackers.factory import create_tracker_store


class _Discarding:
    """A broker that takes every message and keeps none."""

    count = 0

    async def deliver(self, items: Any) -> None:
        self.count += len(items)
        items.clear()


def _user(number: int, text: str) -> dict[str, Any]:
    intent = {"name": "greet", "confidence": 0.9}
    return {
        "event": "user",
        "timestamp": 1e9 + number,
        "text": text,
        "parse_data": {"intent": intent, "entities": [], "text": text},
    }


async def main(conversations: int, events: int, text_bytes: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        config = {"type": "sql", "dialect": "sqlite", "db": str(Path(folder) / "t.db")}
        store = create_tracker_store(config)
        text = "x" * text_bytes
        for c in range(conversations):
            await store.append(f"c{c:03}", [_user(i, text) for i in range(events)])
        await store.close()
        stored = conversations * events * len(json.dumps(_user(0, text)))
        store = create_tracker_store(config, create_missing=False)
        broker = _Discarding()
        tracemalloc.start()
        try:
            published = await export.export_events(broker, store)  # type: ignore[arg-type]
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
            await store.close()
    print(
        f"{Path(server.__file__).parent.parent}: {published} events, stored JSON "
        f"{stored / 1e6:.1f} MB, peak {peak / 1e6:.1f} MB"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--conversations", type=int, default=100)
    parser.add_argument("--events", type=int, default=20)
    parser.add_argument("--text-bytes", type=int, default=40_000)
    args = parser.parse_args()
    asyncio.run(main(args.conversations, args.events, args.text_bytes))
