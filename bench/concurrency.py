"""Many clients, few conversations, several `botserver run` processes sharing PostgreSQL and a
Redis lock: throughput, latency, and proof that every acknowledged message is stored exactly
once, in order, directly followed by its own bot events. Optionally cuts PostgreSQL and
RabbitMQ (through TCP proxies) during the load, and checks what a RabbitMQ consumer got.

    python bench/concurrency.py [--smoke] [--clients 50] [--conversations 10] [--messages 60]
        [--servers 2] [--workers 1] [--rabbitmq] [--db-down-at-start S]
        [--db-outage AT,FOR] [--broker-outage AT,FOR] [--out bench/results/concurrency.json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.tcp_proxy import TcpProxy, free_port  # noqa: E402
from server.brokers.ordering import PREVIOUS_ID_HEADER, ConversationOrderer  # noqa: E402

MOODBOT = Path(os.environ.get("BOTSERVER_BOTS", "/work/shared/bots")) / "moodbot"
POSTGRES = ("127.0.0.1", 5432)
REDIS = ("127.0.0.1", 6379)
RABBITMQ = ("127.0.0.1", 5672)
TEXTS = [
    "hello",
    "I am feeling great",
    "I am sad",
    "yes",
    "no",
    "are you a bot?",
    "good morning",
    "very unhappy",
    "goodbye",
]
WEBHOOK = "/webhooks/rest/webhook"


@dataclass
class Scenario:
    """What one run does. Outages are (seconds after the load starts, seconds down)."""

    clients: int = 50
    conversations: int = 10
    messages: int = 60  # per client
    servers: int = 2
    workers: int = 1  # `--workers` of each server process
    rabbitmq: bool = False
    db_down_at_start: float = 0.0  # PostgreSQL unreachable while the servers start
    db_outage: tuple[float, float] | None = None
    broker_outage: tuple[float, float] | None = None
    request_timeout: float = 20.0
    pause_after_error: float = 0.2
    # Seconds a client waits after each answered message: keeps the load running through
    # the outages however fast the server is.
    think_time: float = 0.0
    broker_drain_timeout: float = 60.0

    @classmethod
    def smoke(cls) -> Scenario:
        return cls(clients=10, conversations=5, messages=20)


@dataclass
class Sent:
    """One client message and what the server answered."""

    client: int
    seq: int
    conversation: str
    server: int
    started: float  # seconds since the load started
    seconds: float
    status: int | None  # None: no HTTP answer (timeout, connection error)
    error: str | None = None  # the error body's reason, or the exception type
    bot_texts: list[str] = field(default_factory=list)

    @property
    def tag(self) -> str:
        return f"{self.client}:{self.seq}"

    @property
    def acknowledged(self) -> bool:
        return self.status == 200


# -- services ----------------------------------------------------------------------------------
def reachable(address: tuple[str, int]) -> bool:
    import socket

    try:
        with socket.create_connection(address, timeout=1):
            return True
    except OSError:
        return False


@contextlib.asynccontextmanager
async def fresh_postgres_database() -> AsyncIterator[str]:
    """A new, empty PostgreSQL database for one run (dropped afterwards)."""
    import asyncpg

    name = f"bs_conc_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(
        host=POSTGRES[0], port=POSTGRES[1], user="postgres", database="test"
    )
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield name
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def delete_redis_keys(prefix: str, db: int) -> None:
    from redis.asyncio import Redis

    client = Redis(host=REDIS[0], port=REDIS[1], db=db)
    try:
        async for key in client.scan_iter(match=f"{prefix}:*"):
            await client.delete(key)
    finally:
        await client.aclose()


def train_moodbot(out: Path) -> Path:
    from server.training.train import train

    result = train(
        MOODBOT / "config.yml",
        MOODBOT / "domain.yml",
        [MOODBOT / "data"],
        out,
        fixed_model_name="moodbot",
    )
    return result.path


def botserver_command() -> list[str]:
    script = Path(sys.executable).parent / "botserver"
    if script.exists():
        return [str(script)]
    found = shutil.which("botserver")
    if found:
        return [found]
    return [sys.executable, "-c", "import sys, cli; sys.exit(cli.main())"]


class ServerProcess:
    """One `botserver run` process (its own process group) on a free port."""

    def __init__(self, model: Path, endpoints: Path, log: Path, workers: int = 1) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self.args = [
            *botserver_command(),
            "run",
            "-m",
            str(model),
            "--enable-api",
            "--endpoints",
            str(endpoints),
            "-i",
            "127.0.0.1",
            "-p",
            str(self.port),
            "--workers",
            str(workers),
            "--response-timeout",
            "30",
        ]
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, "wb") as out:
            self.process = subprocess.Popen(
                self.args,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=self.log.parent,
            )

    async def wait_for(self, path: str, status: int, timeout: float) -> float:
        """Poll `path` until it answers `status`; the seconds it took."""
        started = time.monotonic()
        async with httpx.AsyncClient(base_url=self.url, timeout=2.0) as client:
            while True:
                if self.process is not None and self.process.poll() is not None:
                    raise RuntimeError(
                        f"server on port {self.port} exited ({self.process.returncode}):\n"
                        + self.log.read_text()[-3000:]
                    )
                try:
                    answer = await client.get(path)
                    if answer.status_code == status:
                        return time.monotonic() - started
                except httpx.HTTPError:
                    pass
                if time.monotonic() - started > timeout:
                    raise TimeoutError(
                        f"{self.url}{path} did not answer {status} within {timeout:g} s:\n"
                        + self.log.read_text()[-3000:]
                    )
                await asyncio.sleep(0.1)

    async def stop(self) -> None:
        """SIGTERM, then SIGKILL after 20 s. Async: the proxies it talks through run here."""
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(process.wait, 20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            await asyncio.to_thread(process.wait, 5)


# -- RabbitMQ ----------------------------------------------------------------------------------
class QueueConsumer:
    """Consumes the run's queue straight from RabbitMQ (not through the proxy)."""

    def __init__(self, queue: str, exchange: str) -> None:
        self.queue_name = queue
        self.exchange_name = exchange
        self.received: list[dict[str, Any]] = []  # {"message_id", "body"} in arrival order
        self._connection: Any = None
        self._queue: Any = None
        self._consumer_tag: str | None = None

    async def start(self) -> None:
        import aio_pika

        self._connection = await aio_pika.connect(
            f"amqp://guest:guest@{RABBITMQ[0]}:{RABBITMQ[1]}/"
        )
        channel = await self._connection.channel()
        await channel.set_qos(prefetch_count=500)
        exchange = await channel.declare_exchange(
            self.exchange_name, aio_pika.ExchangeType.FANOUT, durable=True
        )
        queue = await channel.declare_queue(self.queue_name, durable=True)
        await queue.bind(exchange, routing_key="")

        async def on_message(message: Any) -> None:
            headers = message.headers or {}
            self.received.append(
                {
                    "message_id": message.message_id,
                    "previous_id": headers.get(PREVIOUS_ID_HEADER),
                    "body": json.loads(message.body),
                }
            )
            await message.ack()

        self._queue = queue
        self._consumer_tag = await queue.consume(on_message)

    async def close(self) -> None:
        if self._connection is None:
            return
        if self._consumer_tag is not None:
            with contextlib.suppress(Exception):
                await self._queue.cancel(self._consumer_tag)
        channel = await self._connection.channel()
        with contextlib.suppress(Exception):
            await channel.queue_delete(self.queue_name)
        with contextlib.suppress(Exception):
            await channel.exchange_delete(self.exchange_name)
        await self._connection.close()


