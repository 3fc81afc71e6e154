"""Every benchmark's smoke mode runs (through bench/run_all.py) and writes its JSON."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.shared_data import MOODBOT

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(120)
@pytest.mark.skipif(not MOODBOT.exists(), reason="the shared bots are not on this machine")
def test_the_smoke_suite_runs_each_benchmark_asked_for(
    tmp_path: Path, moodbot_copy: Callable[[str], Path]
) -> None:
    # The session's moodbot model is served: train_bots trains one, which is enough.
    # The concurrency step (two servers on PostgreSQL and Redis, 200 messages: a third of
    # this test's time) is run with its smoke command line, RabbitMQ added, and its report
    # checked by tests/scale/test_concurrency_smoke.py.
    others = "http_turns,train_bots,model_load,long_conversation"
    model = moodbot_copy("bench-model")
    # `--model` relative to where run_all is started from, not to the repository (the
    # benchmarks' own working directory).
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench/run_all.py"), "--smoke", "--only", others]
        + ["--results", str(tmp_path), "--model", model.name],
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
        cwd=model.parent,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    steps = json.loads((tmp_path / "run_all.json").read_text())["steps"]
    assert set(steps) == set(others.split(","))
    ran = [name for name, step in steps.items() if step["status"] == "ok"]
    for name in ran:
        assert (tmp_path / f"{name}.json").exists(), name

    turns = json.loads((tmp_path / "http_turns.json").read_text())
    for target in ("bare", "sqlite"):
        point = turns["targets"][target]["points"]["10"]
        assert point["requests"] > 0 and point["errors"] == 0, (target, point)
    assert turns["targets"]["sqlite"]["rss_after_mb"] > 0

    trained = json.loads((tmp_path / "train_bots.json").read_text())
    assert trained["bots"]["moodbot"]["total_s_median"] > 0


@pytest.mark.parametrize(
    ("script", "content", "said"),
    [
        ("run_all.py", None, "does not exist"),
        ("run_all.py", b"not a model", "corrupt or not a gzip-compressed tar"),
        ("http_turns.py", None, "does not exist"),
        ("turn_profile.py", None, "does not exist"),
        ("http_callgrind.py", b"not a model", "corrupt"),
        ("outage_log.py", None, "does not exist"),
    ],
)
def test_a_model_the_benchmarks_cannot_serve_is_refused_before_any_runs(
    tmp_path: Path,
    script: str,
    content: bytes | None,
    said: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Before, run_all ran every step on a missing or corrupt `--model` (http_turns then
    measured a server without a model, its numbers 'ok'; model_load failed); exit 2 now,
    naming the archive and what is wrong with it, with nothing measured.

    Each script's `main` with its command line, in this process: the refusal is argparse's,
    before anything runs (a Python start for each was 0.3 s of CPU, nine tenths of a case)."""
    model = tmp_path / "moodbot.tar.gz"
    if content is not None:
        model.write_bytes(content)
    results = str(tmp_path / "results")
    others = {
        "run_all.py": ["--smoke", "--only", "model_load", "--results", results],
        "http_turns.py": ["--smoke", "--out", results],
    }
    argv = [str(ROOT / "bench" / script), "--model", str(model), *others.get(script, [])]
    monkeypatch.setattr(sys, "argv", argv)
    monkeypatch.setattr(sys, "path", list(sys.path))  # what a script adds to it goes after
    main = importlib.import_module(f"bench.{script.removesuffix('.py')}").main
    with pytest.raises(SystemExit) as exited:
        main()
    out, err = capsys.readouterr()
    assert exited.value.code == 2, out + err
    assert "argument --model: " in err and said in err, err
    assert model.name in err
    assert "Traceback" not in err
    assert out == ""
    assert not Path(results).exists()  # nothing measured


def test_the_python_load_generator_measures_a_live_server(tmp_path: Path) -> None:
    """The client used where wrk is not installed."""
    from bench import http_turns

    with http_turns.serve("bare_app", {}, 1, tmp_path, "bare") as server:
        point = http_turns.run_python(server.url, "bare", 4, 0.5, "smoke")
    assert point["requests"] > 0 and point["errors"] == 0
    assert 0 < point["p50_ms"] <= point["p99_ms"]


def test_the_cpu_window_tells_each_workers_share_of_a_two_worker_run(tmp_path: Path) -> None:
    """A run where one worker got every connection measures one worker: the shares show it."""
    from bench import http_turns

    with http_turns.serve("bare_app", {}, 2, tmp_path, "bare") as server:
        assert len(http_turns.uvicorn_workers(server.process.pid)) == 2
        window = http_turns.CpuWindow(server.process.pid)
        http_turns.run_python(server.url, "bare", 8, 0.5, "shares")  # 1 s before: 2 CPU-s
        shares = window.worker_shares()
    assert len(shares) == 2 and shares[0] >= shares[1] >= 0
    assert abs(sum(shares) - 1) <= 0.02


