"""SIGTERM while the SQL tracker store's first-use schema migration waits on a database that
fell silent: the stop ends within its graceful period and says what it left unfinished."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from contextlib import suppress
from pathlib import Path

import asyncpg
import httpx
import pytest

from bench.tcp_proxy import SilentFrom, free_port
from server.trackers.sql_schema import MIGRATIONS_DIR
from tests.cli.botserver_process import REPO, botserver_command
from tests.loop_lag import paced
from tests.trackers.persistence_fixtures import POSTGRES, postgres_database

# A statement of revision 0002: the migration has made the table and its first index.
MID_MIGRATION = b"ix_events_session_start_action"
VERSIONS = MIGRATIONS_DIR / "versions"


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
            server, port, output = await _start(tmp_path, proxy.port, config["db"], grace=1)
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


async def _start(
    tmp_path: Path, db_port: int, db: str, grace: float
) -> tuple[asyncio.subprocess.Process, int, Path]:
    """`botserver run` on a PostgreSQL tracker store at 127.0.0.1:`db_port`; its output in a
    file."""
    (tmp_path / "endpoints.yml").write_text(
        f"tracker_store:\n  type: sql\n  dialect: postgresql\n  url: 127.0.0.1\n"
        f"  port: {db_port}\n  username: postgres\n  db: {db}\n"
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
                "BOTSERVER_GRACEFUL_SHUTDOWN_SECONDS": f"{grace:g}",
            },
        )
    return server, port, output


@pytest.mark.timing
async def test_a_stop_during_a_slow_migration_lets_it_finish_within_the_grace_period(
    tmp_path: Path,
) -> None:
    """A migration only slow (here: waiting for the lock of another session, which lets it go
    half a second after the stop), which the request that began it gave up on, is given what
    is left of the graceful period, ends, and is recorded: the stop says it waits for it,
    and nothing is left for the next start to migrate."""
    async with postgres_database() as config:
        holder = await asyncpg.connect(
            host=POSTGRES[0], port=POSTGRES[1], user="postgres", database=config["db"]
        )
        try:
            holding = holder.transaction()
            await holding.start()
            await holder.execute("SELECT pg_advisory_xact_lock(7314206)")
            server, port, output = await _start(tmp_path, POSTGRES[1], config["db"], grace=20)
            try:
                await _wait_until_up(f"http://127.0.0.1:{port}", server, output)
                async with httpx.AsyncClient(timeout=30) as client:
                    probe = asyncio.create_task(client.get(f"http://127.0.0.1:{port}/health/ready"))
                    waiting = (
                        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                        "AND objid = 7314206 AND NOT granted"
                    )
                    for _ in range(600):
                        if await holder.fetchval(waiting):
                            break
                        await asyncio.sleep(0.05)
                    else:
                        raise AssertionError("the migration did not wait for the lock")
                    # The probe gives up on it (503 after its 2 s); the migration goes on.
                    assert (await probe).status_code == 503
                    server.send_signal(signal.SIGTERM)
                    await asyncio.sleep(0.5)
                    await holding.commit()
                    code = await asyncio.wait_for(server.wait(), paced(15, below=30))
            finally:
                if server.returncode is None:
                    server.kill()
                    await server.wait()
            version = await holder.fetchval("SELECT version_num FROM botserver_alembic_version")
        finally:
            await holder.close()
    text = output.read_text()
    assert code == 0, text
    assert "Waiting up to" in text and "unfinished" not in text, text
    assert version == sorted(p.stem.split("_")[0] for p in VERSIONS.glob("0*.py"))[-1]


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
