"""Memory and turns of long conversations that outgrow the hot-session cache, in process.

Sixteen conversations talk at once through the REST channel (ASGI, no sockets) on the
default SQLite store; none ever ends its session, so once their events pass `cache_events`
the caches evict conversations that come back a few turns later, are read and folded again,
and let go of again. Every `--every` seconds: RSS, turns so far, the process's CPU seconds,
hot trackers folded from the store, and the sessions waiting for the freeing thread.

    python bench/eviction_churn.py [--model model.tar.gz] [--cache-events 10000]
        [--rounds 40] [--every 2]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from server.api.server import ServerOptions, build_app  # noqa: E402
from server.trackers import freeing  # noqa: E402
from server.trackers.tracker import Tracker  # noqa: E402

CONVERSATIONS = 16
MESSAGES = ("bye", "are you a bot?")


async def talk(
    client: httpx.AsyncClient,
    sender: str,
    stop: asyncio.Event,
    turned: Callable[[], None],
    pause: float = 0.0,
) -> None:
    """`sender` says MESSAGES in turn through the REST channel until `stop`, calling
    `turned` after each answer, then waiting `pause` seconds."""
    index = 0
    while not stop.is_set():
        body = {"sender": sender, "message": MESSAGES[index % 2]}
        response = await client.post("/webhooks/rest/webhook", json=body)
        assert response.status_code == 200, response.text
        index += 1
        turned()
        if pause:
            await asyncio.sleep(pause)


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def run(model: Path, cache_events: int, rounds: int, every: float) -> None:
    folder = Path(tempfile.mkdtemp(prefix="eviction-churn-"))
    store = {"type": "sql", "dialect": "sqlite", "db": str(folder / "t.db")}
    store["cache_events"] = cache_events  # type: ignore[assignment]
    options = ServerOptions(
        model_path=model,
        enable_api=True,
        endpoints={"tracker_store": store},
        models_dir=folder / "models",
    )
    app = build_app(options)
    folds = [0]
    fold = Tracker.from_dicts.__func__  # type: ignore[attr-defined]

    def counted(cls: type[Tracker], *args: Any, **kwargs: Any) -> Tracker:
        folds[0] += 1
        tracker: Tracker = fold(cls, *args, **kwargs)
        return tracker

    Tracker.from_dicts = classmethod(counted)  # type: ignore[assignment, method-assign]
    stop = asyncio.Event()
    turns = [0]
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://b", timeout=60) as c:

            def turned() -> None:
                turns[0] += 1

            tasks = [
                asyncio.create_task(talk(c, f"long-{i}", stop, turned))
                for i in range(CONVERSATIONS)
            ]
            print("round rss_kib turns cpu_s folds waiting_releases", flush=True)
            for round_ in range(rounds):
                await asyncio.sleep(every)
                gc.collect()
                waiting = freeing._RELEASER._work_queue.qsize()
                cpu = round(time.process_time(), 1)
                print(round_, rss_kib(), turns[0], cpu, folds[0], waiting, flush=True)
            stop.set()
            await asyncio.gather(*tasks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path)
    parser.add_argument("--cache-events", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--every", type=float, default=2.0)
    args = parser.parse_args()
    model = args.model
    if model is None:
        from bench.concurrency import train_moodbot

        model = train_moodbot(Path(tempfile.mkdtemp(prefix="eviction-churn-model-")))
    asyncio.run(run(model, args.cache_events, args.rounds, args.every))


if __name__ == "__main__":
    main()
