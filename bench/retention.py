"""Many conversations: start-up, one conversation's load, keys() and `prune` on a store of
N conversations, with the latency of turns running on another conversation during prune.

The store is filled directly (SQL rows or Redis lists, as the store writes them), half of
the conversations 200 days old and half fresh; then a fresh process opens the store (its
migrations run), loads one conversation, lists the keys and prunes what is older than 90
days while a task runs a turn (load + append) every 10 ms on a conversation of its own.

    python bench/retention.py --store sqlite|postgresql|mysql|redis [--conversations 100000]
        [--redis-locks]

With --redis-locks the turns hold their conversation's Redis lock, as a server's do, and the
prune's endpoints.yml names that lock store (the prune then takes each batch's locks).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from server.trackers.factory import create_lock_store, create_tracker_store  # noqa: E402
from server.trackers.sql_store import _rows  # noqa: E402

DAY = 86400.0
NAME = "bs_scale_retention"


def conversation(age_days: float) -> list[dict[str, Any]]:
    at = time.time() - age_days * DAY
    user = {
        "event": "user",
        "timestamp": at,
        "text": "hello there",
        "parse_data": {
            "intent": {"name": "greet", "confidence": 0.97},
            "entities": [],
            "text": "hello there",
        },
        "input_channel": "rest",
    }
    return [
        {"event": "action", "timestamp": at, "name": "action_session_start"},
        {"event": "session_started", "timestamp": at},
        {"event": "action", "timestamp": at, "name": "action_listen"},
        user,
        {"event": "action", "timestamp": at, "name": "utter_greet"},
        {"event": "bot", "timestamp": at, "text": "Hey! How are you?"},
        {"event": "action", "timestamp": at, "name": "action_listen"},
    ]


def config(store: str, path: str) -> dict[str, Any]:
    if store == "sqlite":
        return {"type": "sql", "dialect": "sqlite", "db": path}
    if store == "postgresql":
        return {"type": "sql", "dialect": "postgresql", "url": "127.0.0.1", "db": NAME,
                "username": "postgres", "login_db": "test"}  # fmt: skip
    if store == "mysql":
        return {"type": "sql", "dialect": "mysql", "url": "127.0.0.1", "db": NAME,
                "username": "root", "password": ""}  # fmt: skip
    return {"type": "redis", "url": "127.0.0.1", "key_prefix": NAME}


async def fill(store: str, cfg: dict[str, Any], count: int) -> None:
    tracker_store = create_tracker_store(cfg)
    await tracker_store.append("warmup", conversation(0))  # creates the table
    await tracker_store.delete("warmup")
    await tracker_store.close()
    batch: list[tuple[Any, ...]] = []
    pipes: list[Any] = []
    redis = None
    if store == "redis":
        from redis.asyncio import Redis

        redis = Redis()
    for n in range(count):
        sender = f"user-{n}"
        events = conversation(200 if n % 2 else 0)
        if redis is not None:
            pipe = redis.pipeline(transaction=False)
            pipe.rpush(f"{NAME}:tracker:{sender}", *[json.dumps(e) for e in events])
            pipe.set(f"{NAME}:tracker_session:{sender}", 0)
            pipes.append(pipe)
            if len(pipes) >= 200:
                for p in pipes:
                    await p.execute()
                pipes = []
            continue
        batch.extend(_rows(sender, events))
        if len(batch) >= 20000 or n == count - 1:
            await insert_rows(store, cfg, batch)
            batch = []
    if redis is not None:
        for p in pipes:
            await p.execute()
        await redis.aclose()


async def insert_rows(store: str, cfg: dict[str, Any], rows: list[tuple[Any, ...]]) -> None:
    columns = "(sender_id, type_name, timestamp, intent_name, action_name, data)"
    if store == "sqlite":
        import sqlite3

        with sqlite3.connect(cfg["db"]) as conn:
            conn.executemany(f"INSERT INTO events {columns} VALUES (?,?,?,?,?,?)", rows)
    elif store == "postgresql":
        import asyncpg

        conn = await asyncpg.connect(host="127.0.0.1", user="postgres", database=NAME)
        await conn.copy_records_to_table(
            "events", records=rows, columns=[c.strip() for c in columns[1:-1].split(",")]
        )
        await conn.close()
    else:
        import aiomysql

        conn = await aiomysql.connect(host="127.0.0.1", user="root", password="", db=NAME)
        async with conn.cursor() as cursor:
            await cursor.executemany(
                f"INSERT INTO events {columns} VALUES (%s,%s,%s,%s,%s,%s)", rows
            )
        await conn.commit()
        conn.close()


LOCKS = {"type": "redis", "url": "127.0.0.1", "port": 6379, "key_prefix": f"{NAME}_locks"}


async def measure(cfg: dict[str, Any], locks_cfg: dict[str, Any] | None = None) -> dict[str, Any]:
    result: dict[str, Any] = {}
    locks = create_lock_store(locks_cfg)
    started = time.perf_counter()
    store = create_tracker_store(cfg)
    await store.ping()
    await store.load("user-1")  # runs the migrations on a SQL store
    result["open_and_first_load_s"] = round(time.perf_counter() - started, 3)
    started = time.perf_counter()
    await store.load("user-77")
    result["load_one_s"] = round(time.perf_counter() - started, 4)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    keys = await store.keys()
    result["keys"] = len(keys)
    result["keys_s"] = round(time.perf_counter() - started, 3)
    del keys
    latencies: list[float] = []
    done = asyncio.Event()

    async def turns() -> None:
        n = 0
        while not done.is_set():
            began = time.perf_counter()
            async with locks.lock("bench-live"):
                await store.load("bench-live")
                await store.append("bench-live", conversation(0)[2:4])
            latencies.append(time.perf_counter() - began)
            n += 1
            await asyncio.sleep(0.01)

    task = asyncio.create_task(turns())
    # `botserver prune` in its own process, as a user runs it (cron) beside the server.
    with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as endpoints:
        endpoints_cfg = {"tracker_store": cfg}
        if locks_cfg:
            endpoints_cfg["lock_store"] = locks_cfg
        json.dump(endpoints_cfg, endpoints)  # JSON is YAML
    started = time.perf_counter()
    prune = await asyncio.create_subprocess_exec(
        sys.executable, str(ROOT / "cli.py"), "prune", "--older-than-days", "90",
        "--endpoints", endpoints.name, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, _ = await prune.communicate()
    result["prune_s"] = round(time.perf_counter() - started, 2)
    result["prune_output"] = out.decode().strip()
    result["prune_maxrss_mb"] = round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)
    os.unlink(endpoints.name)
    done.set()
    await task
    latencies.sort()
    result["turns_during_prune"] = len(latencies)
    result["turn_p50_ms"] = round(latencies[len(latencies) // 2] * 1000, 1)
    result["turn_max_ms"] = round(latencies[-1] * 1000, 1)
    result["maxrss_mb_before_keys"] = round(rss / 1024)
    result["maxrss_mb_end"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    await store.delete("bench-live")
    await store.close()
    await locks.close()
    return result


async def drop(store: str, recreate: bool = False) -> None:
    if store == "postgresql":
        import asyncpg

        conn = await asyncpg.connect(host="127.0.0.1", user="postgres", database="test")
        await conn.execute(f"DROP DATABASE IF EXISTS {NAME} WITH (FORCE)")
        await conn.close()
    elif store == "mysql":
        import aiomysql

        conn = await aiomysql.connect(host="127.0.0.1", user="root", password="")
        async with conn.cursor() as cursor:
            await cursor.execute(f"DROP DATABASE IF EXISTS {NAME}")
            if recreate:
                await cursor.execute(f"CREATE DATABASE {NAME}")
        conn.close()
    elif store == "redis":
        from redis.asyncio import Redis

        redis = Redis()
        async for key in redis.scan_iter(match=f"{NAME}:*", count=1000):
            await redis.delete(key)
        await redis.aclose()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--store", default="sqlite")
    parser.add_argument("--conversations", type=int, default=100_000)
    parser.add_argument("--redis-locks", action="store_true")
    parser.add_argument("--measure-only", help=argparse.SUPPRESS)
    args = parser.parse_args()
    locks_cfg = LOCKS if args.redis_locks else None
    if args.measure_only:
        print(json.dumps(asyncio.run(measure(json.loads(args.measure_only), locks_cfg))))
        return
    with tempfile.TemporaryDirectory(prefix="bs-scale-") as tmp:
        cfg = config(args.store, os.path.join(tmp, "retention.db"))
        asyncio.run(drop(args.store, recreate=True))
        started = time.perf_counter()
        asyncio.run(fill(args.store, cfg, args.conversations))
        print(f"filled {args.conversations} in {time.perf_counter() - started:.1f} s")
        # A fresh process, so its memory is the serving process's, not the filler's.
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--measure-only",
                json.dumps(cfg),
                *(["--redis-locks"] if args.redis_locks else []),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        print(out.stdout, out.stderr[-3000:])
        asyncio.run(drop(args.store))


if __name__ == "__main__":
    main()