# -- the load ----------------------------------------------------------------------------------
async def client_loop(
    http: httpx.AsyncClient,
    servers: list[str],
    client: int,
    scenario: Scenario,
    conversation: str,
    t0: float,
    sent: list[Sent],
) -> None:
    for seq in range(scenario.messages):
        server = (client + seq) % len(servers)
        body = {
            "sender": conversation,
            "message": TEXTS[(client * 7 + seq) % len(TEXTS)],
            "metadata": {"bench": f"{client}:{seq}"},
        }
        started = time.monotonic()
        record = Sent(client, seq, conversation, server, started - t0, 0.0, None)
        try:
            answer = await http.post(servers[server] + WEBHOOK, json=body)
            record.status = answer.status_code
            payload = answer.json()
            if answer.status_code == 200:
                record.bot_texts = [m["text"] for m in payload if m.get("text") is not None]
            else:
                record.error = payload.get("reason") if isinstance(payload, dict) else "?"
        except (httpx.HTTPError, ValueError) as exc:
            record.error = type(exc).__name__
        record.seconds = time.monotonic() - started
        sent.append(record)
        if not record.acknowledged:
            await asyncio.sleep(scenario.pause_after_error)
        elif scenario.think_time:
            await asyncio.sleep(scenario.think_time)


async def outage(
    proxy: TcpProxy,
    at: float,
    duration: float,
    log: dict[str, float],
    t0: float,
    after: Callable[[], bool] | None = None,
) -> None:
    """Cuts `proxy` `at` seconds after `t0` (not before `after()` holds) for `duration`.

    The log holds the times the cut and the restore really happened, in seconds since t0:
    on a loaded machine a sleep ends late, and nominal times would put answers in the wrong
    outage.
    """
    await asyncio.sleep(max(0.0, at - (time.monotonic() - t0)))
    # A predicate over the answers so far, which no event marks: polled.
    while after is not None and not after():  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    await proxy.cut()
    log["cut_at"] = time.monotonic() - t0
    await asyncio.sleep(duration)
    await proxy.restore()
    log["restored_at"] = time.monotonic() - t0


