"""In-process turn driver: the server's ASGI app called directly, no sockets, no HTTP client.

    python bench/turn_profile.py [--store sqlite|memory|redis|postgresql|dynamo]
        [--lock memory|redis] [--turns 20000] [--concurrency 50] [--warmup 2000] [--unique]
        [--model ARCHIVE] [--no-uvloop] [--no-gc] [--cprofile OUT.prof] [--store-stats]
        [--round-trips] [--broker none|pika|sql] [--wait-for-delivery]
        [--json] [--pg-url postgresql://postgres@127.0.0.1:5432/test]

N concurrent moodbot conversations (the scripts of `bench/http_turns.py`) post to the REST
webhook of `bench/http_apps.py:server_app`, each waiting for its reply before its next turn.
After `--warmup` turns, `--turns` turns are measured: turns/s, the process's CPU time per
turn (all threads) and the event loop thread's share, turn latency p50/p99, RSS. Meant for
A/B runs (`PYTHONPATH=<worktree>` for the old code), py-spy (`py-spy record -p <pid>` or
`py-spy record -- python bench/turn_profile.py ...`), cProfile (`--cprofile`) and callgrind
(`valgrind --tool=callgrind python bench/turn_profile.py --turns 300 --warmup 100`).
`--no-gc` keeps the collector off during the measured turns: over HTTP the server's
collector hardly runs (one young collection per ~20,000 requests at c=50), while in process
a few collections per 1,000 turns move a count by up to ±0.5 %, as much as the changes it is
meant to show.
`--store-stats` adds the SQLite store's counters (commits, inline commits, fallbacks to its
thread, checkpoints) and the duration of its inline commits (p50/p99/max, the time the event
loop spends in one). `--store postgresql` (the workers' store of `bench/http_turns.py`)
creates its own database through the `--pg-url` one and drops it after the run.
`--store dynamo` runs moto's DynamoDB server in a subprocess (its CPU is not counted); keep
`--turns`/`--concurrency` under about 100, as a moodbot conversation fills DynamoDB's 400 KB
item after 121 turns. `--round-trips` counts, client side, the measured turns' Redis round
trips (writes to a socket) and commands, and their PostgreSQL statements (asyncpg calls); its
wrappers add a few Python calls, so leave it out of runs that count calls (`--cprofile`).
`--broker pika` publishes each turn's events to RabbitMQ (127.0.0.1:5672, guest/guest, a
queue and exchange of the run's own, deleted after it), `--broker sql` to a SQLite event
table in the run's directory; `--wait-for-delivery` sets `wait_for_delivery: true` (a turn
answered once the broker took its events). The measured time ends once the broker took every
event (CPU per turn counts the publishing either way); RabbitMQ's own CPU is not counted.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from http_turns import (  # noqa: E402
    CONVERSATIONS,
    REDIS,
    WEBHOOK,
    model_archive,
    percentile,
    rss_mb,
    train_moodbot,
)

Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[dict[str, Any], Receive, Send], Coroutine[Any, Any, None]]


REDIS_DB = 2


def redis_prefix() -> str:
    return f"turnprofile{os.getpid()}"


def delete_redis_keys() -> None:
    """The run's conversations, from the Redis tracker store (~1 KB each)."""
    from redis import Redis

    client = Redis(host=REDIS[0], port=REDIS[1], db=REDIS_DB)
    try:
        keys = list(client.scan_iter(match=redis_prefix() + ":*", count=5000))
        for start in range(0, len(keys), 1000):
            client.delete(*keys[start : start + 1000])
    finally:
        client.close()


def pg_database() -> str:
    return f"turnprofile{os.getpid()}"


def pg_login(url: str) -> dict[str, Any]:
    """asyncpg's connect arguments for `--pg-url` (the database that creates ours)."""
    parts = urlsplit(url)
    return {
        "host": parts.hostname or "127.0.0.1",
        "port": parts.port or 5432,
        "user": parts.username or "postgres",
        "password": parts.password,
        "database": parts.path.lstrip("/") or "test",
    }


def drop_pg_database(url: str) -> None:
    import asyncpg

    async def run() -> None:
        conn = await asyncpg.connect(**pg_login(url))
        try:
            await conn.execute(f"DROP DATABASE IF EXISTS {pg_database()} WITH (FORCE)")
        finally:
            await conn.close()

    asyncio.run(run())


RABBITMQ = ("127.0.0.1", 5672)