@pytest.mark.timeout(120)
@pytest.mark.skipif(not MOODBOT.exists(), reason="the shared bots are not on this machine")
def test_the_turn_profile_runs_the_workers_stores_in_process(tmp_path: Path) -> None:
    """`--store postgresql --lock redis`: the configuration of the workers benchmark, with
    its round trips counted; its own database is dropped after the run."""
    import asyncpg

    from tests.trackers.persistence_fixtures import POSTGRES, REDIS, require_service

    require_service("PostgreSQL", POSTGRES)
    require_service("Redis", REDIS)
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench/turn_profile.py"),
            "--store",
            "postgresql",
            "--lock",
            "redis",
            "--turns",
            "60",
            "--warmup",
            "20",
            "--concurrency",
            "3",
            "--round-trips",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert (result["turns"], result["errors"]) == (60, 0)
    counts = result["round_trips"]
    # Each turn locks, reads and appends: a few conversations at a time share few batches.
    assert 0 < counts["redis_round_trips_per_turn"] <= 2
    assert counts["redis_commands_per_turn"] == 2  # an acquire and a release
    assert 0 < counts["pg_statements_per_turn"] <= 2

    async def databases() -> list[str]:
        conn = await asyncpg.connect(
            host=POSTGRES[0], port=POSTGRES[1], user="postgres", database="test"
        )
        try:
            rows = await conn.fetch("SELECT datname FROM pg_database")
        finally:
            await conn.close()
        return [row[0] for row in rows]

    assert result["pg_database"] not in asyncio.run(databases())


def test_the_workers_counts_tell_the_turns_that_waited_for_a_conversation_lock() -> None:
    """The workers run's Redis counts: round trips (socket reads) and the turns that found
    their conversation's lease taken and waited in its line (none, in the benchmark)."""
    from bench import http_turns
    from server.trackers.redis_lock import RedisLockStore
    from tests.trackers.persistence_fixtures import REDIS, require_service

    require_service("Redis", REDIS)

    async def two_turns_of_one_conversation() -> None:
        store = RedisLockStore({"url": REDIS[0], "port": REDIS[1], "key_prefix": "benchwaits"})

        async def second_turn() -> None:
            async with store.lock("one"):
                pass

        try:
            async with store.lock("one"):
                second = asyncio.ensure_future(second_turn())
                await asyncio.sleep(0.05)  # it finds the lease taken, and queues
            await second
        finally:
            await store.close()

    before = http_turns.service_counters()
    asyncio.run(two_turns_of_one_conversation())
    after = http_turns.service_counters()
    assert after["lock_waits"] - before["lock_waits"] >= 1
    assert after["redis_reads"] - before["redis_reads"] >= 3  # acquire, acquire, release...


@contextlib.contextmanager
def _recording_endpoint(reply: bytes) -> Iterator[tuple[str, list[dict[str, str]]]]:
    """An HTTP/1.1 endpoint answering every POST with `reply`: its URL, and the JSON bodies it
    received."""
    received: list[dict[str, str]] = []
    answer = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while head := await reader.readuntil(b"\r\n\r\n"):
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                received.append(json.loads(await reader.readexactly(length)))
                writer.write(answer % (len(reply), reply))
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    loop = asyncio.new_event_loop()
    server = loop.run_until_complete(asyncio.start_server(handle, "127.0.0.1", 0))
    port = server.sockets[0].getsockname()[1]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    async def shut() -> None:
        # Connections still open end here: a task left pending was reported at exit.
        server.close()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    try:
        yield f"http://127.0.0.1:{port}", received
    finally:
        asyncio.run_coroutine_threadsafe(shut(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


@pytest.mark.timeout(60)
def test_wrk_sends_the_bare_endpoint_the_conversations_it_sends_the_server(tmp_path: Path) -> None:
    """The bare endpoint gets the server's load: each sender's messages in its conversation's
    order (before, a new sender every request), its replies read as the server's are."""
    from bench import http_turns

    if not http_turns.wrk_available():
        pytest.skip("wrk is not installed")
    with _recording_endpoint(b'[{"recipient_id":"bare","text":"Hey!"}]') as (url, received):
        point = http_turns.run_wrk(url, "bare", 4, 1, "b", tmp_path)
    assert point["requests"] > 100 and point["errors"] == 0

    by_sender: dict[str, list[str]] = {}
    for body in received:
        by_sender.setdefault(body["sender"], []).append(body["message"])
    # Sent in order, but on several connections: the endpoint may read two of them swapped.
    whole = [sorted(c) for c in http_turns.CONVERSATIONS]
    assert sum(sorted(m) in whole for m in by_sender.values()) >= len(by_sender) - 4, by_sender


def test_the_python_client_reads_the_bare_endpoints_replies_as_the_servers() -> None:
    """Where wrk is missing, the asyncio client too reads every reply in both modes: an
    endpoint answering no bot message is an error for the bare run as for the server's."""
    from bench import http_turns

    with _recording_endpoint(b"[]") as (url, received):
        # A second each: on a crowded host (load 12-16) 0.3 s could pass before the first
        # request went out, and a run of no requests proves nothing.
        bare = http_turns.run_python(url, "bare", 2, 1.0, "b")
        bot = http_turns.run_python(url, "bot", 2, 1.0, "s")
    assert bare["requests"] > 0 and bare["errors"] == bare["requests"]
    assert bot["requests"] > 0 and bot["errors"] == bot["requests"]
