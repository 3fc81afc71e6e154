"""Redis's own time per tracker-store append (`INFO commandstats`, `cmdstat_evalsha`).

Appends through `RedisTrackerStore.append` to a Redis of one's own (never a shared one: the
stats are reset), 10,000 appends of 8 events over 50 conversations after 200 warm-up ones:

    redis-server --port PORT --save '' --appendonly no --daemonize yes
    python bench/redis_append_cost.py PORT
"""

from __future__ import annotations

import asyncio
import sys
import uuid

from redis.asyncio import Redis

from server.trackers.redis_store import RedisTrackerStore


async def main(port: int, appends: int = 10_000) -> None:
    redis = Redis(port=port, decode_responses=True)
    prefix = "bench" + uuid.uuid4().hex[:6]
    store = RedisTrackerStore({"url": "127.0.0.1", "port": port, "key_prefix": prefix})
    events = [{"event": "bot", "timestamp": 1.0, "text": "hi", "data": {}, "metadata": {}}] * 8
    try:
        for n in range(200):
            await store.append(f"c{n % 50}", events)
        await redis.config_resetstat()
        for n in range(appends):
            await store.append(f"c{n % 50}", events)
        stats = (await redis.info("commandstats"))["cmdstat_evalsha"]
        print(f"{stats['calls']} appends, {stats['usec_per_call']} us of Redis time each")
    finally:
        async for key in redis.scan_iter(match=prefix + ":*"):
            await redis.delete(key)
        await store.close()
        await redis.aclose()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