def rabbitmq_names() -> str:
    """The run's queue and exchange name."""
    return f"turnprofile{os.getpid()}"


def delete_rabbitmq_names() -> None:
    import aio_pika

    async def run() -> None:
        connection = await aio_pika.connect(f"amqp://guest:guest@{RABBITMQ[0]}:{RABBITMQ[1]}/")
        try:
            channel = await connection.channel()
            await channel.queue_delete(rabbitmq_names())
            await channel.exchange_delete(rabbitmq_names())
        finally:
            await connection.close()

    asyncio.run(run())


def event_broker(broker: str, wait: bool, workdir: Path) -> dict[str, Any] | None:
    if broker == "pika":
        host, port = RABBITMQ
        name = rabbitmq_names()
        return dict(type="pika", url=host, port=port, username="guest", password="guest") | {
            "queues": [name],
            "exchange_name": name,
            "wait_for_delivery": wait,
        }
    if broker == "sql":
        return {
            "type": "sql",
            "dialect": "sqlite",
            "db": str(workdir / "events.db"),
            "wait_for_delivery": wait,
        }
    return None


def endpoints(store: str, lock: str, workdir: Path, pg_url: str) -> dict[str, Any]:
    config: dict[str, Any] = {}
    if store == "postgresql":
        # Its own database, created by the store through the login one, dropped after the run.
        login = pg_login(pg_url)
        config["tracker_store"] = {
            "type": "sql",
            "dialect": "postgresql",
            "url": login["host"],
            "port": login["port"],
            "username": login["user"],
            "password": login["password"],
            "db": pg_database(),
            "login_db": login["database"],
        }
    elif store == "sqlite":
        config["tracker_store"] = {
            "type": "sql",
            "dialect": "sqlite",
            "db": str(workdir / "turns.db"),
        }
    elif store == "redis":
        # Its own key prefix (db 2), deleted after the run (they would expire in an hour).
        config["tracker_store"] = {
            "type": "redis",
            "url": REDIS[0],
            "port": REDIS[1],
            "db": REDIS_DB,
            "key_prefix": redis_prefix(),
            "record_exp": 3600,
        }
    elif store == "dynamo":
        config["tracker_store"] = {
            "type": "dynamo",
            "table_name": f"turnprofile{os.getpid()}",
            "endpoint_url": os.environ["AWS_ENDPOINT_URL"],
        }
    else:
        config["tracker_store"] = {"type": "in_memory"}
    if lock == "redis":
        config["lock_store"] = {"type": "redis", "url": REDIS[0], "port": REDIS[1]}
    return config