# -- checks ------------------------------------------------------------------------------------
def check_conversation(events: list[dict[str, Any]], sent: list[Sent]) -> dict[str, int]:
    """Counts what went wrong in one conversation's stored events."""
    # A user message the bench did not send has no tag: None, kept apart from the tagged ones.
    positions: dict[str | None, list[int]] = defaultdict(list)
    interleaved = mismatched = overlapped = 0
    by_tag: dict[str | None, Sent] = {s.tag: s for s in sent}
    for i, event in enumerate(events):
        if event.get("event") != "user":
            continue
        # Two turns at once, each appending its events whole, leave no user message inside
        # the other's turn; but one that began before the last one ended has a user message
        # older than that turn's end (seen only when both read the tracker at once: one
        # that read it while the other wrote is not). Held one after the other (the lock
        # store), a turn reads what the last one stored and so starts after it ended (one
        # host's clock: the workers' and servers').
        if i and event.get("timestamp", 0) < events[i - 1].get("timestamp", 0):
            overlapped += 1
        tag = (event.get("metadata") or {}).get("bench")
        positions[tag].append(i)
        texts: list[str] = []
        closed = False
        for later in events[i + 1 :]:
            kind = later.get("event")
            if kind == "user":
                break
            if kind == "bot" and later.get("text") is not None:
                texts.append(later["text"])
            if kind == "action" and later.get("name") == "action_listen":
                closed = True
                break
        if not closed:
            interleaved += 1  # another user message before this one's turn ended
            continue
        mine = by_tag.get(tag)
        if mine is not None and mine.acknowledged and mine.bot_texts != texts:
            mismatched += 1  # the HTTP reply is not what the stored turn says
    # A conversation's first turns at once (its clients all start together) each found it
    # new and started a session of their own: the sessions after the first.
    starts = [e for e in events if e.get("event") == "action"]
    starts = [e for e in starts if e.get("name") == "action_session_start"]
    overlapped += max(0, len(starts) - 1)
    acked = [s for s in sent if s.acknowledged]
    lost = sum(1 for s in acked if s.tag not in positions)
    duplicated = sum(len(p) - 1 for p in positions.values() if len(p) > 1)
    out_of_order = 0
    per_client: dict[int, list[Sent]] = defaultdict(list)
    for s in sorted(sent, key=lambda s: s.seq):
        per_client[s.client].append(s)
    for messages in per_client.values():
        stored = [positions[s.tag][0] for s in messages if s.tag in positions]
        out_of_order += sum(1 for a, b in zip(stored, stored[1:], strict=False) if b < a)
    unacknowledged_stored = sum(1 for s in sent if not s.acknowledged and s.tag in positions)
    return {
        "lost": lost,
        "duplicated": duplicated,
        "interleaved": interleaved,
        "overlapped": overlapped,
        "reply_mismatch": mismatched,
        "out_of_order": out_of_order,
        "unacknowledged_stored": unacknowledged_stored,
    }


