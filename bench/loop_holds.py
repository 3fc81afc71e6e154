"""How long the event loop is held while the API serves a conversation of 100,000 events.

A task sleeps 5 ms at a time and records the longest gap between its wake-ups while each
request runs (the garbage collector is off meanwhile, as in the tests), the process's CPU
in it and the loop thread's own CPU (`loop_busiest`: work done on the loop itself).
Moodbot is trained, served in-process (no network) on the chosen store; round 2 is a new
app on the same store, as after a restart of the process, and ends with a POST of as many
events again and a turn of another conversation (which evicts the long one from the
caches); before those, a rewind, the turn after it, the default fallback and a new session
of the long conversation.

    python bench/loop_holds.py [--store memory|sqlite|redis] [--events 100000]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from server.api.server import ServerOptions, build_app  # noqa: E402
from server.training.train import train  # noqa: E402
from tests.api.test_long_conversations import greetings  # noqa: E402
from tests.loop_lag import loop_hold  # noqa: E402
from tests.shared_data import MOODBOT  # noqa: E402


def store_config(kind: str, folder: Path) -> dict[str, Any]:
    if kind == "sqlite":
        return {"type": "sql", "dialect": "sqlite", "db": str(folder / "trackers.db")}
    if kind == "redis":
        prefix = f"loopholds{uuid.uuid4().hex[:8]}"
        return {"type": "redis", "url": "127.0.0.1", "port": 6379, "key_prefix": prefix}
    return {"type": "in_memory"}


def requests(first_round: bool, body: bytes) -> list[tuple[str, str, str, dict[str, Any]]]:
    json_body: dict[str, Any] = {"content": body, "headers": {"content-type": "application/json"}}
    put = ("PUT tracker/events", "PUT", "tracker/events?include_events=NONE", json_body)
    other_turn = {"json": {"message": "hi", "sender": "other"}}
    rewind: dict[str, Any] = {"json": {"event": "rewind"}}
    fallback: dict[str, Any] = {"json": {"name": "action_default_fallback"}}
    session: dict[str, Any] = {"json": {"name": "action_session_start"}}
    last = [
        (
            "POST tracker/events (as many more)",
            "POST",
            "tracker/events?include_events=NONE",
            json_body,
        ),
        ("POST webhook, another conversation", "POST", "/webhooks/rest/webhook", other_turn),
    ]
    # On the hot conversation with its policies' state cache (round 2, before `last`): a
    # rewind takes back its last turn, the next turn predicts after it, the default fallback
    # rewinds within a turn, then a new session carries the slots over.
    webhook = {"json": {"message": "hi"}}
    rewinds = [
        ("POST tracker/events (a rewind)", "POST", "tracker/events?include_events=NONE", rewind),
        ("POST webhook (the turn after it)", "POST", "/webhooks/rest/webhook", webhook),
        ("POST execute (default fallback)", "POST", "execute?include_events=NONE", fallback),
        ("POST execute (session start)", "POST", "execute?include_events=NONE", session),
    ]
    return [
        *([put] if first_round else []),
        ("GET tracker (first load)", "GET", "tracker", {}),
        ("GET tracker?include_events=ALL", "GET", "tracker?include_events=ALL", {}),
        ("GET tracker?include_events=APPLIED", "GET", "tracker?include_events=APPLIED", {}),
        ("GET tracker?until=now", "GET", f"tracker?include_events=NONE&until={time.time()}", {}),
        ("GET story", "GET", "story", {}),
        ("POST messages", "POST", "messages", {"json": {"text": "hi", "sender": "user"}}),
        ("POST predict", "POST", "predict", {}),
        ("POST webhook (a turn)", "POST", "/webhooks/rest/webhook", {"json": {"message": "hi"}}),
        ("POST /model/predict (the events)", "POST", "/model/predict", json_body),
        *([] if first_round else [*rewinds, *last]),
    ]


async def main(store: str, events: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder)
        model = train(MOODBOT / "config.yml", MOODBOT / "domain.yml", [MOODBOT / "data"], out)
        config = store_config(store, out)
        body = greetings(events // 4)
        for round_ in (1, 2):
            options = ServerOptions(
                model_path=model.path,
                enable_api=True,
                endpoints={"tracker_store": config},
                models_dir=out / "models",
            )
            app = build_app(options)
            async with (
                app.router.lifespan_context(app),
                httpx.AsyncClient(
                    transport=httpx.ASGITransport(app=app), base_url="http://bench", timeout=120
                ) as client,
            ):
                for name, method, path, extra in requests(round_ == 1, body):
                    if path.startswith("/webhooks"):
                        url, extra = path, {"json": {"sender": "long", **extra["json"]}}
                    elif path.startswith("/model"):
                        url = path
                    else:
                        url = f"/conversations/long/{path}"
                    async with loop_hold() as hold:
                        started = time.perf_counter()
                        response = await client.request(method, url, **extra)
                    took = time.perf_counter() - started
                    print(
                        f"round {round_}  {name:36s} {response.status_code}  "
                        f"took {took:6.3f} s  loop held {hold.longest * 1000:6.0f} ms"
                        f" (CPU {hold.busiest * 1000:4.0f} ms,"
                        f" loop thread {hold.loop_busiest * 1000:4.1f} ms)",
                        flush=True,
                    )
        if store == "redis":
            from redis.asyncio import Redis

            redis = Redis(host="127.0.0.1", port=6379)
            keys = [k async for k in redis.scan_iter(match=f"{config['key_prefix']}:*")]
            if keys:
                await redis.delete(*keys)
            await redis.aclose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--store", choices=["memory", "sqlite", "redis"], default="memory")
    parser.add_argument("--events", type=int, default=100_000)
    args = parser.parse_args()
    asyncio.run(main(args.store, args.events))
