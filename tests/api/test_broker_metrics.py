"""/metrics shows the event broker's figures: events queued, connected, blocked, and the totals
of events published and dropped and of delivery attempts that failed (real brokers)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from bench.tcp_proxy import TcpProxy
from server.api import metrics as metrics_module
from server.api.metrics import ServerMetrics
from server.brokers.file import FileEventBroker
from server.brokers.sql import SqlEventBroker
from tests.trackers.persistence_fixtures import POSTGRES, postgres_database


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