def check_broker(
    received: list[dict[str, Any]], stored: dict[str, list[dict[str, Any]]]
) -> dict[str, int]:
    """What the consumer got against what the database holds, per conversation: as the
    messages arrived (first copy of each id), and as `ConversationOrderer` hands them on."""
    orderer: ConversationOrderer[dict[str, Any]] = ConversationOrderer()
    seen: set[str] = set()
    redelivered = 0
    arrived: dict[str, list[str]] = defaultdict(list)
    ordered: dict[str, list[str]] = defaultdict(list)
    for message in received:
        body = dict(message["body"])
        sender = body.pop("sender_id")
        if message["message_id"] in seen:
            redelivered += 1
        else:
            seen.add(message["message_id"])
            arrived[sender].append(json.dumps(body, sort_keys=True))
        for out in orderer.add(message["message_id"], message["previous_id"], message["body"]):
            out = dict(out)
            ordered[out.pop("sender_id")].append(json.dumps(out, sort_keys=True))
    missing = extra = out_of_order = arrived_out_of_order = 0
    for sender, events in stored.items():
        expected = [json.dumps(e, sort_keys=True) for e in events]
        got = ordered.get(sender, [])
        missing += len(set(expected) - set(got))
        extra += len(set(got) - set(expected))
        if got != [x for x in expected if x in set(got)]:
            out_of_order += 1
        raw = arrived.get(sender, [])
        if raw != [x for x in expected if x in set(raw)]:
            arrived_out_of_order += 1
    return {
        "received": len(received),
        "redelivered_message_ids": redelivered,
        "missing": missing,
        "extra": extra,
        "duplicated": sum(len(v) - len(set(v)) for v in ordered.values()),
        "held_back": orderer.waiting,
        "conversations_out_of_order": out_of_order,
        "conversations_arrived_out_of_order": arrived_out_of_order,
    }


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


# -- one run -----------------------------------------------------------------------------------
async def run(
    scenario: Scenario, workdir: Path | None = None, model: Path | None = None
) -> dict[str, Any]:
    """Run the scenario end to end on `model` (by default the moodbot, trained for the run);
    returns the report (see `format_report`)."""
    for name, address in (("PostgreSQL", POSTGRES), ("Redis", REDIS)) + (
        (("RabbitMQ", RABBITMQ),) if scenario.rabbitmq else ()
    ):
        if not reachable(address):
            raise ConnectionError(f"{name} is not reachable at {address[0]}:{address[1]}")
    with contextlib.ExitStack() as stack:
        if workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bs_conc_")))
        if model is None:
            model = await asyncio.to_thread(train_moodbot, workdir / "models")
        async with fresh_postgres_database() as database:
            return await _run_with_database(scenario, workdir, model, database)
    raise AssertionError("unreachable")


