"""SIGTERM (a Kubernetes CronJob past its activeDeadlineSeconds, `kill`, `docker stop`) stops
`botserver prune` as Ctrl-C does: the locks it holds are given back, it says how far it got."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path

import pytest
from redis.asyncio import Redis

from bench.tcp_proxy import SilentFrom
from server.trackers.factory import create_tracker_store
from tests.cli.botserver_process import REPO, botserver_command
from tests.loop_lag import paced
from tests.trackers.persistence_fixtures import (
    REDIS,
    delete_redis_keys,
    require_service,
    unique_name,
)

LOCKS_DB = 1  # the lock store's own database (its default)


@pytest.mark.timing
async def test_sigterm_during_a_prune_gives_its_locks_back_and_says_how_far_it_got(
    tmp_path: Path,
) -> None:
    """The tracker store falls silent as the prune's first delete goes out, with the locks of
    the batch held (renewed to lock_lifetime, 60 s): SIGTERM then. Before, the process died
    at once (exit -15, nothing said) and the locks stayed: each of those conversations'
    next messages waited out the 60 s."""
    require_service("Redis", REDIS)
    prefix = unique_name("bsterm").replace("_", "")
    old = time.time() - 10 * 86400
    store = create_tracker_store(
        {"type": "redis", "url": REDIS[0], "port": REDIS[1], "key_prefix": prefix}
    )
    for sender_id in ("c1", "c2", "c3"):
        await store.append(
            sender_id, [{"event": "action", "name": "action_listen", "timestamp": old}]
        )
    await store.close()
    # (The prune's script, loaded by the pipeline before it runs: EVALSHA is its first call.)
    proxy = SilentFrom(REDIS, b"EVALSHA")
    await proxy.restore()
    (tmp_path / "endpoints.yml").write_text(
        f"tracker_store:\n  type: redis\n  url: 127.0.0.1\n  port: {proxy.port}\n"
        f"  key_prefix: {prefix}\n  socket_timeout: 600\n"
        f"lock_store:\n  type: redis\n  url: {REDIS[0]}\n  port: {REDIS[1]}\n"
        f"  db: {LOCKS_DB}\n  key_prefix: {prefix}\n  lock_lifetime: 60\n"
    )
    locks = Redis(host=REDIS[0], port=REDIS[1], db=LOCKS_DB)
    prune = await asyncio.create_subprocess_exec(
        *botserver_command(),
        "prune",
        "--older-than-days",
        "5",
        "--endpoints",
        "endpoints.yml",
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        await asyncio.wait_for(proxy.triggered.wait(), paced(30, below=120))
        held = sorted(await locks.keys(f"{prefix}:lock:*"))
        prune.send_signal(signal.SIGTERM)
        out, err = await asyncio.wait_for(prune.communicate(), paced(10, below=60))
        left = sorted(await locks.keys(f"{prefix}:lock:*"))
    finally:
        if prune.returncode is None:
            prune.kill()
            await prune.wait()
        proxy.silent = False
        await proxy.cut()
        await locks.aclose()
        await delete_redis_keys(prefix, db=0)
        await delete_redis_keys(prefix, db=LOCKS_DB)
    said = err.decode()
    assert held == [f"{prefix}:lock:{c}".encode() for c in ("c1", "c2", "c3")], said
    assert prune.returncode == 143, said
    assert left == [], said
    assert (
        "error: stopped by SIGTERM (after deleting 0 conversations); botserver prune again "
        "deletes the rest"
    ) in said.splitlines(), said
    assert "Traceback" not in said, said
    assert out == b""


_STOPPED_SLOWLY = """
import asyncio, sys
import cli

async def main():
    try:
        print("running", flush=True)
        await asyncio.sleep(600)
    finally:  # (as a prune giving back its locks to a Redis that does not answer)
        print("cleaning up", flush=True)
        await asyncio.sleep(600)

try:
    cli._run_until_stopped(main())
except cli.Terminated:
    print("terminated", flush=True)
"""


@pytest.mark.timing
async def test_a_second_sigterm_ends_the_command_at_once() -> None:
    """The first SIGTERM lets the command clean up (its `finally` blocks run); a second one,
    as a second Ctrl-C, ends it at once (exit -15, by the signal), not after the clean-up."""
    command = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _STOPPED_SLOWLY,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=asyncio.subprocess.PIPE,
    )
    assert command.stdout is not None
    try:
        running = await asyncio.wait_for(command.stdout.readline(), paced(30, below=500))
        assert running == b"running\n"  # (its SIGTERM handler set)
        command.send_signal(signal.SIGTERM)
        line = await asyncio.wait_for(command.stdout.readline(), paced(10, below=500))
        assert line == b"cleaning up\n"
        command.send_signal(signal.SIGTERM)
        await asyncio.wait_for(command.wait(), paced(10, below=500))
        rest = await command.stdout.read()
    finally:
        if command.returncode is None:
            command.kill()
            await command.wait()
    assert command.returncode == -signal.SIGTERM
    assert rest == b""  # (not "terminated": the clean-up was cut short)