def start_moto() -> subprocess.Popen[bytes]:
    """moto's DynamoDB server on a free port, named to boto3 by the environment."""
    with socket.socket() as probe:  # a free port
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        ["moto_server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    os.environ.update(
        AWS_ENDPOINT_URL=url, AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench"
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return server
        except OSError:
            time.sleep(0.2)
    server.kill()
    raise RuntimeError("moto_server did not start")


class Lifespan:
    """Drives the ASGI lifespan protocol: startup on enter, shutdown on exit."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.inbox: asyncio.Queue[Message] = asyncio.Queue()
        self.outbox: asyncio.Queue[Message] = asyncio.Queue()
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> None:
        scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
        self.task = asyncio.create_task(self.app(scope, self.inbox.get, self.outbox.put))
        await self.inbox.put({"type": "lifespan.startup"})
        message = await self.outbox.get()
        if message["type"] != "lifespan.startup.complete":
            raise SystemExit(f"startup failed: {message}")

    async def __aexit__(self, *exc: object) -> None:
        await self.inbox.put({"type": "lifespan.shutdown"})
        await self.outbox.get()
        assert self.task is not None
        await self.task


async def post(app: App, body: bytes) -> tuple[int, bytes]:
    """One webhook request through the ASGI app: (status, response body)."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": WEBHOOK,
        "raw_path": WEBHOOK.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [
            (b"host", b"bench"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
        "state": {},
    }
    sent = False
    status = 0
    chunks: list[bytes] = []

    async def receive() -> Message:
        nonlocal sent
        if sent:
            await asyncio.Event().wait()  # the client never disconnects
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(scope, receive, send)
    return status, b"".join(chunks)


class Driver:
    """`concurrency` conversations, each one request at a time, until `total` turns are done."""

    def __init__(self, app: App, concurrency: int, unique: bool, prefix: str) -> None:
        self.app = app
        self.concurrency = concurrency
        self.unique = unique
        self.prefix = prefix
        self.latencies: list[float] = []
        self.errors = 0
        self.done = 0
        self.runs = 0

    async def run(self, total: int) -> None:
        # Each run its own conversations: the measured turns do not continue the warm-up's,
        # which the hot trackers have partly evicted (their reloads are no turn's cost).
        self.latencies, self.errors, self.done = [], 0, 0
        self.runs += 1
        await asyncio.gather(*(self._user(i, total) for i in range(self.concurrency)))

    async def _user(self, index: int, total: int) -> None:
        number = sent = 0
        while self.done < total:
            number += 1
            sender = f"{self.prefix}-{self.runs}-{index}-{number}"
            for text in CONVERSATIONS[number % len(CONVERSATIONS)]:
                if self.done >= total:
                    return
                self.done += 1
                if self.unique:
                    sent += 1
                    text = f"{text} {index}n{sent}"
                body = json.dumps({"sender": sender, "message": text}).encode()
                started = time.perf_counter()
                status, reply = await post(self.app, body)
                self.latencies.append(time.perf_counter() - started)
                if status != 200 or sender.encode() not in reply:
                    self.errors += 1


class RoundTrips:
    """Client-side counts while enabled: Redis round trips (writes of a packed command or
    pipeline to a socket) and the commands they carried, PostgreSQL statements (asyncpg
    calls: each one round trip, its own transaction unless inside one)."""

    def __init__(self) -> None:
        from asyncpg.connection import Connection as PgConnection
        from redis.asyncio.connection import AbstractConnection

        self.enabled = False
        self.redis_round_trips = self.redis_commands = self.pg_statements = 0
        self.pg_by_kind: dict[str, int] = {}
        counts = self

        send = AbstractConnection.send_packed_command

        async def send_packed_command(conn: Any, command: Any, *args: Any, **kwargs: Any) -> None:
            if counts.enabled:
                counts.redis_round_trips += 1
                chunks = [command] if isinstance(command, bytes | str) else list(command)
                for chunk in chunks:
                    data = chunk.encode() if isinstance(chunk, str) else bytes(chunk)
                    counts.redis_commands += data.count(b"\r\n*") + data.startswith(b"*")
            await send(conn, command, *args, **kwargs)

        AbstractConnection.send_packed_command = send_packed_command  # type: ignore[assignment]
        for name in ("fetch", "fetchrow", "fetchval", "execute", "executemany"):
            original = getattr(PgConnection, name)
            setattr(PgConnection, name, self._counted(original))

    def _counted(self, original: Any) -> Any:
        counts = self

        async def counted(conn: Any, query: str, *args: Any, **kwargs: Any) -> Any:
            if counts.enabled:
                counts.pg_statements += 1
                kind = " ".join(query.split()[:2])[:40]
                counts.pg_by_kind[kind] = counts.pg_by_kind.get(kind, 0) + 1
            return await original(conn, query, *args, **kwargs)

        return counted

    def result(self, turns: int) -> dict[str, Any]:
        return {
            "redis_round_trips_per_turn": round(self.redis_round_trips / turns, 3),
            "redis_commands_per_turn": round(self.redis_commands / turns, 3),
            "pg_statements_per_turn": round(self.pg_statements / turns, 3),
            "pg_statements_by_kind": self.pg_by_kind,
        }


class StoreStats:
    """Counters of the SQLite store and the durations of its inline group commits."""

    COUNTERS = (
        "group_commits",
        "inline_commits",
        "busy_fallbacks",
        "checkpoints",
        "checkpoint_seconds",
        "held_seconds",
    )

    def __init__(self, app: Any) -> None:
        store = app.state.tracker_store
        self.db = getattr(store, "_db", None)
        self.durations: list[float] = []
        self.cpu: list[float] = []
        self.sizes: list[int] = []
        self.before = self.counters()
        # WAL pages the commits wrote, from what each checkpoint found in the WAL: all of it
        # is new when the last checkpoint restarted the WAL (leaving the 1 page of the
        # thread's first commit), only the growth since when it could not.
        self.wal_pages = 0
        module = sys.modules.get("server.trackers.sqlite_database")
        checkpoint = getattr(module, "_checkpoint", None)
        start_wal = getattr(module, "_start_wal", None)
        if checkpoint is not None and start_wal is not None:
            found = [1]  # pages in the WAL after the last checkpoint

            def restarted(conn: Any) -> None:
                start_wal(conn)
                found[0] = 1

            def counted(conn: Any, **kwargs: Any) -> int:
                before, found[0] = found[0], -1
                frames: int = checkpoint(conn, **kwargs)
                self.wal_pages += max(0, frames - before)
                if found[0] == -1:  # not restarted
                    found[0] = frames
                return frames

            module._checkpoint = counted  # type: ignore[union-attr]
            module._start_wal = restarted  # type: ignore[union-attr]
        commit = getattr(self.db, "_commit_inline", None)
        if commit is not None:

            def timed() -> None:
                self.sizes.append(len(self.db._inline_group))  # type: ignore[union-attr]
                started, cpu = time.perf_counter(), time.thread_time()
                commit()
                self.cpu.append(time.thread_time() - cpu)
                self.durations.append(time.perf_counter() - started)

            self.db._commit_inline = timed  # type: ignore[union-attr]

    def counters(self) -> dict[str, float]:
        return {name: getattr(self.db, name, 0) for name in self.COUNTERS}

    def result(self, turns: int) -> dict[str, Any]:
        now = self.counters()
        stats: dict[str, Any] = {name: round(now[name] - self.before[name], 3) for name in now}
        stats["checkpoint_after"] = getattr(self.db, "checkpoint_after", None)
        stats["wal_pages_per_turn"] = round(self.wal_pages / turns, 2)
        for name, values in (
            ("inline_commit_ms", self.durations),
            ("inline_commit_cpu_ms", self.cpu),
        ):
            if values:
                stats[name] = {
                    "p50": round(percentile(values, 0.50) * 1000, 3),
                    "p99": round(percentile(values, 0.99) * 1000, 3),
                    "p999": round(percentile(values, 0.999) * 1000, 3),
                    "max": round(max(values) * 1000, 3),
                    "n": len(values),
                }
        if self.sizes:
            stats["inline_group_appends"] = {
                "mean": round(sum(self.sizes) / len(self.sizes), 1),
                "p50": percentile([float(n) for n in self.sizes], 0.5),
                "max": max(self.sizes),
            }
        return stats


async def measure(args: argparse.Namespace, model: Path, workdir: Path) -> dict[str, Any]:
    os.environ["BENCH_MODEL"] = str(model)
    config = endpoints(args.store, args.lock, workdir, args.pg_url)
    broker = event_broker(args.broker, args.wait_for_delivery, workdir)
    if broker is not None:
        config["event_broker"] = broker
    os.environ["BENCH_ENDPOINTS"] = json.dumps(config)
    round_trips = RoundTrips() if args.round_trips else None
    from http_apps import server_app

    app = server_app()
    async with Lifespan(app):
        rss_startup = rss_mb(os.getpid())
        driver = Driver(app, args.concurrency, args.unique, f"t{os.getpid()}{int(time.time())}")
        if args.warmup:
            await driver.run(args.warmup)
        stats = StoreStats(app) if args.store_stats else None
        # For a wrapper that counts instructions of the measured turns only (callgrind).
        if args.no_gc:
            gc.disable()
        print("measuring", file=sys.stderr, flush=True)
        profiler = cProfile.Profile() if args.cprofile else None
        wall, cpu, loop_cpu = time.perf_counter(), time.process_time(), time.thread_time()
        kernel = os.times().system
        if profiler is not None:
            profiler.enable()
        if round_trips is not None:
            round_trips.enabled = True
        await driver.run(args.turns)
        answered = time.perf_counter()
        if args.broker != "none":
            # The events still queued are delivered inside the measured time: without the
            # wait, the answers come first and the publishing after them.
            if not await app.state.event_broker.flush(120):
                raise SystemExit("the broker did not take the events within 120 s")
        delivered_after = time.perf_counter() - answered
        if round_trips is not None:
            round_trips.enabled = False
        print("measured", file=sys.stderr, flush=True)
        if args.no_gc:
            gc.enable()
        if profiler is not None:
            profiler.disable()
        wall = time.perf_counter() - wall
        cpu, loop_cpu = time.process_time() - cpu, time.thread_time() - loop_cpu
        kernel = os.times().system - kernel
        if profiler is not None:
            profiler.dump_stats(args.cprofile)
        turns = len(driver.latencies)
        result = {
            "store": args.store,
            "lock": args.lock,
            "broker": args.broker,
            "wait_for_delivery": args.wait_for_delivery,
            "concurrency": args.concurrency,
            "unique": args.unique,
            "turns": turns,
            "errors": driver.errors,
            "turns_per_s": round(turns / wall, 1),
            "cpu_ms_per_turn": round(cpu * 1000 / turns, 4),
            # Of it, in the kernel (system calls: socket writes, the waits' epoll).
            "system_cpu_ms_per_turn": round(kernel * 1000 / turns, 4),
            # How long after the last answer the broker had taken every event.
            "delivered_after_ms": round(delivered_after * 1000, 1),
            "loop_thread_cpu_ms_per_turn": round(loop_cpu * 1000 / turns, 4),
            "p50_ms": round(percentile(driver.latencies, 0.50) * 1000, 3),
            "p99_ms": round(percentile(driver.latencies, 0.99) * 1000, 3),
            "rss_startup_mb": rss_startup,
            "rss_after_mb": rss_mb(os.getpid()),
            "load_average": [round(x, 2) for x in os.getloadavg()],
        }
        if stats is not None:
            result["store_stats"] = stats.result(turns)
        if round_trips is not None:
            result["round_trips"] = round_trips.result(turns)
        if args.store == "postgresql":
            result["pg_database"] = pg_database()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--store",
        choices=("sqlite", "memory", "redis", "postgresql", "dynamo"),
        default="sqlite",
    )
    parser.add_argument("--lock", choices=("memory", "redis"), default="memory")
    parser.add_argument("--turns", type=int, default=20_000, help="measured turns")
    parser.add_argument("--warmup", type=int, default=2_000, help="turns before measuring")
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--unique", action="store_true", help="every message text once")
    parser.add_argument(
        "--model", type=model_archive, help="a moodbot archive (default: train one)"
    )
    parser.add_argument("--no-uvloop", action="store_true", help="asyncio's own loop")
    parser.add_argument(
        "--no-gc", action="store_true", help="the collector off during the measured turns"
    )
    parser.add_argument("--cprofile", help="write a cProfile of the measured turns here")
    parser.add_argument(
        "--store-stats",
        action="store_true",
        help="the SQLite store's commit counters and inline commit durations",
    )
    parser.add_argument(
        "--round-trips",
        action="store_true",
        help="Redis round trips and commands, PostgreSQL statements per measured turn",
    )
    parser.add_argument(
        "--pg-url",
        default="postgresql://postgres@127.0.0.1:5432/test",
        help="the PostgreSQL database that creates the run's own (--store postgresql)",
    )
    parser.add_argument("--broker", choices=("none", "pika", "sql"), default="none")
    parser.add_argument(
        "--wait-for-delivery",
        action="store_true",
        help="the broker's wait_for_delivery: true (a turn answered once its events are taken)",
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="turn-profile-") as tmp:
        workdir = Path(tmp)
        model = args.model or train_moodbot(workdir / "models")
        moto = start_moto() if args.store == "dynamo" else None
        run = measure(args, model, workdir)
        try:
            if args.no_uvloop:
                result = asyncio.run(run)
            else:
                import uvloop

                result = uvloop.run(run)
        finally:
            if args.store == "redis":
                delete_redis_keys()
            if args.store == "postgresql":
                drop_pg_database(args.pg_url)
            if args.broker == "pika":
                delete_rabbitmq_names()
            if moto is not None:
                moto.terminate()
                moto.wait()
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"{result['store']}/{result['lock']} broker {result['broker']}"
            f"{' (wait_for_delivery)' if result['wait_for_delivery'] else ''}"
            f" c={result['concurrency']}"
            f"{' unique' if result['unique'] else ''}: {result['turns']} turns, "
            f"{result['turns_per_s']:.0f} turns/s, CPU {result['cpu_ms_per_turn']:.3f} ms/turn "
            f"(system {result['system_cpu_ms_per_turn']:.3f}) "
            f"(loop thread {result['loop_thread_cpu_ms_per_turn']:.3f}), "
            f"p50 {result['p50_ms']:.2f} / p99 {result['p99_ms']:.2f} ms, "
            f"errors {result['errors']}, RSS {result['rss_startup_mb']} / "
            f"{result['rss_after_mb']} MB, load {result['load_average']}"
        )
        if "store_stats" in result:
            print(f"store: {result['store_stats']}")
        if "round_trips" in result:
            print(f"round trips: {result['round_trips']}")
    return 1 if result["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
