"""Per-turn latency of a growing conversation, at the tracker-store level or (`--http`)
through a real `botserver run` serving moodbot.

One conversation, one session that never ends (the worst case). At the store level each turn
loads the current session and appends the events of a user message and a bot reply; with
`--http` each turn is a POST /webhooks/rest/webhook, and around each checkpoint every turn
is paired with one of a short conversation (message 1-10) sent right after it, so the two
are compared under the same machine load (rows `wall/sh` and `cpu/sh`: long / short). The
latency at message 10, 100, 1,000 and 5,000 should stay flat.

    python bench/long_conversation.py [--stores sqlite,postgres,memory] [--messages 5000]
        [--http [--cache-events N]] [--out bench/results/long_conversation.json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from server.trackers.factory import create_tracker_store  # noqa: E402
from server.trackers.store import TrackerStore  # noqa: E402

CHECKPOINTS = [10, 100, 1000, 5000]
WINDOW = 21  # median over the turns around each checkpoint (the machine is shared)
POSTGRES_ADMIN: dict[str, Any] = {
    "host": "127.0.0.1",
    "port": 5432,
    "user": "postgres",
    "database": "test",
}


def turn_events(n: int) -> list[dict[str, Any]]:
    now = time.time()
    return [
        {
            "event": "user",
            "timestamp": now,
            "text": f"message number {n}",
            "parse_data": {
                "intent": {"name": "inform", "confidence": 0.93},
                "entities": [],
                "intent_ranking": [{"name": "inform", "confidence": 0.93}],
                "text": f"message number {n}",
            },
            "input_channel": "rest",
            "message_id": uuid.uuid4().hex,
            "metadata": {},
        },
        {"event": "user_featurization", "timestamp": now, "use_text_for_featurization": False},
        {
            "event": "action",
            "timestamp": now,
            "name": "utter_ack",
            "policy": "MemoizationPolicy",
            "confidence": 1.0,
            "action_text": None,
            "hide_rule_turn": False,
        },
        {"event": "bot", "timestamp": now, "text": "Got it.", "data": {}, "metadata": {}},
        {
            "event": "action",
            "timestamp": now,
            "name": "action_listen",
            "policy": "MemoizationPolicy",
            "confidence": 1.0,
            "action_text": None,
            "hide_rule_turn": False,
        },
    ]


async def run_store(
    store: TrackerStore, messages: int, config: dict[str, Any] | None
) -> dict[str, Any]:
    """Run the conversation; with a `config`, also time a cold load from a fresh store."""
    # Warm up connections and statement caches on another conversation first.
    for n in range(20):
        await store.load("warm-up")
        await store.append("warm-up", turn_events(n))
    sender = "long-" + uuid.uuid4().hex[:8]
    await store.append(
        sender,
        [
            {"event": "action", "timestamp": time.time(), "name": "action_session_start"},
            {"event": "session_started", "timestamp": time.time()},
            {"event": "action", "timestamp": time.time(), "name": "action_listen"},
        ],
    )
    latencies: list[float] = []
    cpu: list[float] = []
    for n in range(1, messages + 1):
        started, cpu_started = time.perf_counter(), time.process_time()
        events = await store.load(sender)
        await store.append(sender, turn_events(n))
        latencies.append(time.perf_counter() - started)
        cpu.append(time.process_time() - cpu_started)
    assert events is not None and len(events) == 3 + 5 * (messages - 1)
    median_curve, best_curve, cpu_curve = {}, {}, {}
    for point in (p for p in CHECKPOINTS if p <= messages):
        span = slice(max(0, point - 1 - WINDOW // 2), min(messages, point + WINDOW // 2))
        median_curve[point] = statistics.median(latencies[span]) * 1000
        # On a busy, shared machine the fastest turn and the CPU time (this process, all
        # threads) show the store's own cost better than wall time.
        best_curve[point] = min(latencies[span]) * 1000
        cpu_curve[point] = statistics.mean(cpu[span]) * 1000
    cold_ms = None
    if config is not None:
        started = time.perf_counter()
        cold = create_tracker_store(config)
        try:
            loaded = await cold.load(sender)
        finally:
            await cold.close()
        cold_ms = (time.perf_counter() - started) * 1000
        assert loaded is not None and len(loaded) == 3 + 5 * messages
    last, first = max(median_curve), min(median_curve)
    return {
        "ms_per_turn": median_curve,
        "fastest_ms_per_turn": best_curve,
        "ratio_last_to_first": median_curve[last] / median_curve[first],
        "fastest_ratio_last_to_first": best_curve[last] / best_curve[first],
        "cpu_ms_per_turn": cpu_curve,
        "cpu_ratio_last_to_first": cpu_curve[last] / cpu_curve[first],
        "cold_load_ms": cold_ms,
    }


async def bench(kind: str, messages: int, workdir: Path) -> dict[str, Any]:
    if kind == "memory":
        return await run_store(create_tracker_store({"type": "in_memory"}), messages, None)
    if kind == "redis":
        prefix = "bslong" + uuid.uuid4().hex[:8]
        # Its own key prefix in db 2; the lists expire an hour after the run.
        redis_config = {"type": "redis", "url": "127.0.0.1", "port": 6379, "db": 2}
        store = create_tracker_store({**redis_config, "key_prefix": prefix, "record_exp": 3600})
        try:
            return await run_store(store, messages, None)
        finally:
            await store.close()
    if kind == "sqlite":
        config: dict[str, Any] = {
            "type": "sql",
            "dialect": "sqlite",
            "db": str(workdir / "bench.db"),
        }
        return await _bench_sql(config, messages)
    import asyncpg

    name = "bs_bench_" + uuid.uuid4().hex[:8]
    admin = await asyncpg.connect(**POSTGRES_ADMIN)
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        config = {
            "type": "sql",
            "dialect": "postgresql",
            "url": "127.0.0.1",
            "port": 5432,
            "username": "postgres",
            "db": name,
        }
        return await _bench_sql(config, messages)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def _bench_sql(config: dict[str, Any], messages: int) -> dict[str, Any]:
    store = create_tracker_store(config)
    try:
        await store.ping()
        return await run_store(store, messages, config)
    finally:
        await store.close()


def _curves(latencies: list[float], cpu: list[float], messages: int) -> dict[str, Any]:
    median_curve, best_curve, cpu_curve = {}, {}, {}
    for point in (p for p in CHECKPOINTS if p <= messages):
        span = slice(max(0, point - 1 - WINDOW // 2), min(messages, point + WINDOW // 2))
        median_curve[point] = statistics.median(latencies[span]) * 1000
        best_curve[point] = min(latencies[span]) * 1000
        cpu_curve[point] = statistics.mean(cpu[span]) * 1000
    last, first = max(median_curve), min(median_curve)
    return {
        "ms_per_turn": median_curve,
        "fastest_ms_per_turn": best_curve,
        "ratio_last_to_first": median_curve[last] / median_curve[first],
        "fastest_ratio_last_to_first": best_curve[last] / best_curve[first],
        "cpu_ms_per_turn": cpu_curve,
        "cpu_ratio_last_to_first": cpu_curve[last] / cpu_curve[first],
        "cold_load_ms": None,
    }


def _process_cpu_seconds(pid: int) -> float:
    """CPU time of every thread of a process so far, in nanoseconds' precision (schedstat)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            total += int((task / "schedstat").read_text().split()[0])
    return total / 1e9


