"""Per-turn latency of a growing conversation, at the tracker-store level or (`--http`)
through a real `botserver run` serving moodbot.

One conversation, one session that never ends (the worst case). At the store level each turn
loads the current session and appends the events of a user message and a bot reply; with
`--http` each turn is a POST /webhooks/rest/webhook. The latency at message 10, 100, 1,000
and 5,000 should stay flat.

    python bench/long_conversation.py [--stores sqlite,postgres,memory] [--messages 5000]
                                      [--http] [--out bench/results/long_conversation.json]
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
POSTGRES_ADMIN = {"host": "127.0.0.1", "port": 5432, "user": "postgres", "database": "test"}


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
    if kind == "sqlite":
        config = {"type": "sql", "dialect": "sqlite", "db": str(workdir / "bench.db")}
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
    """User + system CPU of a process (and its reaped children), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = sum(int(x) for x in fields[11:15])
    return ticks / os.sysconf("SC_CLK_TCK")


async def http_bench(kind: str, messages: int, workdir: Path) -> dict[str, Any]:
    """One conversation of `messages` turns through `botserver run` on the `kind` store;
    `cpu_ms_per_turn` is the server process's CPU time (10 ms ticks, averaged)."""
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
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            for _ in range(20):  # warm up on another conversation
                await http.post("/webhooks/rest/webhook", json={"sender": "w", "message": "hi"})
            for n in range(messages):
                body = {"sender": sender, "message": texts[n % len(texts)]}
                cpu_started = _process_cpu_seconds(pid)
                started = time.perf_counter()
                answer = await http.post("/webhooks/rest/webhook", json=body)
                latencies.append(time.perf_counter() - started)
                cpu.append(_process_cpu_seconds(pid) - cpu_started)
                answer.raise_for_status()
            tracker = (await http.get(f"/conversations/{sender}/tracker")).json()
        result = _curves(latencies, cpu, messages)
        result["events_stored"] = len(tracker["events"])
        return result


async def run_all(kinds: list[str], messages: int, http: bool = False) -> dict[str, Any]:
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for kind in kinds:
            started = time.perf_counter()
            if http:
                results[kind] = await http_bench(kind, messages, Path(tmp))
            else:
                results[kind] = await bench(kind, messages, Path(tmp))
            results[kind]["total_seconds"] = time.perf_counter() - started
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stores", default="sqlite,postgres,memory")
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--http", action="store_true", help="turns through botserver run")
    parser.add_argument("--out")
    args = parser.parse_args()
    name = "long_conversation_http.json" if args.http else "long_conversation.json"
    out = Path(args.out or ROOT / "bench" / "results" / name)

    results = asyncio.run(run_all(args.stores.split(","), args.messages, args.http))

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
