"""SIGTERM while the SQL tracker store's first-use schema migration waits on a database that
fell silent: the stop ends within its graceful period and says what it left unfinished."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from contextlib import suppress
from pathlib import Path

import httpx
import pytest

from bench.tcp_proxy import SilentFrom, free_port
from tests.cli.botserver_process import REPO, botserver_command
from tests.loop_lag import paced
from tests.trackers.persistence_fixtures import POSTGRES, postgres_database

# A statement of revision 0002: the migration has made the table and its first index.
MID_MIGRATION = b"ix_events_session_start_action"


@pytest.mark.timing
async def test_a_stop_during_a_migration_on_a_silent_database_ends_within_its_grace_period(
    tmp_path: Path,
) -> None:
    """Before, the process never exited: the migration's thread (the default executor's)
    waited on the silent database, and asyncio, then the interpreter, waited for it."""
    async with postgres_database() as config:
        proxy = SilentFrom(POSTGRES, MID_MIGRATION)
        await proxy.restore()
        try:
            (tmp_path / "endpoints.yml").write_text(
                f"tracker_store:\n  type: sql\n  dialect: postgresql\n  url: 127.0.0.1\n"
                f"  port: {proxy.port}\n  username: postgres\n  db: {config['db']}\n"
            )
            port = free_port()
            output = tmp_path / "server.out"
            with output.open("wb") as sink:
                server = await asyncio.create_subprocess_exec(
                    *botserver_command(),
                    *("run", "--enable-api", "--endpoints", "endpoints.yml"),
                    *("-p", str(port), "-i", "127.0.0.1"),
                    cwd=tmp_path,
                    stdout=sink,
                    stderr=sink,
                    env={
                        **os.environ,
                        "PYTHONUNBUFFERED": "1",
                        "PYTHONPATH": str(REPO),
                        "BOTSERVER_GRACEFUL_SHUTDOWN_SECONDS": "1",
                    },
                )
            try:
                await _wait_until_up(f"http://127.0.0.1:{port}", server, output)
                async with httpx.AsyncClient(timeout=30) as client:
                    # The readiness probe's ping is the store's first use: it migrates.
                    probe = asyncio.create_task(client.get(f"http://127.0.0.1:{port}/health/ready"))
                    await asyncio.wait_for(proxy.triggered.wait(), 60)
                    began = time.monotonic()
                    server.send_signal(signal.SIGTERM)
                    code = await asyncio.wait_for(server.wait(), 1 + paced(10, below=30))
                    stopped_in = time.monotonic() - began
                    probe.cancel()
                    with suppress(asyncio.CancelledError, httpx.HTTPError):
                        await probe
            finally:
                if server.returncode is None:
                    server.kill()
                    await server.wait()
        finally:
            proxy.silent = False
            await proxy.cut()
    text = output.read_text()
    assert code == 0, text
    assert stopped_in < 1 + paced(5, below=30), text
    assert (
        f"Stopping with the schema migration of PostgreSQL at 127.0.0.1:{proxy.port} (the "
        "tracker store) unfinished: it is given up, and the next start runs it again"
    ) in text


async def _wait_until_up(url: str, server: asyncio.subprocess.Process, output: Path) -> None:
    async with httpx.AsyncClient(timeout=2) as client:
        for _ in range(1200):
            if server.returncode is not None:
                said = await asyncio.to_thread(output.read_text)
                raise AssertionError(f"botserver exited early:\n{said}")
            try:
                await client.get(url + "/health/live")
                return
            except httpx.TransportError:
                await asyncio.sleep(0.05)
    said = await asyncio.to_thread(output.read_text)
    raise AssertionError(f"botserver did not answer:\n{said}")
