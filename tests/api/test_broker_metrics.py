"""/metrics shows the event broker's figures: events queued, connected, blocked, and the totals
of events published and dropped and of delivery attempts that failed (real brokers)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from bench.tcp_proxy import TcpProxy
from server.api import metrics as metrics_module
from server.api.metrics import ServerMetrics
from server.brokers.file import FileEventBroker
from server.brokers.rabbitmq import RabbitMQEventBroker
from server.brokers.sql import SqlEventBroker
from tests.brokers.test_rabbitmq_broker import broker_config as rabbit_config
from tests.brokers.test_rabbitmq_broker import consume as rabbit_consume
from tests.trackers.persistence_fixtures import (
    POSTGRES,
    RABBITMQ,
    postgres_database,
)

SLEEP = "import time; time.sleep(60)"  # a process that runs on


def figures(metrics: ServerMetrics, peers: list | None = None) -> dict[str, float]:
    """The broker's samples of a scrape, by name."""
    text = metrics.render(peers or [], own=peers is None).decode()
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name.startswith("botserver_event_broker_")
        and not sample.name.endswith("_created")
    }


def events(sender: str, count: int) -> list[dict]:
    return [{"event": "bot", "timestamp": float(i), "text": f"{sender} {i}"} for i in range(count)]


async def until(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "not within the time"
        await asyncio.sleep(0.02)


async def test_a_postgresql_outage_shows_as_queued_events_failed_attempts_and_disconnected() -> (
    None
):
    """An operator alerts on a broker that stopped taking events: while PostgreSQL cannot be
    reached the events wait (queued), attempts fail and the broker shows as not connected;
    once it is back they are published and the queue is empty again."""
    proxy = TcpProxy(POSTGRES)
    async with postgres_database() as config:
        await proxy.restore()
        broker = SqlEventBroker(
            {**config, "url": "127.0.0.1", "port": proxy.port, "retry_delay_in_seconds": 0.05}
        )
        metrics = ServerMetrics()
        metrics.watch_broker(broker)
        try:
            await broker.publish("ana", events("ana", 3))
            assert await broker.flush(10)
            shown = figures(metrics)
            assert shown == {
                "botserver_event_broker_queued_events": 0.0,
                "botserver_event_broker_connected": 1.0,
                "botserver_event_broker_blocked": 0.0,
                "botserver_event_broker_published_total": 3.0,
                "botserver_event_broker_dropped_total": 0.0,
                "botserver_event_broker_failed_attempts_total": 0.0,
            }
            await proxy.cut()
            await broker.publish("bob", events("bob", 4))
            failed = "botserver_event_broker_failed_attempts_total"
            await until(lambda: figures(metrics)[failed] >= 2)
            down = figures(metrics)
            assert down["botserver_event_broker_queued_events"] == 4
            assert down["botserver_event_broker_connected"] == 0
            assert down["botserver_event_broker_published_total"] == 3
            await proxy.restore()
            assert await broker.flush(10)
            back = figures(metrics)
            assert back["botserver_event_broker_queued_events"] == 0
            assert back["botserver_event_broker_connected"] == 1
            assert back["botserver_event_broker_published_total"] == 7
            assert back["botserver_event_broker_dropped_total"] == 0
        finally:
            await broker.close()
            await proxy.cut()


async def test_events_dropped_for_room_are_counted_apart_from_those_published(
    tmp_path: Path,
) -> None:
    """A queue full while the database is unreachable drops its oldest events: /metrics counts
    them as dropped, never as published."""
    proxy = TcpProxy(POSTGRES)
    async with postgres_database() as config:
        broker = SqlEventBroker(
            {**config, "url": "127.0.0.1", "port": proxy.port, "retry_delay_in_seconds": 0.05}
        )
        broker._delivery._max_pending = 5
        metrics = ServerMetrics()
        metrics.watch_broker(broker)
        try:
            await broker.publish("ana", events("ana", 8))  # the proxy is not up: refused
            await proxy.restore()
            assert await broker.flush(10)
            shown = figures(metrics)
        finally:
            await broker.close()
            await proxy.cut()
    assert shown["botserver_event_broker_dropped_total"] == 3
    assert shown["botserver_event_broker_published_total"] == 5
    assert shown["botserver_event_broker_queued_events"] == 0


async def test_workers_add_up_queued_events_and_counters_and_forget_a_dead_workers_state(
    tmp_path: Path, monkeypatch
) -> None:
    """With `--workers N` a scrape shows all the workers: events queued and the counters add
    up, the broker is connected while every worker's is. A worker that died leaves its last
    snapshot: its counters still count, its queue and connection no longer do."""
    brokers = [FileEventBroker({"path": str(tmp_path / f"{n}.log")}) for n in range(2)]
    workers = [ServerMetrics() for _ in brokers]
    for metrics, broker in zip(workers, brokers, strict=True):
        metrics.watch_broker(broker)
    try:
        await brokers[0].publish("ana", events("ana", 2))
        await brokers[1].publish("bob", events("bob", 3))
        assert await brokers[0].flush(10) and await brokers[1].flush(10)
        (tmp_path / "0.log").unlink()
        (tmp_path / "0.log").mkdir()  # the file broker cannot write there now
        await brokers[0].publish("ana", events("cy", 4))
        await until(lambda: brokers[0].figures()["failed"] >= 1)
        snapshots = [json.loads(json.dumps(metrics.snapshot())) for metrics in workers]
        both = figures(workers[1], snapshots)
        assert both["botserver_event_broker_published_total"] == 5
        assert both["botserver_event_broker_queued_events"] == 4
        assert both["botserver_event_broker_connected"] == 0  # one worker's is not
        assert both["botserver_event_broker_blocked"] == 0
        # Worker 0 died: its snapshot stays, and goes stale.
        monkeypatch.setattr(metrics_module.time, "time", lambda: snapshots[0]["_written"] + 60)
        later = figures(workers[1], [snapshots[0], workers[1].snapshot()])
        assert later["botserver_event_broker_published_total"] == 5
        assert later["botserver_event_broker_queued_events"] == 0
        assert later["botserver_event_broker_connected"] == 1
    finally:
        (tmp_path / "0.log").rmdir()
        for broker in brokers:
            await broker.close()


async def test_a_rabbitmq_outage_mid_run_never_takes_the_published_total_down(
    rabbitmq_names: dict[str, str],
) -> None:
    """Prometheus reads a counter that went down as a restart: while RabbitMQ drops the
    connection mid-run (events in flight, unconfirmed, sent again once it is back) the
    published total only grows, the broker shows as not connected as /health/ready says,
    and at the end every event is counted once."""
    proxy = TcpProxy(RABBITMQ)
    await proxy.restore()
    broker = RabbitMQEventBroker(rabbit_config(rabbitmq_names, port=proxy.port))
    metrics = ServerMetrics()
    metrics.watch_broker(broker)
    published = "botserver_event_broker_published_total"
    seen: list[float] = []
    connected: list[tuple[float, str]] = []
    try:
        await broker.start(timeout=5)
        for n in range(300):
            await broker.publish(f"c{n % 7}", events(f"c{n}", 1))
            shown = figures(metrics)
            seen.append(shown[published])
            connected.append((shown["botserver_event_broker_connected"], broker.health()))
            if n == 100:
                await proxy.cut()  # RabbitMQ goes away with events in flight
            if n == 200:
                await proxy.restore()
            await asyncio.sleep(0)
        assert await broker.flush(20)
        seen.append(figures(metrics)[published])
    finally:
        await broker.close()
        await proxy.cut()
    assert all(a <= b for a, b in zip(seen, seen[1:], strict=False)), seen
    assert seen[-1] == 300
    assert len(set(seen[102:200])) == 1  # none published while RabbitMQ is away
    assert (0.0, "unavailable") in connected
    assert all((value == 1.0) == (health != "unavailable") for value, health in connected)
    received = await rabbit_consume(rabbitmq_names["queue"], expected=300, timeout=20)
    assert len({message.body for message in received}) == 300


async def test_a_worker_late_with_its_snapshot_still_counts_its_queue_until_it_dies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker whose snapshot is older than the freshness window (its event loop or its
    file-writing threads busy) still holds the events it last showed queued: the sum keeps
    them, and the broker is still not connected for it, until that process is gone."""
    late = FileEventBroker({"path": str(tmp_path / "late")})
    (tmp_path / "late").unlink(missing_ok=True)
    (tmp_path / "late").mkdir()  # the file broker cannot write there
    metrics, here = ServerMetrics(), ServerMetrics()
    metrics.watch_broker(late)
    here.watch_broker(FileEventBroker({"path": str(tmp_path / "here.log")}))
    worker = await asyncio.create_subprocess_exec(sys.executable, "-c", SLEEP)
    try:
        await late.publish("ana", events("ana", 4))
        await until(lambda: late.figures()["failed"] >= 1)
        snapshot = json.loads(json.dumps(metrics.snapshot()))
        snapshot["_pid"] = worker.pid
        # A minute later, the worker has written nothing since.
        later = snapshot["_written"] + 60
        monkeypatch.setattr(metrics_module.time, "time", lambda: later)
        busy = figures(here, [snapshot, here.snapshot()])
        assert busy["botserver_event_broker_queued_events"] == 4
        assert busy["botserver_event_broker_connected"] == 0
        worker.kill()
        await worker.wait()
        gone = figures(here, [snapshot, here.snapshot()])
        assert gone["botserver_event_broker_queued_events"] == 0
        assert gone["botserver_event_broker_connected"] == 1
        # A process started after the snapshot was written (one that got the dead worker's
        # pid since) is not that worker.
        stranger = await asyncio.create_subprocess_exec(sys.executable, "-c", SLEEP)
        try:
            # (The snapshot a few seconds older: /proc tells a start to about a second.)
            snapshot.update(_pid=stranger.pid, _written=snapshot["_written"] - 5)
            reused = figures(here, [snapshot, here.snapshot()])
        finally:
            stranger.kill()
            await stranger.wait()
        assert reused["botserver_event_broker_queued_events"] == 0
    finally:
        with contextlib.suppress(ProcessLookupError):
            worker.kill()
        await worker.wait()
        await late.close()
        (tmp_path / "late").rmdir()
