"""SQLAlchemy's PostgreSQL engines (the SQL broker's, the schema set-up's), direct and behind a
pooler in transaction mode (PgBouncer).

    python bench/sql_engine_pooler.py migrate [--rounds 20]
        CPU time of the schema set-up (`migrate`, nothing left to do: every start after the
        first) on a direct connection, prepared and unprepared engines alternating.
    python bench/sql_engine_pooler.py broker --port PGBOUNCER_PORT [--events 40]
        Three brokers publish through the pooler: seconds until all is written, and how many
        "delivery failed" lines the log got.

Uses the local PostgreSQL (127.0.0.1:5432, user postgres) and a database of its own.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time
import uuid
from functools import partial
from typing import Any

import asyncpg

POSTGRES = {"host": "127.0.0.1", "port": 5432, "user": "postgres"}


def config(database: str, port: int = 5432) -> dict[str, Any]:
    return {
        "type": "sql",
        "dialect": "postgresql",
        "url": "127.0.0.1",
        "port": port,
        "username": "postgres",
        "db": database,
    }


async def migrate_cpu(rounds: int) -> None:
    import inspect

    from server.trackers.sql_engine import async_url, create_engine
    from server.trackers.sql_schema import migrate

    database = f"bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(**POSTGRES, database="postgres")
    await admin.execute(f'CREATE DATABASE "{database}"')
    try:
        url = async_url(config(database), "x")
        takes_prepared = "prepared" in inspect.signature(create_engine).parameters
        kinds = [True, False] if takes_prepared else [True]
        cpu: dict[bool, list[float]] = {kind: [] for kind in kinds}
        for _ in range(rounds):
            for kind in kinds:
                options = {"prepared": kind} if takes_prepared else {}
                started = time.process_time()
                await migrate(partial(create_engine, url, **options))  # disposed of there
                cpu[kind].append(time.process_time() - started)
        for kind, times in cpu.items():
            times.sort()
            name = "prepared" if kind else "unprepared"
            print(f"{name}: median {times[len(times) // 2] * 1000:.2f} ms CPU a set-up ({rounds})")
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        await admin.close()


class Count(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.failed = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.failed += "delivery failed" in record.getMessage()


async def brokers(port: int, events: int) -> None:
    from server.brokers.sql import SqlEventBroker

    count = Count()
    logging.getLogger("server.brokers.delivery").addHandler(count)
    database = f"bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(**POSTGRES, database="postgres")
    await admin.execute(f'CREATE DATABASE "{database}"')
    try:
        three = [
            SqlEventBroker({**config(database, port), "table_name": "broker_events"})
            for _ in range(3)
        ]
        started = time.monotonic()
        for n in range(events):
            for b, broker in enumerate(three):
                await broker.publish(f"sender{b}", [{"event": "bot", "timestamp": float(n)}])
            await asyncio.sleep(0.005)
        for broker in three:
            assert await broker.flush(timeout=60)
        took = time.monotonic() - started
        for broker in three:
            await broker.close()
        print(f"{events * 3} events written in {took:.2f} s, {count.failed} 'delivery failed'")
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        await admin.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["migrate", "broker"])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--port", type=int, default=6432)
    parser.add_argument("--events", type=int, default=40)
    args = parser.parse_args()
    if args.what == "migrate":
        asyncio.run(migrate_cpu(args.rounds))
    else:
        asyncio.run(brokers(args.port, args.events))


if __name__ == "__main__":
    main()
