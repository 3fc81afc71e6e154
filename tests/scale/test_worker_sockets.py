"""`botserver run --workers N`: each worker has a listening socket of its own (a burst of
connections is spread over the workers), a worker that dies is replaced, a worker that cannot
start stops the server with an error, and the workers act as one server for /metrics and for
PUT and DELETE /model."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bench.concurrency import ServerProcess, free_port, train_moodbot
from server.api.metrics_sharing import PUBLISH_SECONDS
from server.api.model_sync import FOLLOW_SECONDS
from server.api.worker_files import WORKERS_DIR_ENV
from server.api.workers import SPREADS_CONNECTIONS
from tests.conftest import checked_once
from tests.loop_lag import paced
from tests.scale.scale_services import sqlite_and_redis_endpoints

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(not SPREADS_CONNECTIONS, reason="SO_REUSEPORT spreads connections on Linux"),
]

CONNECTIONS = 40


@pytest.fixture(scope="module")
def moodbot(moodbot_copy: Callable[[str], Path]) -> Path:
    return moodbot_copy("moodbot")


def start_two_workers(moodbot: Path, tmp_path: Path) -> ServerProcess:
    """`botserver run --workers 2` on SQLite with Redis locks, both workers serving."""
    endpoints = sqlite_and_redis_endpoints(tmp_path)
    server = ServerProcess(moodbot, endpoints, tmp_path / "server.log", workers=2)
    server.start()
    try:
        asyncio.run(server.wait_for("/", 200, timeout=60))
        deadline = time.monotonic() + 30
        while len(workers_of(server)) < 2:
            assert time.monotonic() < deadline, server.log.read_text()[-3000:]
            time.sleep(0.1)
    except BaseException:
        asyncio.run(server.stop())
        raise
    return server


def stop_with(server: ServerProcess, signum: int) -> None:
    """The signal ends the server with 0 and leaves no worker behind."""
    workers = workers_of(server)
    assert server.process is not None
    server.process.send_signal(signum)
    assert server.process.wait(30) == 0, server.log.read_text()[-3000:]
    assert not any(Path(f"/proc/{pid}").exists() for pid in workers)


@contextlib.contextmanager
def serving(moodbot: Path, tmp_path: Path) -> Iterator[ServerProcess]:
    server = start_two_workers(moodbot, tmp_path)
    try:
        yield server
    finally:
        asyncio.run(server.stop())


def the_workers_stop_with_their_killed_parent(server: ServerProcess) -> None:
    """The workers stop, and the last one removes the directory they shared (before, every
    killed server left a /tmp/botserver-workers-* behind). Each says it has closed its
    stores, the parent that would have said it for all being gone (before, nobody did)."""
    workers = workers_of(server)
    shared = shared_directory(workers[0])
    assert shared.is_dir()
    assert server.process is not None
    server.process.kill()
    server.process.wait(10)
    deadline = time.monotonic() + 40
    while alive := [pid for pid in workers if Path(f"/proc/{pid}").exists()]:
        assert time.monotonic() < deadline, f"workers {alive} outlived their parent"
        time.sleep(0.1)
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", server.port), timeout=2).close()
    assert not shared.exists()
    log = server.log.read_text()
    stopped = [line for line in log.splitlines() if "Stopped: " in line]
    assert len(stopped) == 2, log[-3000:]


def shared_directory(worker: int) -> Path:
    """The directory the workers share, as a worker's environment names it."""
    environ = Path(f"/proc/{worker}/environ").read_bytes().split(b"\0")
    (value,) = [v for v in environ if v.startswith(WORKERS_DIR_ENV.encode() + b"=")]
    return Path(value.split(b"=", 1)[1].decode())


def workers_of(server: ServerProcess) -> list[int]:
    """The server's worker processes (its children that listen on its port)."""
    assert server.process is not None
    children = Path(f"/proc/{server.process.pid}/task/{server.process.pid}/children")
    return [pid for pid in map(int, children.read_text().split()) if owners(server.port, [pid])]


