"""What an operator reads in the log while a dependency is away: one `botserver run` behind TCP
proxies (tracker store, Redis lock store, RabbitMQ broker), messages at a steady rate, one
proxy cut (or made silent) and restored, or its open connections forgotten by the network
(`--forget`: new ones pass); prints the server's log, the answers' statuses, how many took
more than 1 s and the slowest.

    python bench/outage_log.py --store postgres|mariadb|redis --cut tracker|lock|broker
        [--silent | --forget] [--rate 50] [--before 2] [--outage 4] [--after 3] [--model DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.concurrency import (  # noqa: E402
    POSTGRES,
    RABBITMQ,
    REDIS,
    WEBHOOK,
    ServerProcess,
    delete_redis_keys,
    train_moodbot,
)
from bench.http_turns import model_archive  # noqa: E402
from bench.tcp_proxy import SilentProxy, TcpProxy  # noqa: E402
from tests.trackers.persistence_fixtures import MARIADB, tracker_store_config  # noqa: E402

# A password the log must never show (PostgreSQL's trust login ignores it).
SECRET = "s3cret-Pw"


@contextlib.asynccontextmanager
async def tracker_store(kind: str, port: int, workdir: Path) -> AsyncIterator[dict[str, Any]]:
    """A fresh store of `kind`, reached on the proxy's `port`; yields its config."""
    async with tracker_store_config(kind, workdir) as store:
        extra = {"password": SECRET} if kind == "postgres" else {}
        yield {**store, **extra, "port": port}


async def send_at_rate(
    url: str, rate: float, seconds: float, statuses: list[tuple[float, Any, float]]
) -> None:
    """POSTs one message every 1/`rate` s for `seconds`, over 20 conversations."""
    started = time.monotonic()
    tasks: set[asyncio.Task[None]] = set()
    async with httpx.AsyncClient(base_url=url, timeout=10.0) as http:

        async def one(i: int) -> None:
            sent = time.monotonic() - started
            try:
                answer = await http.post(WEBHOOK, json={"sender": f"c{i % 20}", "message": "hi"})
                status: Any = answer.status_code
            except httpx.HTTPError as exc:
                status = type(exc).__name__
            statuses.append((sent, status, time.monotonic() - started - sent))

        i = 0
        while time.monotonic() - started < seconds:
            task = asyncio.create_task(one(i))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            i += 1
            await asyncio.sleep(max(0.0, started + i / rate - time.monotonic()))
        await asyncio.gather(*tasks)


async def run(args: argparse.Namespace, workdir: Path) -> str:
    run_id = uuid.uuid4().hex[:8]
    target = {"postgres": POSTGRES, "mariadb": MARIADB, "redis": REDIS}[args.store]
    proxies = {
        "tracker": (SilentProxy if args.silent and args.cut == "tracker" else TcpProxy)(target),
        "lock": (SilentProxy if args.silent and args.cut == "lock" else TcpProxy)(REDIS),
        "broker": (SilentProxy if args.silent and args.cut == "broker" else TcpProxy)(RABBITMQ),
    }
    for proxy in proxies.values():
        await proxy.restore()
    model = args.model or train_moodbot(workdir / "models")
    queue, exchange = f"bs_outlog_{run_id}", f"bs-outlog-{run_id}"
    async with tracker_store(args.store, proxies["tracker"].port, workdir) as store:
        endpoints = {
            "tracker_store": store,
            "lock_store": {
                "type": "redis",
                "url": "127.0.0.1",
                "port": proxies["lock"].port,
                "db": 1,
                "key_prefix": f"bsoutlog{run_id}",
            },
            "event_broker": {
                "type": "pika",
                "url": "127.0.0.1",
                "port": proxies["broker"].port,
                "username": "guest",
                "password": "guest",
                "queues": [queue],
                "exchange_name": exchange,
                "retry_delay_in_seconds": 0.5,
            },
        }
        (workdir / "endpoints.yml").write_text(json.dumps(endpoints))
        server = ServerProcess(model, workdir / "endpoints.yml", workdir / "server.log")
        server.start()
        statuses: list[tuple[float, Any, float]] = []
        try:
            await server.wait_for("/health/ready", 200, 90)
            load = asyncio.create_task(
                send_at_rate(
                    server.url, args.rate, args.before + args.outage + args.after, statuses
                )
            )
            await asyncio.sleep(args.before)
            cut = proxies[args.cut]
            if args.forget:
                cut.forget_open_connections()
                print(f"--- forgot {args.cut}'s connections at {time.strftime('%H:%M:%S')}")
                await asyncio.sleep(args.outage)
            else:
                await cut.set_away(True)
                print(f"--- cut {args.cut} at {time.strftime('%H:%M:%S')}", flush=True)
                await asyncio.sleep(args.outage)
                await cut.set_away(False)
                print(f"--- restored {args.cut} at {time.strftime('%H:%M:%S')}", flush=True)
            await load
            await asyncio.sleep(1.5)
        finally:
            await server.stop()
            for proxy in proxies.values():
                await proxy.cut()
            await delete_redis_keys(f"bsoutlog{run_id}", db=1)
        with contextlib.suppress(Exception):
            import aio_pika

            connection = await aio_pika.connect(f"amqp://guest:guest@{RABBITMQ[0]}:{RABBITMQ[1]}/")
            channel = await connection.channel()
            await channel.queue_delete(queue)
            await channel.exchange_delete(exchange)
            await connection.close()
    counts = collections.Counter(str(status) for _, status, _ in statuses)
    log = server.log.read_text()
    print(f"--- {len(statuses)} messages: {dict(counts)}; log: {len(log.splitlines())} lines")
    slow = sum(1 for _, _, took in statuses if took > 1.0)
    print(f"--- answered after more than 1 s: {slow}")
    slowest = sorted(statuses, key=lambda s: s[2])[-3:]
    print(
        "--- slowest (sent at s, status, took s): "
        + ", ".join(f"({sent:.1f}, {status}, {took:.1f})" for sent, status, took in slowest)
    )
    return log


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--store", choices=("postgres", "mariadb", "redis"), default="postgres")
    parser.add_argument("--cut", choices=("tracker", "lock", "broker"), default="tracker")
    away = parser.add_mutually_exclusive_group()
    away.add_argument("--silent", action="store_true", help="accept but never answer")
    away.add_argument(
        "--forget", action="store_true", help="the network drops the open connections"
    )
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--before", type=float, default=2.0)
    parser.add_argument("--outage", type=float, default=4.0)
    parser.add_argument("--after", type=float, default=3.0)
    parser.add_argument(
        "--model", type=model_archive, help="a trained moodbot archive (else trains one)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bs_outlog_") as tmp:
        print(asyncio.run(run(args, Path(tmp))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