async def _run_with_database(
    scenario: Scenario, workdir: Path, model: Path, database: str
) -> dict[str, Any]:
    run_id = uuid.uuid4().hex[:8]
    key_prefix = f"bsconc{run_id}"
    db_proxy = TcpProxy(POSTGRES)
    broker_proxy = TcpProxy(RABBITMQ) if scenario.rabbitmq else None
    if not scenario.db_down_at_start:
        await db_proxy.restore()
    if broker_proxy is not None:
        await broker_proxy.restore()
    store_config = {
        "type": "sql",
        "dialect": "postgresql",
        "url": "127.0.0.1",
        "port": POSTGRES[1],
        "username": "postgres",
        "db": database,
    }
    endpoints: dict[str, Any] = {
        "tracker_store": {**store_config, "port": db_proxy.port},
        "lock_store": {
            "type": "redis",
            "url": REDIS[0],
            "port": REDIS[1],
            "db": 1,
            "key_prefix": key_prefix,
        },
    }
    consumer = None
    if broker_proxy is not None:
        queue, exchange = f"bs_conc_{run_id}", f"bs-conc-{run_id}"
        endpoints["event_broker"] = {
            "type": "pika",
            "url": "127.0.0.1",
            "port": broker_proxy.port,
            "username": "guest",
            "password": "guest",
            "queues": [queue],
            "exchange_name": exchange,
            "retry_delay_in_seconds": 0.5,
        }
        consumer = QueueConsumer(queue, exchange)
        await consumer.start()
    endpoints_file = workdir / "endpoints.yml"
    endpoints_file.write_text(json.dumps(endpoints))  # JSON is YAML
    servers = [
        ServerProcess(model, endpoints_file, workdir / f"server{i}.log", scenario.workers)
        for i in range(scenario.servers)
    ]
    report: dict[str, Any] = {"scenario": asdict(scenario)}
    try:
        for server in servers:
            server.start()
        await asyncio.gather(*(s.wait_for("/health/live", 200, 90) for s in servers))
        if scenario.db_down_at_start:
            report["startup_without_db"] = await _startup_without_db(scenario, servers, db_proxy)
        await asyncio.gather(*(s.wait_for("/health/ready", 200, 60) for s in servers))
        report.update(await _load(scenario, servers, db_proxy, broker_proxy, run_id))
        sent: list[Sent] = report.pop("_sent")
        stored = await _read_conversations(store_config, {s.conversation for s in sent})
        report["checks"] = _sum_checks(stored, sent)
        if consumer is not None:
            report["broker"] = await _drain_broker(scenario, consumer, stored)
    finally:
        await asyncio.gather(*(server.stop() for server in servers))
        await db_proxy.cut()
        if broker_proxy is not None:
            await broker_proxy.cut()
        if consumer is not None:
            await consumer.close()
        await delete_redis_keys(key_prefix, db=1)
    report["machine"] = machine()
    return report


async def _startup_without_db(
    scenario: Scenario, servers: list[ServerProcess], proxy: TcpProxy
) -> dict[str, Any]:
    """The servers came up with the database away: not ready, then ready once it is back."""
    result: dict[str, Any] = {"ready_while_db_down": []}
    async with httpx.AsyncClient(timeout=5) as http:
        for server in servers:
            answer = await http.get(server.url + "/health/ready")
            result["ready_while_db_down"].append(answer.status_code)
        answer = await http.post(
            servers[0].url + WEBHOOK, json={"sender": "startup", "message": "hello"}
        )
        result["webhook_while_db_down"] = {"status": answer.status_code, "body": answer.json()}
    await asyncio.sleep(scenario.db_down_at_start)
    await proxy.restore()
    waits = await asyncio.gather(*(s.wait_for("/health/ready", 200, 60) for s in servers))
    result["ready_seconds_after_db_returned"] = max(waits)
    return result