def owners(port: int, pids: list[int], client_ports: set[int] | None = None) -> Counter[int]:
    """How many sockets of `port` each pid holds: the listening ones, or the server's ends of
    the connections from `client_ports`."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, state = fields[1], fields[2], fields[3]
        if int(local.split(":")[1], 16) != port:
            continue
        if client_ports is None and state == "0A":  # listening
            inodes.add(fields[9])
        elif client_ports is not None and int(remote.split(":")[1], 16) in client_ports:
            inodes.add(fields[9])
    held: Counter[int] = Counter()
    for pid in pids:
        try:
            fds = list(Path(f"/proc/{pid}/fd").iterdir())
        except OSError:  # gone, or a zombie not yet reaped
            continue
        for fd in fds:
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:[") and target[8:-1] in inodes:
                held[pid] += 1
    return held


def open_burst(port: int) -> list[socket.socket]:
    """CONNECTIONS connections opened at once, as a client pool opens them."""
    return [socket.create_connection(("127.0.0.1", port)) for _ in range(CONNECTIONS)]


def read_to_end(client: socket.socket) -> bytes:
    chunks = []
    while chunk := client.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


@pytest.fixture(scope="module")
def shared_workers(
    moodbot: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """Two workers for the tests that leave them as they found them (idle connections, turns
    of conversations of their own, scrapes): one start instead of one per test. Stopped with
    SIGTERM after the module."""
    with serving(moodbot, tmp_path_factory.mktemp("shared-workers")) as server:
        yield server
        stop_with(server, signal.SIGTERM)


def test_a_burst_of_connections_is_spread_over_the_workers(
    shared_workers: ServerProcess,
) -> None:
    workers = workers_of(shared_workers)
    clients = open_burst(shared_workers.port)
    try:
        ports = {client.getsockname()[1] for client in clients}
        deadline = time.monotonic() + 10
        while sum((held := owners(shared_workers.port, workers, ports)).values()) < CONNECTIONS:
            assert time.monotonic() < deadline, f"accepted {held}"
            time.sleep(0.05)
        # With one shared socket, the first worker awake takes nearly all (48 / 2 of 50 was
        # typical); spread by the kernel's hash of each connection, a worker's share is
        # binomial: under a quarter (9 of 40) is about 1 run in 1,500 (CI drew 31 / 9 once),
        # under an eighth (4 of 40) about 1 in 5 million.
        assert min(held[pid] for pid in workers) >= CONNECTIONS // 8, held
    finally:
        for client in clients:
            client.close()


def test_a_worker_that_dies_is_replaced_and_sighup_stops_the_replacement_too(
    moodbot: Path, tmp_path: Path
) -> None:
    """Connections waiting in a dead worker's socket are served by its replacement (the
    parent keeps the socket), not reset with it. Then SIGHUP stops them all, the replacement
    too: by default it would end the parent alone, its workers serving on (one start serves
    both)."""
    with serving(moodbot, tmp_path) as server:
        a_dead_worker_is_replaced(server)
        stop_with(server, signal.SIGHUP)


def a_dead_worker_is_replaced(two_workers: ServerProcess) -> None:
    first, second = workers_of(two_workers)
    os.kill(first, signal.SIGSTOP)  # it accepts nothing more: its share of the burst waits
    clients = open_burst(two_workers.port)
    try:
        for n, client in enumerate(clients):
            body = json.dumps({"sender": f"u{n}", "message": "hi"}).encode()
            client.sendall(
                b"POST /webhooks/rest/webhook HTTP/1.1\r\nHost: test\r\nConnection: close\r\n"
                b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                % (len(body), body)
            )
        ports = {client.getsockname()[1] for client in clients}
        time.sleep(0.5)  # the other worker accepts its share meanwhile
        waiting = CONNECTIONS - owners(two_workers.port, [second], ports)[second]
        assert waiting >= CONNECTIONS // 4
        os.kill(first, signal.SIGKILL)
        for client in clients:
            client.settimeout(30)
            reply = read_to_end(client)
            assert reply.startswith(b"HTTP/1.1 200"), reply[:200]
    finally:
        for client in clients:
            client.close()
    now = workers_of(two_workers)
    assert len(now) == 2 and second in now and first not in now
    log = two_workers.log.read_text()
    assert re.search(rf"worker \d \(pid {first}\) exited with code -9; starting another", log)


def test_metrics_count_the_turns_of_every_worker(shared_workers: ServerProcess) -> None:
    """A scrape reaches one worker; it shows the turns both served."""
    for n in range(20):  # a connection each: both workers serve some
        with httpx.Client(base_url=shared_workers.url, timeout=10) as client:
            message = {"sender": f"m{n}", "message": "hi"}
            assert client.post("/webhooks/rest/webhook", json=message).status_code == 200
    time.sleep(PUBLISH_SECONDS + 0.5)
    seen = set()
    for _ in range(8):
        with httpx.Client(base_url=shared_workers.url, timeout=10) as client:
            text = client.get("/metrics").text
        found = re.search(r"(?m)^botserver_turns_total (\S+)$", text)
        assert found is not None, text
        seen.add(found.group(1))
    assert seen == {"20.0"}


def statuses(server: ServerProcess, times: int = 8) -> set[str | None]:
    """The model_id GET /status gives, over `times` new connections (both workers answer)."""
    found = set()
    for _ in range(times):
        with httpx.Client(base_url=server.url, timeout=10) as client:
            found.add(client.get("/status").json().get("model_id"))
    return found


def within(seconds: float, check: Callable[[], object], expected: object) -> object:
    """`check()`, polled until it gives `expected` or `seconds` (at this host's pace) have
    passed; its last value. Before, a fixed sleep of `seconds`: waited in full each time."""
    deadline = time.monotonic() + paced(seconds)
    while (found := check()) != expected and time.monotonic() < deadline:
        time.sleep(0.2)
    return found


def ready_statuses(server: ServerProcess, times: int = 8) -> set[int]:
    """The statuses GET /health/ready gives over `times` new connections."""
    found = set()
    for _ in range(times):
        with httpx.Client(base_url=server.url, timeout=10) as client:
            found.add(client.get("/health/ready").status_code)
    return found


@pytest.mark.timing
def test_a_model_put_on_one_worker_is_loaded_by_every_worker_and_they_stop_with_the_parent(
    moodbot: Path, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The workers follow PUT and DELETE /model. Then the parent is killed: the workers stop
    on their own (`the_workers_stop_with_their_killed_parent`; one start serves both)."""
    with serving(moodbot, tmp_path) as server:
        every_worker_follows_the_model(server, tmp_path_factory)
        with checked_once():  # bounds no time: not run again
            the_workers_stop_with_their_killed_parent(server)


def every_worker_follows_the_model(
    two_workers: ServerProcess, tmp_path_factory: pytest.TempPathFactory
) -> None:
    (first,) = statuses(two_workers)
    second = train_moodbot(tmp_path_factory.mktemp("second"))
    with httpx.Client(base_url=two_workers.url, timeout=30) as client:
        assert client.put("/model", json={"model_file": str(second)}).status_code == 204
        (loaded,) = {client.get("/status").json()["model_id"]}
    assert loaded != first
    follow = FOLLOW_SECONDS + 1
    assert within(follow, lambda: statuses(two_workers), {loaded}) == {loaded}

    # A worker started afterwards (a replacement) loads it too, not its startup model.
    dead = workers_of(two_workers)[0]
    os.kill(dead, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while len(now := workers_of(two_workers)) < 2 or dead in now:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    time.sleep(1)
    assert statuses(two_workers) == {loaded}

    with httpx.Client(base_url=two_workers.url, timeout=30) as client:
        assert client.delete("/model").status_code == 204
    assert within(follow, lambda: ready_statuses(two_workers), {503}) == {503}


@pytest.mark.timing
def test_a_worker_that_cannot_start_stops_the_server_with_an_error(tmp_path: Path) -> None:
    """Restarting it would fail the same way for ever: the supervisor stops and says so."""
    script = (
        "import sys, uvicorn\n"
        "from server.api.workers import serve_workers\n"
        "config = uvicorn.Config('no_such_module:app', factory=True, workers=2,"
        f" host='127.0.0.1', port={free_port()})\n"
        "sys.exit(serve_workers(config))\n"
    )
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert done.returncode == 1, done.stderr
    assert "before it served; stopping" in done.stderr
    assert time.monotonic() - started < paced(30)


def supervisor(tmp_path: Path, config: str, port: int, stable: float) -> subprocess.Popen[str]:
    """`serve_workers` in a process of its own, on uvicorn.Config(`config`) (one worker
    unless it says), STABLE_SECONDS set to `stable`; its log on stderr."""
    if "workers=" not in config:
        config += ", workers=1"
    script = (
        "import sys, uvicorn\n"
        "from server.api import workers\n"
        "from server.api.workers import serve_workers\n"
        f"workers.STABLE_SECONDS = {stable}\n"
        f"config = uvicorn.Config({config}, host='127.0.0.1', port={port})\n"
        "sys.exit(serve_workers(config))\n"
    )
    return subprocess.Popen(
        [sys.executable, "-c", script], cwd=tmp_path, stderr=subprocess.PIPE, text=True
    )


@pytest.mark.timeout(180)  # the wait below, then the stop
def test_a_worker_killed_at_every_start_is_restarted_with_a_back_off(tmp_path: Path) -> None:
    """A worker the kernel kills as it starts (out of memory while loading, say) is not
    respawned without pause: 0 s, then 0.5, 1, 2... s between starts, however long each start
    took. Before, a death more than STABLE_SECONDS (10 s) after its start reset the count:
    on a loaded host (a start of 11-14 s, seen at load 10 on 2 cores) or with a model that
    loads for longer, the back-off never began, and this test failed once under load."""
    (tmp_path / "killed_app.py").write_text(
        "import os, signal\n"
        "def app():\n"
        "    with open('starts', 'a') as out:\n"
        "        out.write('x')\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    # No time counts as quick: only a death before the worker served does, however long its
    # start.
    server = supervisor(tmp_path, "'killed_app:app', factory=True, workers=2", free_port(), 0.0)
    lines: list[str] = []
    deaths: Counter[str] = Counter()
    third: list[str] = []  # the line of the first third death of a worker

    def read_log() -> None:
        assert server.stderr is not None
        for line in server.stderr:
            lines.append(line)
            died = re.search(r"worker (\d+) \(pid \d+\) exited", line)
            if died:
                deaths[died[1]] += 1
                if deaths[died[1]] == 3 and not third:
                    third.append(line)
                    thrice.set()

    thrice = threading.Event()
    reader = threading.Thread(target=read_log, daemon=True)
    reader.start()
    # Waited for, not slept for: on a loaded machine a start took long enough that only 3
    # fitted in a fixed 6 s. The third death, not the back-off's step: without the back-off
    # the test fails at once, on an assertion that shows the log, not on its timeout.
    thrice_in_time = thrice.wait(120)
    starts = len((tmp_path / "starts").read_text())
    server.send_signal(signal.SIGTERM)
    server.wait(timeout=15)
    reader.join(timeout=5)
    stderr = "".join(lines)
    assert server.returncode == 0, stderr
    assert thrice_in_time, stderr
    assert "starting another on its socket in 1 s (3 deaths in a row" in third[0], stderr
    # When a worker's third quick death is logged, each worker started at most four times
    # (0, 0, then 0.5 s later; its next start waits 1 s). Without the back-off, a worker
    # killed at every start is replaced every few tenths of a second, and never waits 1 s.
    assert starts <= 10, starts
    assert "starting another on its socket in 0.5 s (2 deaths in a row" in stderr


# A worker whose start takes longer than STABLE_SECONDS (the factory's sleep), and that is
# killed half a second after it first answers (out of memory at its first prediction, say).
SERVED_THEN_KILLED_APP = """
import os, signal, threading, time, urllib.request

def kill_once_served():
    urllib.request.urlopen("http://127.0.0.1:{port}/", timeout=60).read()
    time.sleep(0.5)
    os.kill(os.getpid(), signal.SIGKILL)

async def serve(scope, receive, send):
    await send({{"type": "http.response.start", "status": 200, "headers": []}})
    await send({{"type": "http.response.body", "body": b"ok"}})

def app():
    time.sleep({start})
    threading.Thread(target=kill_once_served, daemon=True).start()
    return serve
"""


def test_a_worker_killed_soon_after_a_long_start_is_restarted_with_a_back_off(
    tmp_path: Path,
) -> None:
    """A worker killed soon after it began to serve counts as a quick death however long its
    start took: STABLE_SECONDS counts from when it served. Before, counted from its start, a
    worker loading a model longer than that and killed at its first prediction reset the
    count at every death, and was replaced at once, for ever."""
    port = free_port()
    stable = 3.0
    (tmp_path / "served_app.py").write_text(
        SERVED_THEN_KILLED_APP.format(port=port, start=stable + 0.5)
    )
    server = supervisor(tmp_path, "'served_app:app', factory=True, lifespan='off'", port, stable)
    deaths: list[str] = []
    lines: list[str] = []
    second = threading.Event()

    def read_log() -> None:
        assert server.stderr is not None
        for line in server.stderr:
            lines.append(line)
            if "exited with code -9" in line:
                deaths.append(line)
                if len(deaths) == 2:
                    second.set()

    reader = threading.Thread(target=read_log, daemon=True)
    reader.start()
    second_in_time = second.wait(80)
    server.send_signal(signal.SIGTERM)
    server.wait(timeout=15)
    reader.join(timeout=5)
    stderr = "".join(lines)
    assert second_in_time, stderr
    assert server.returncode == 0, stderr
    assert "starting another on its socket in 0.5 s (2 deaths in a row" in deaths[1], stderr


def more_than(seen: list[Any], count: int) -> bool:
    return len(seen) > count


def test_a_worker_that_served_long_enough_starts_the_back_off_again(tmp_path: Path) -> None:
    """Deaths after STABLE_SECONDS of serving are far apart: each is replaced at once, the
    count of quick deaths starting again (a worker killed once a day is not kept waiting).
    Two deaths tell: a second death counted as quick would wait 0.5 s (the first waits
    none either way)."""
    port = free_port()
    (tmp_path / "plain_app.py").write_text(
        "async def app(scope, receive, send):\n"
        "    await send({'type': 'http.response.start', 'status': 200, 'headers': []})\n"
        "    await send({'type': 'http.response.body', 'body': b'ok'})\n"
    )
    server = supervisor(tmp_path, "'plain_app:app', lifespan='off'", port, 1.0)
    lines: list[str] = []
    pids: list[int] = []
    deaths: list[str] = []
    changed = threading.Condition()

    def read_log() -> None:
        assert server.stderr is not None
        for line in server.stderr:
            with changed:
                lines.append(line)
                if started := re.search(r"Started server process \[(\d+)\]", line):
                    pids.append(int(started[1]))
                if "exited with code" in line:
                    deaths.append(line)
                changed.notify_all()

    threading.Thread(target=read_log, daemon=True).start()
    try:
        for round_ in range(2):
            with changed:
                assert changed.wait_for(functools.partial(more_than, pids, round_), 60), "".join(
                    lines
                )
            with httpx.Client(timeout=30) as client:
                assert client.get(f"http://127.0.0.1:{port}/").status_code == 200
            time.sleep(2)  # it serves longer than STABLE_SECONDS
            os.kill(pids[round_], signal.SIGKILL)
            with changed:
                assert changed.wait_for(functools.partial(more_than, deaths, round_), 30), "".join(
                    lines
                )
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=15)
    assert len(deaths) == 2, lines
    assert all(death.endswith("starting another on its socket\n") for death in deaths), lines
