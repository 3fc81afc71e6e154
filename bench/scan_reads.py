"""Conversations in use while a reader fetches many old trackers through the HTTP API.

Old conversations are written first (`POST /conversations/<id>/tracker/events`), then the
conversations in use talk through the REST channel, each pausing `--pause` seconds between
its turns (a user reading the answer), on the default SQLite store; meanwhile a reader GETs
`/conversations/<old>/tracker?include_events=<include>` for every old conversation, twice
over, one after another. Prints the in-use conversations' folds from the store per turn
(each a session read and folded again because the reader pushed it out of the caches).

    python bench/scan_reads.py --model model.tar.gz [--in-use 10] [--in-use-events 500]
        [--old 60] [--old-events 800] [--pause 2] [--include APPLIED] [--cache-events 10000]
        [--warm-turns 3]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from bench.eviction_churn import talk  # noqa: E402
from server.api.server import ServerOptions, build_app  # noqa: E402
from server.trackers.tracker import Tracker  # noqa: E402


def events(count: int, name: str) -> list[dict[str, Any]]:
    """`count` events of a past conversation: user messages and action_listen, in turn."""
    out: list[dict[str, Any]] = []
    start = 1_700_000_000.0
    for n in range(count // 2):
        parse_data = {"intent": {"name": "greet", "confidence": 0.9}, "entities": []}
        out.append(
            {
                "event": "user",
                "text": f"{name} {n}",
                "timestamp": start + n,
                "parse_data": parse_data,
            }
        )
        out.append({"event": "action", "name": "action_listen", "timestamp": start + n + 0.5})
    return out


async def run(args: argparse.Namespace) -> None:
    folder = Path(tempfile.mkdtemp(prefix="scan-reads-"))
    store = {"type": "sql", "dialect": "sqlite", "db": str(folder / "t.db")}
    store["cache_events"] = args.cache_events
    options = ServerOptions(
        model_path=args.model,
        enable_api=True,
        endpoints={"tracker_store": store},
        models_dir=folder / "models",
    )
    app = build_app(options)
    folds = {"in use": 0, "old": 0}
    fold = Tracker.from_dicts.__func__  # type: ignore[attr-defined]

    def counted(cls: type[Tracker], sender_id: str, *rest: Any, **kwargs: Any) -> Tracker:
        folds["in use" if sender_id.startswith("use") else "old"] += 1
        tracker: Tracker = fold(cls, sender_id, *rest, **kwargs)
        return tracker

    Tracker.from_dicts = classmethod(counted)  # type: ignore[assignment, method-assign]
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://b", timeout=120) as c:
            written = [(f"old{n}", args.old_events) for n in range(args.old)]
            written += [(f"use{n}", args.in_use_events) for n in range(args.in_use)]
            for name, count in written:
                url = f"/conversations/{name}/tracker/events?include_events=NONE"
                response = await c.post(url, json=events(count, name))
                assert response.status_code == 200, response.text
            turns = [0]
            taken = dict.fromkeys(range(args.in_use), 0)
            stop, warm = asyncio.Event(), asyncio.Event()

            def turned(number: int) -> None:
                turns[0] += 1
                taken[number] += 1
                if min(taken.values()) >= args.warm_turns:
                    warm.set()

            tasks = [
                asyncio.create_task(talk(c, f"use{n}", stop, partial(turned, n), args.pause))
                for n in range(args.in_use)
            ]
            await warm.wait()
            folds.update({"in use": 0, "old": 0})
            turns[0] = 0
            cpu = time.process_time()
            for _ in range(2):
                for n in range(args.old):
                    url = f"/conversations/old{n}/tracker?include_events={args.include}"
                    response = await c.get(url)
                    assert response.status_code == 200, response.text
            stop.set()
            await asyncio.gather(*tasks)
            cpu = time.process_time() - cpu
    print(
        f"include_events={args.include} turns={turns[0]} in-use folds={folds['in use']} "
        f"per turn={folds['in use'] / max(turns[0], 1):.3f} old folds={folds['old']} "
        f"cpu_s={cpu:.1f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--in-use", type=int, default=10)
    parser.add_argument("--in-use-events", type=int, default=500)
    parser.add_argument("--old", type=int, default=60)
    parser.add_argument("--old-events", type=int, default=800)
    parser.add_argument("--pause", type=float, default=2.0)
    parser.add_argument("--include", default="APPLIED")
    # Turns each conversation in use takes before the reader starts: from the second, each
    # load finds it cached.
    parser.add_argument("--warm-turns", type=int, default=3)
    parser.add_argument("--cache-events", type=int, default=10_000)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