def _rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(status.split("VmRSS:")[1].split()[0]) / 1024


def _paired(long: list[float], short: list[float]) -> dict[str, float]:
    return {
        "long_ms": statistics.median(long) * 1000,
        "short_ms": statistics.median(short) * 1000,
        "ratio": statistics.median(long) / statistics.median(short),
    }


async def http_bench(
    kind: str, messages: int, workdir: Path, cache_events: int | None = None
) -> dict[str, Any]:
    """One conversation of `messages` turns through `botserver run` on the `kind` store;
    `cpu_ms_per_turn` is the server process's CPU time (all threads, from schedstat).

    Around each checkpoint every turn of the long conversation is followed by one turn of a
    short conversation (a new one every 10 messages, so always at message 1-10): `paired`
    compares the two under the same machine load, at the same time."""
    import httpx

    from bench.concurrency import ServerProcess, fresh_postgres_database, train_moodbot

    model = await asyncio.to_thread(train_moodbot, workdir / "models")
    async with contextlib.AsyncExitStack() as stack:
        if kind == "memory":
            store: dict[str, Any] = {"type": "in_memory"}
        elif kind == "sqlite":
            store = {"type": "sql", "dialect": "sqlite", "db": str(workdir / f"{kind}.db")}
        else:
            name = await stack.enter_async_context(fresh_postgres_database())
            store = {
                "type": "sql",
                "dialect": "postgresql",
                "url": "127.0.0.1",
                "port": 5432,
                "username": "postgres",
                "db": name,
            }
        if cache_events:
            store["cache_events"] = cache_events
        endpoints = workdir / f"endpoints-{kind}.yml"
        endpoints.write_text(json.dumps({"tracker_store": store}))
        server = ServerProcess(model, endpoints, workdir / f"server-{kind}.log")
        server.start()
        stack.push_async_callback(server.stop)
        await server.wait_for("/health/ready", 200, 90)
        assert server.process is not None
        pid = server.process.pid
        texts = ["hello", "I am feeling great", "I am sad", "yes", "no", "are you a bot?"]
        sender = "long-" + uuid.uuid4().hex[:8]
        latencies: list[float] = []
        cpu: list[float] = []
        windows = {
            point: range(max(1, point - WINDOW // 2), point + WINDOW // 2 + 1)
            for point in CHECKPOINTS
            if point <= messages
        }
        in_window = {n: point for point, span in windows.items() for n in span}
        paired_wall: dict[int, tuple[list[float], list[float]]] = {p: ([], []) for p in windows}
        paired_cpu: dict[int, tuple[list[float], list[float]]] = {p: ([], []) for p in windows}
        short_turns = 0

        async def timed_turn(http: httpx.AsyncClient, body: dict[str, Any]) -> tuple[float, float]:
            cpu_started = _process_cpu_seconds(pid)
            started = time.perf_counter()
            answer = await http.post("/webhooks/rest/webhook", json=body)
            wall = time.perf_counter() - started
            used = _process_cpu_seconds(pid) - cpu_started
            answer.raise_for_status()
            return wall, used

        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            for _ in range(20):  # warm up on another conversation
                await http.post("/webhooks/rest/webhook", json={"sender": "w", "message": "hi"})
            for n in range(1, messages + WINDOW // 2 + 1):
                wall, used = await timed_turn(
                    http, {"sender": sender, "message": texts[n % len(texts)]}
                )
                if n <= messages:
                    latencies.append(wall)
                    cpu.append(used)
                point = in_window.get(n)
                if point is None:
                    continue
                short = {
                    "sender": f"short-{sender}-{short_turns // 10}",
                    "message": texts[short_turns % len(texts)],
                }
                short_turns += 1
                short_wall, short_used = await timed_turn(http, short)
                paired_wall[point][0].append(wall)
                paired_wall[point][1].append(short_wall)
                paired_cpu[point][0].append(used)
                paired_cpu[point][1].append(short_used)
            tracker = (await http.get(f"/conversations/{sender}/tracker")).json()
        result = _curves(latencies, cpu, messages)
        result["paired_wall"] = {p: _paired(*paired_wall[p]) for p in windows}
        result["paired_cpu"] = {p: _paired(*paired_cpu[p]) for p in windows}
        result["events_stored"] = len(tracker["events"])
        result["server_rss_mb"] = _rss_mb(pid)
        return result


async def run_all(
    kinds: list[str], messages: int, http: bool = False, cache_events: int | None = None
) -> dict[str, Any]:
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for kind in kinds:
            started = time.perf_counter()
            if http:
                results[kind] = await http_bench(kind, messages, Path(tmp), cache_events)
            else:
                results[kind] = await bench(kind, messages, Path(tmp))
            results[kind]["total_seconds"] = time.perf_counter() - started
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stores", default="sqlite,postgres,memory")
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--http", action="store_true", help="turns through botserver run")
    parser.add_argument(
        "--cache-events", type=int, help="with --http: the tracker store's cache_events"
    )
    parser.add_argument("--out")
    args = parser.parse_args()
    name = "long_conversation_http.json" if args.http else "long_conversation.json"
    out = Path(args.out or ROOT / "bench" / "results" / name)

    results = asyncio.run(
        run_all(args.stores.split(","), args.messages, args.http, args.cache_events)
    )

    points = [p for p in CHECKPOINTS if p <= args.messages]
    header = f"{'store':<10}{'stat':<8}" + "".join(f"{'msg ' + str(p):>12}" for p in points)
    print(header + f"{'last/first':>12}{'cold load':>12}")
    for kind, result in results.items():
        for stat, curve_key, ratio_key in (
            ("median", "ms_per_turn", "ratio_last_to_first"),
            ("fastest", "fastest_ms_per_turn", "fastest_ratio_last_to_first"),
            ("cpu", "cpu_ms_per_turn", "cpu_ratio_last_to_first"),
        ):
            cells = "".join(f"{result[curve_key][p]:>10.2f}ms" for p in points)
            cold = result["cold_load_ms"]
            cold_cell = f"{cold:>10.1f}ms" if cold is not None and stat == "median" else ""
            print(f"{kind:<10}{stat:<8}{cells}{result[ratio_key]:>11.2f}x{cold_cell}")
        for stat in ("paired_wall", "paired_cpu"):
            if stat in result:  # long conversation / short one, turns interleaved
                cells = "".join(f"{result[stat][p]['ratio']:>11.2f}x" for p in points)
                print(f"{kind:<10}{stat[7:] + '/sh':<8}{cells}")
        if "server_rss_mb" in result:
            print(f"{kind:<10}server RSS at the end: {result['server_rss_mb']:.0f} MB")

    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "benchmark": (
                    "long_conversation (HTTP turns through botserver run, moodbot)"
                    if args.http
                    else "long_conversation (store level: load + append per turn)"
                ),
                "messages": args.messages,
                "cache_events": args.cache_events,
                "events_per_turn": 5,
                "python": platform.python_version(),
                "nproc": os.cpu_count(),
                "load_average": os.getloadavg(),
                "date": time.strftime("%Y-%m-%d %H:%M %Z"),
                "results": results,
            },
            indent=2,
        )
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