async def _load(
    scenario: Scenario,
    servers: list[ServerProcess],
    db_proxy: TcpProxy,
    broker_proxy: TcpProxy | None,
    run_id: str,
) -> dict[str, Any]:
    sent: list[Sent] = []
    outages: dict[str, dict[str, float]] = {}
    limits = httpx.Limits(max_connections=scenario.clients * 2, max_keepalive_connections=None)
    async with httpx.AsyncClient(timeout=scenario.request_timeout, limits=limits) as http:
        t0 = time.monotonic()
        background = []
        if scenario.db_outage:
            outages["database"] = {}
            background.append(
                asyncio.create_task(outage(db_proxy, *scenario.db_outage, outages["database"], t0))
            )
        if scenario.broker_outage and broker_proxy is not None:
            outages["broker"] = {}
            background.append(
                asyncio.create_task(
                    outage(
                        broker_proxy,
                        *scenario.broker_outage,
                        outages["broker"],
                        t0,
                        # One outage at a time: the broker goes once the database is back
                        # and a message sent after its return was answered.
                        after=lambda: _answered_since(sent, outages.get("database")),
                    )
                )
            )
        await asyncio.gather(
            *(
                client_loop(
                    http,
                    [s.url for s in servers],
                    c,
                    scenario,
                    f"conv-{run_id}-{c % scenario.conversations}",
                    t0,
                    sent,
                )
                for c in range(scenario.clients)
            )
        )
        wall = time.monotonic() - t0
        for task in background:
            await task
    acked = [s for s in sent if s.acknowledged]
    latencies = [s.seconds * 1000 for s in acked]
    errors: dict[str, int] = defaultdict(int)
    for s in sent:
        if not s.acknowledged:
            errors[f"{s.status or 'no answer'} {s.error or ''}".strip()] += 1
    result: dict[str, Any] = {
        "_sent": sent,
        "messages": len(sent),
        "acknowledged": len(acked),
        "seconds": round(wall, 2),
        "throughput_per_s": round(len(acked) / wall, 1),
        "latency_ms": {
            "p50": round(percentile(latencies, 50), 1),
            "p95": round(percentile(latencies, 95), 1),
            "p99": round(percentile(latencies, 99), 1),
            "max": round(max(latencies, default=float("nan")), 1),
        },
        "errors": dict(errors),
    }
    if "database" in outages:
        result["database_outage"] = _outage_effects(sent, outages["database"])
    if "broker" in outages:
        # Answers to messages sent while the database was away belong to that outage.
        since = outages.get("database", {}).get("restored_at", 0.0)
        later = [s for s in sent if s.started >= since]
        result["broker_outage"] = _outage_effects(later, outages["broker"])
    return result


def _answered_since(sent: list[Sent], window: dict[str, float] | None) -> bool:
    """True once no outage is running in `window`, or a message sent after it got a 200."""
    if window is None:
        return True
    if "restored_at" not in window:
        return False
    return any(s.acknowledged and s.started >= window["restored_at"] for s in sent)


def _outage_effects(sent: list[Sent], window: dict[str, float]) -> dict[str, Any]:
    """Answers during an outage, and how soon after it 200s came back."""
    cut, restored = window["cut_at"], window["restored_at"]
    during = [s for s in sent if cut <= s.started + s.seconds and s.started <= restored]
    statuses: dict[str, int] = defaultdict(int)
    for s in during:
        statuses[str(s.status or s.error)] += 1
    after = [
        s.started + s.seconds - restored for s in sent if s.acknowledged and s.started >= restored
    ]
    return {
        **window,
        "answers_during": dict(statuses),
        "slowest_answer_during_s": round(max((s.seconds for s in during), default=0.0), 2),
        "first_200_after_restore_s": round(min(after), 2) if after else None,
    }


async def _read_conversations(
    store_config: dict[str, Any], conversations: set[str]
) -> dict[str, list[dict[str, Any]]]:
    from server.trackers.factory import create_tracker_store

    store = create_tracker_store(store_config)
    try:
        return {c: (await store.load_all(c)) or [] for c in sorted(conversations)}
    finally:
        await store.close()


def _sum_checks(stored: dict[str, list[dict[str, Any]]], sent: list[Sent]) -> dict[str, int]:
    totals: dict[str, int] = defaultdict(int)
    for conversation, events in stored.items():
        mine = [s for s in sent if s.conversation == conversation]
        for key, value in check_conversation(events, mine).items():
            totals[key] += value
    totals["stored_events"] = sum(len(e) for e in stored.values())
    return dict(totals)


async def _drain_broker(
    scenario: Scenario, consumer: QueueConsumer, stored: dict[str, list[dict[str, Any]]]
) -> dict[str, Any]:
    """Wait until the consumer has every stored event (or the timeout), then compare."""
    expected = sum(len(e) for e in stored.values())
    started = time.monotonic()
    while time.monotonic() - started < scenario.broker_drain_timeout:
        if len({m["message_id"] for m in consumer.received}) >= expected:
            break
        await asyncio.sleep(0.2)
    await asyncio.sleep(0.5)  # late redeliveries
    result: dict[str, Any] = check_broker(consumer.received, stored)
    result["expected"] = expected
    result["drain_seconds"] = round(time.monotonic() - started, 2)
    return result


