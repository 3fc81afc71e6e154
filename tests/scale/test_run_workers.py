"""`botserver run --workers N`: refused with a process-local lock or tracker store, and
correct with Redis locks and PostgreSQL (turns of one conversation never overlap)."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bench.concurrency import Scenario, format_report, free_port, run
from cli import build_parser, main
from server.api.runner import SAID_ENV, SPEC_ENV, spec_from_args, workers_to_run
from tests.cli.botserver_process import start_botserver
from tests.logging_state import logging_restored
from tests.scale.scale_services import require, sqlite_and_redis_endpoints

pytestmark = pytest.mark.timeout(120)


def run_workers(
    tmp_path: Path, endpoints: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> tuple[int, str]:
    """`botserver run --workers 2` in this process: the checks fail before anything starts."""
    path = tmp_path / "endpoints.yml"
    path.write_text(json.dumps(endpoints))
    # --enable-api: a model could come (else the missing one would be said first).
    args = ["run", "--workers", "2", "--endpoints", str(path), "-m", str(tmp_path / "none")]
    args.append("--enable-api")
    with logging_restored():  # main() configures logging for the process
        code = main([*args, "-p", str(free_port()), "--quiet"])
    return code, capsys.readouterr().err


def test_workers_refuse_the_in_memory_lock_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sql = {"type": "sql", "dialect": "postgresql", "url": "127.0.0.1", "db": "test"}
    code, stderr = run_workers(tmp_path, {"tracker_store": sql}, capsys)
    assert code != 0
    assert "--workers 2 needs a lock store shared by the processes" in stderr
    assert "lock_store" in stderr


def test_workers_refuse_the_in_memory_tracker_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    endpoints = {"tracker_store": {"type": "in_memory"}, "lock_store": {"type": "redis"}}
    code, stderr = run_workers(tmp_path, endpoints, capsys)
    assert code != 0
    assert "needs a tracker store shared by the processes" in stderr


def test_two_workers_with_redis_locks_and_postgresql(
    tmp_path: Path, moodbot_copy: Callable[[str], Path]
) -> None:
    require("PostgreSQL", "Redis")
    scenario = Scenario(clients=6, conversations=2, messages=10, servers=1, workers=2)
    # The process's moodbot: the run's own training cost 2.3 s of CPU.
    report = asyncio.run(run(scenario, tmp_path, moodbot_copy("workers-model")))
    print(format_report(report))
    assert report["acknowledged"] == report["messages"] == 60, report["errors"]
    checks = report["checks"]
    assert checks["lost"] == checks["duplicated"] == checks["interleaved"] == 0
    assert checks["reply_mismatch"] == checks["out_of_order"] == 0
    # Three clients a conversation, starting together: without the Redis lock their turns
    # ran at once (in one worker or across both), each appending whole, none interleaved,
    # and their first turns each started a session.
    assert checks["overlapped"] == 0, format_report(report)


def test_workers_on_sqlite_start_with_a_warning_to_use_postgresql(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Two workers on one SQLite file are correct but no faster than one (docs/persistence.md):
    the check says so and lets them start; on PostgreSQL it says nothing."""
    redis_lock = {"type": "redis", "url": "127.0.0.1", "port": 6379}
    sqlite = {"type": "sql", "dialect": "sqlite", "db": str(tmp_path / "t.db")}
    with caplog.at_level("WARNING", logger="server.api.runner"):
        assert workers_for(tmp_path, ["--workers", "2"], redis_lock, sqlite) == 2
    assert "--workers 2 with the SQLite tracker store" in caplog.text
    assert "use PostgreSQL" in caplog.text

    caplog.clear()
    postgres = {"type": "sql", "dialect": "postgresql", "url": "127.0.0.1", "db": "test"}
    with caplog.at_level("WARNING", logger="server.api.runner"):
        assert workers_for(tmp_path, ["--workers", "2"], redis_lock, postgres) == 2
    assert caplog.text == ""


def workers_for(tmp_path: Path, flags: list[str], lock: Any, tracker: Any) -> int:
    """How many processes `botserver run <flags>` runs with these stores."""
    path = tmp_path / "endpoints.yml"
    path.write_text(json.dumps({"lock_store": lock, "tracker_store": tracker}))
    args = build_parser().parse_args(["run", "--endpoints", str(path), *flags])
    return workers_to_run(args, spec_from_args(args))[0]


