"""What the event broker's /metrics figures cost: process CPU time to queue and deliver
100,000 events through the file broker (batches of 10, 50 conversations; the best of 5), and
CPU time of a /metrics render and of a `--workers` snapshot with and without the broker's
figures, with the code on PYTHONPATH (run once with the base's, once with the head's).

    PYTHONPATH=<checkout> python bench/broker_figures.py
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time

from server.api.metrics import ServerMetrics
from server.brokers.file import FileEventBroker

EVENTS = 100_000


async def deliver(directory: str) -> float:
    broker = FileEventBroker({"path": os.path.join(directory, "events.log")})
    events = [{"event": "bot", "timestamp": float(i), "text": str(i)} for i in range(EVENTS)]
    started = time.process_time()
    for i in range(0, EVENTS, 10):
        await broker.publish(f"c{i % 50}", events[i : i + 10])
    assert await broker.flush(60)
    spent = time.process_time() - started
    await broker.close()
    os.remove(os.path.join(directory, "events.log"))
    return spent


def per_call(call: object, times: int = 2000) -> float:
    started = time.process_time()
    for _ in range(times):
        call()  # type: ignore[operator]
    return (time.process_time() - started) / times * 1e6


def main() -> None:
    with tempfile.TemporaryDirectory() as directory:
        best = min(asyncio.run(deliver(directory)) for _ in range(5))
        print(f"deliver {EVENTS:,} events: {best:.3f} s CPU (best of 5)")
        metrics = ServerMetrics()
        render = min(per_call(metrics.render) for _ in range(3))
        snapshot = min(per_call(metrics.snapshot) for _ in range(3))
        print(f"without the broker: render {render:.0f} us, snapshot {snapshot:.1f} us")
        if hasattr(metrics, "watch_broker"):
            broker = FileEventBroker({"path": os.path.join(directory, "e.log")})
            metrics.watch_broker(broker)
            render = min(per_call(metrics.render) for _ in range(3))
            snapshot = min(per_call(metrics.snapshot) for _ in range(3))
            print(f"with the broker: render {render:.0f} us, snapshot {snapshot:.1f} us")


if __name__ == "__main__":
    main()