def machine() -> dict[str, Any]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
    }


def format_report(report: dict[str, Any]) -> str:
    s = report["scenario"]
    checks = report.get("checks", {})
    lat = report.get("latency_ms", {})
    rows = [
        ("servers x workers", f"{s['servers']} x {s['workers']}"),
        ("clients / conversations", f"{s['clients']} / {s['conversations']}"),
        ("messages sent / answered 200", f"{report['messages']} / {report['acknowledged']}"),
        ("wall time", f"{report['seconds']} s"),
        ("throughput", f"{report['throughput_per_s']} msg/s"),
        ("latency p50 / p95 / p99", f"{lat['p50']} / {lat['p95']} / {lat['p99']} ms"),
        ("errors", ", ".join(f"{k}: {v}" for k, v in report["errors"].items()) or "0"),
        ("lost (answered 200, not stored)", checks.get("lost")),
        ("duplicated", checks.get("duplicated")),
        ("interleaved", checks.get("interleaved")),
        ("overlapped (a turn began before the last one ended)", checks.get("overlapped")),
        ("reply differs from stored turn", checks.get("reply_mismatch")),
        ("out of order", checks.get("out_of_order")),
        ("not answered 200 but stored", checks.get("unacknowledged_stored")),
    ]
    for name in ("database_outage", "broker_outage"):
        if name in report:
            o = report[name]
            rows.append((f"{name}: answers during", json.dumps(o["answers_during"])))
            rows.append((f"{name}: first 200 after restore", f"{o['first_200_after_restore_s']} s"))
    if "startup_without_db" in report:
        st = report["startup_without_db"]
        rows.append(("ready while DB down", str(st["ready_while_db_down"])))
        rows.append(("ready after DB returned", f"{st['ready_seconds_after_db_returned']:.2f} s"))
    if "broker" in report:
        b = report["broker"]
        rows.append(("broker: events expected / received", f"{b['expected']} / {b['received']}"))
        rows.append(
            (
                "broker: redelivered ids / missing / extra",
                f"{b['redelivered_message_ids']} / {b['missing']} / {b['extra']}",
            )
        )
        rows.append(
            (
                "broker: conversations out of order, arrived / after ordering",
                f"{b['conversations_arrived_out_of_order']} / {b['conversations_out_of_order']}",
            )
        )
        rows.append(("broker: held back (predecessor missing)", b["held_back"]))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)


def _outage_arg(value: str) -> tuple[float, float]:
    at, duration = value.split(",")
    return float(at), float(duration)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="10 clients x 20 messages")
    parser.add_argument("--clients", type=int)
    parser.add_argument("--conversations", type=int)
    parser.add_argument("--messages", type=int, help="per client")
    parser.add_argument("--servers", type=int, default=2)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--rabbitmq", action="store_true", help="publish to RabbitMQ and check")
    parser.add_argument("--db-down-at-start", type=float, default=0.0, metavar="SECONDS")
    parser.add_argument("--db-outage", type=_outage_arg, metavar="AT,FOR")
    parser.add_argument("--broker-outage", type=_outage_arg, metavar="AT,FOR")
    parser.add_argument("--out", default=str(ROOT / "bench/results/concurrency.json"))
    args = parser.parse_args(argv)
    scenario = Scenario.smoke() if args.smoke else Scenario()
    for name in ("clients", "conversations", "messages"):
        if getattr(args, name) is not None:
            setattr(scenario, name, getattr(args, name))
    scenario.servers, scenario.workers = args.servers, args.workers
    scenario.rabbitmq = args.rabbitmq or bool(args.broker_outage)
    scenario.db_down_at_start = args.db_down_at_start
    scenario.db_outage, scenario.broker_outage = args.db_outage, args.broker_outage
    report = asyncio.run(run(scenario))
    print(format_report(report))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    checks = report["checks"]
    ok = not any(
        checks[k]
        for k in (
            "lost",
            "duplicated",
            "interleaved",
            "overlapped",
            "reply_mismatch",
            "out_of_order",
        )
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