@pytest.mark.parametrize("asked_by", ["--workers", "SANIC_WORKERS"])
def test_workers_build_each_store_once_in_the_parent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, asked_by: str
) -> None:
    """The parent of `--workers 2` (or SANIC_WORKERS=2) built its stores to check that the
    workers can share them, then again to check every other setting: two or three Redis
    clients, SQL engines or DynamoDB clients (boto3's take tens of milliseconds) where one
    does, each saying its warnings again."""
    from server.api import workers
    from server.trackers.redis_lock import RedisLockStore
    from server.trackers.sql_store import SqlTrackerStore

    built: Counter[str] = Counter()
    for store in (RedisLockStore, SqlTrackerStore):
        made = store.__init__

        def counting(self: Any, *args: Any, _made: Any = made, **kwargs: Any) -> None:
            built[type(self).__name__] += 1
            _made(self, *args, **kwargs)

        monkeypatch.setattr(store, "__init__", counting)
    started: list[int] = []

    def serve_workers(config: Any, _up: Any, *_given: Any) -> int:
        started.append(config.workers)
        return 0

    monkeypatch.setattr(workers, "serve_workers", serve_workers)
    for name in (SPEC_ENV, SAID_ENV):  # set for the workers: gone after the test
        monkeypatch.setenv(name, "")
    endpoints = {
        "lock_store": {"type": "redis", "url": "127.0.0.1", "port": 6379},
        "tracker_store": {"type": "sql", "dialect": "sqlite", "db": str(tmp_path / "t.db")},
    }
    (tmp_path / "endpoints.yml").write_text(json.dumps(endpoints))
    args = ["run", "--endpoints", str(tmp_path / "endpoints.yml"), "--enable-api"]
    if asked_by == "--workers":
        args += ["--workers", "2"]
    else:
        monkeypatch.setenv("SANIC_WORKERS", "2")
    with logging_restored():
        code = main([*args, "-i", "127.0.0.1", "-p", str(free_port()), "--quiet"])
    assert (code, started) == (0, [2])
    assert built == {"RedisLockStore": 1, "SqlTrackerStore": 1}


def test_workers_refuse_an_in_memory_sqlite_tracker_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each worker gets a SQLite database of its own in memory: a conversation's turns in one
    worker are not in the other's, as with the in-memory store."""
    sqlite = {"type": "sql", "dialect": "sqlite", "db": ":memory:"}
    endpoints = {"tracker_store": sqlite, "lock_store": {"type": "redis"}}
    code, stderr = run_workers(tmp_path, endpoints, capsys)
    assert code != 0
    assert "--workers 2 needs a tracker store shared by the processes" in stderr
    assert "in-memory SQLite database" in stderr


def test_sanic_workers_run_one_process_on_an_in_memory_sqlite_tracker_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("SANIC_WORKERS", "2")
    redis_lock = {"type": "redis", "url": "127.0.0.1", "port": 6379}
    sqlite = {"type": "sql", "dialect": "sqlite", "db": ":memory:"}
    with caplog.at_level("WARNING", logger="server.api.runner"):
        assert workers_for(tmp_path, [], redis_lock, sqlite) == 1
    assert "SANIC_WORKERS=2: one server process runs" in caplog.text
    assert "in-memory SQLite database" in caplog.text


def test_a_worker_that_cannot_start_stops_the_run_with_its_reason_and_no_traceback(
    tmp_path: Path,
) -> None:
    """A syslog server (TCP) that takes the parent's connection, then stops listening before
    the workers connect: each worker says why in one line, and the parent stops with exit 1
    and "a worker did not start". Before, each worker printed a 40-line traceback ending in
    ConnectionRefusedError."""
    endpoints = sqlite_and_redis_endpoints(tmp_path)
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        syslog_port = listener.getsockname()[1]
        connections: list[socket.socket] = []

        def take_the_parents_connection_only() -> None:
            connection, _ = listener.accept()
            connections.append(connection)  # kept open: the parent's lines go on arriving
            listener.close()

        thread = threading.Thread(target=take_the_parents_connection_only, daemon=True)
        thread.start()
        syslog = ["--use-syslog", "--syslog-address", "127.0.0.1", "--syslog-port"]
        syslog += [str(syslog_port), "--syslog-protocol", "TCP"]
        args = ["--enable-api", "--workers", "2", "--endpoints", str(endpoints), *syslog]
        server = start_botserver(args, tmp_path, tmp_path)
        try:
            code = server.process.wait(timeout=90)
        finally:
            server.stop()
            for connection in connections:
                connection.close()
    text = server.text()
    assert code == 1, text
    refused = f"cannot start: --use-syslog (TCP 127.0.0.1:{syslog_port}): Connection refused"
    assert refused in text, text
    assert "exited with code 1 before it served; stopping" in text
    assert text.rstrip().endswith("error: a worker did not start; see the log above"), text
    assert "Traceback" not in text
    assert "is up on" not in text
