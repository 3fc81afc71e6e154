"""A long run against one `botserver run` process: thousands of turns over many conversations
(a few long ones that every client comes back to, and a stream of short ones), sampling the
server's RSS, open file descriptors and, on PostgreSQL, its database connections every
`--every` turns. What grows after the warm-up is what a long-running server would leak.

    python bench/soak.py [--store sqlite|postgres] [--turns 20000] [--every 1000]
        [--clients 8] [--model DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.concurrency import POSTGRES, TEXTS, WEBHOOK, ServerProcess, train_moodbot  # noqa: E402
from bench.http_turns import model_archive  # noqa: E402
from tests.trackers.persistence_fixtures import tracker_store_config  # noqa: E402

LONG_CONVERSATIONS = 4  # every fourth turn goes to one of these, from any client
SHORT_TURNS = 6  # then a client starts a new conversation
WARM_UP = 0.25  # of the turns: what is measured after it must stay flat


@dataclass
class Sample:
    turns: int
    seconds: float  # since the load began
    rss_mb: float
    fds: int
    db_connections: int | None


@dataclass
class Soak:
    """The run's counts and samples."""

    turns: int
    warm_up: float = WARM_UP  # of the turns
    answered: int = 0
    failed: dict[str, int] = field(default_factory=dict)
    conversations: set[str] = field(default_factory=set)
    samples: list[Sample] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """The samples, and how much each measure grew from the first sample past the
        warm-up to the largest after it."""
        warm = next(s for s in self.samples if s.turns >= self.turns * self.warm_up)
        after = [s for s in self.samples if s.turns >= warm.turns]
        growth: dict[str, Any] = {
            "rss_mb": round(max(s.rss_mb for s in after) - warm.rss_mb, 1),
            "fds": max(s.fds for s in after) - warm.fds,
        }
        if warm.db_connections is not None:
            growth["db_connections"] = max(s.db_connections or 0 for s in after) - (
                warm.db_connections
            )
        return {
            "turns": self.turns,
            "answered": self.answered,
            "failed": self.failed,
            "conversations": len(self.conversations),
            "warm_up_turns": warm.turns,
            "growth_after_warm_up": growth,
            "samples": [vars(s) for s in self.samples],
        }


def process_usage(pid: int, sqlite: str | None = None) -> tuple[float, int, int]:
    """RSS (MB) of a process, its open file descriptors but those of the SQLite database
    `sqlite` (its files, -wal and -shm too: its connection pool opens one more as the turns
    in flight first need it, at any moment of a run), and how many of its connections have
    that database open."""
    rss_kib = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss_kib = int(line.split()[1])
    fds = connections = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:  # closed meanwhile
            continue
        if sqlite is None or not target.startswith(sqlite):
            fds += 1
        elif target == sqlite:
            connections += 1
    return round(rss_kib / 1024, 1), fds, connections


async def db_connections(database: str) -> int:
    """The connections to `database` PostgreSQL counts (the server's pool, idle or not)."""
    import asyncpg

    admin = await asyncpg.connect(
        host=POSTGRES[0], port=POSTGRES[1], user="postgres", database="postgres"
    )
    try:
        count = await admin.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1", database
        )
    finally:
        await admin.close()
    return int(count)


async def drive(
    server: ServerProcess,
    soak: Soak,
    every: int,
    clients: int,
    db: str | None,
    sqlite: str | None = None,
) -> None:
    """`clients` clients, one connection each, until `soak.turns` turns were sent; a sample
    every `every` answered turns (no client starts a turn meanwhile; those already sent, up
    to `clients` - 1, may still be in flight).
    Database connections: PostgreSQL's to database `db`, or those of SQLite file `sqlite`."""
    assert server.process is not None
    pid = server.process.pid
    numbers = itertools.count()
    started = time.monotonic()
    sampled = asyncio.Lock()

    async def sample() -> None:
        rss, fds, files = await asyncio.to_thread(process_usage, pid, sqlite)
        connections = await db_connections(db) if db else files if sqlite else None
        seconds = round(time.monotonic() - started, 1)
        soak.samples.append(Sample(soak.answered, seconds, rss, fds, connections))

    async def client(index: int) -> None:
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        short, left = "", 0
        async with httpx.AsyncClient(base_url=server.url, timeout=60, limits=limits) as http:
            while (number := next(numbers)) < soak.turns:
                if number % 4 == 0:
                    conversation = f"long{number // 4 % LONG_CONVERSATIONS}"
                else:
                    if left == 0:
                        short, left = f"short{index}-{number}", SHORT_TURNS
                    conversation, left = short, left - 1
                soak.conversations.add(conversation)
                body = {"sender": conversation, "message": TEXTS[number % len(TEXTS)]}
                async with sampled:  # no turn starts while a sample is taken
                    pass
                try:
                    answer = await http.post(WEBHOOK, json=body)
                    outcome = str(answer.status_code)
                except httpx.HTTPError as exc:
                    outcome = type(exc).__name__
                if outcome != "200":
                    soak.failed[outcome] = soak.failed.get(outcome, 0) + 1
                    continue
                soak.answered += 1
                if soak.answered % every == 0:
                    async with sampled:
                        await sample()

    await sample()
    await asyncio.gather(*(client(n) for n in range(clients)))
    await sample()


async def soak_run(
    model: Path,
    store: str,
    turns: int,
    every: int,
    clients: int,
    workdir: Path,
    warm_up: float = WARM_UP,
) -> dict[str, Any]:
    """One server on a fresh store of `store` (sqlite, postgres), driven for `turns` turns;
    what grows after the first `warm_up` of them is reported."""
    async with tracker_store_config(store, workdir) as trackers:
        endpoints = workdir / "endpoints.yml"
        endpoints.write_text(json.dumps({"tracker_store": trackers}))  # JSON is YAML
        server = ServerProcess(model, endpoints, workdir / "server.log")
        server.start()
        try:
            await server.wait_for("/health/ready", 200, timeout=120)
            soak = Soak(turns, warm_up)
            started = time.monotonic()
            db = trackers["db"] if store == "postgres" else None
            sqlite = trackers["db"] if store == "sqlite" else None
            await drive(server, soak, every, clients, db, sqlite)
            result = soak.summary()
            result["seconds"] = round(time.monotonic() - started, 1)
            result["store"] = store
        finally:
            await server.stop()
    return result


def print_report(result: dict[str, Any]) -> None:
    print("turns seconds rss_mb fds db_connections")
    for s in result["samples"]:
        print(s["turns"], s["seconds"], s["rss_mb"], s["fds"], s["db_connections"])
    print(
        f"{result['store']}: {result['answered']} of {result['turns']} turns answered over "
        f"{result['conversations']} conversations in {result['seconds']} s, failed "
        f"{result['failed']}; growth after the first {result['warm_up_turns']} turns: "
        f"{result['growth_after_warm_up']}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--turns", type=int, default=20_000)
    parser.add_argument("--every", type=int, default=1_000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--model", type=model_archive, help="a model archive (default: train one)")
    parser.add_argument("--json", type=Path, help="write the result here too")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="soak-"))
    model = args.model or train_moodbot(workdir)
    result = asyncio.run(soak_run(model, args.store, args.turns, args.every, args.clients, workdir))
    print_report(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
