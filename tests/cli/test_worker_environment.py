"""`botserver run --workers N` hands its workers the run's settings without putting them in
their environment, which their user reads in /proc/<pid>/environ and their children inherit."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import jwt
import pytest

from tests.cli.botserver_process import start_botserver
from tests.trackers.persistence_fixtures import (
    POSTGRES,
    REDIS,
    require_service,
    unique_name,
)

pytestmark = pytest.mark.timeout(180)

JWT_SECRET = "jwt-secret-handed-to-workers-0123456789"
SQL_PASSWORD = "sql-password-handed-to-workers-1"
TOKEN = "auth-token-from-the-environment-2"


async def _as_admin(statement: str) -> None:
    import asyncpg

    admin = await asyncpg.connect(
        host=POSTGRES[0], port=POSTGRES[1], user="postgres", database="test"
    )
    try:
        await admin.execute(statement)
    finally:
        await admin.close()


@pytest.fixture
def database() -> Iterator[str]:
    """A fresh PostgreSQL database's name."""
    require_service("PostgreSQL", POSTGRES)
    name = unique_name("bs_handed")
    asyncio.run(_as_admin(f'CREATE DATABASE "{name}"'))
    try:
        yield name
    finally:
        asyncio.run(_as_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def _descendants(pid: int) -> list[int]:
    """The processes `pid` started, and theirs, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:  # gone
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs /proc")
def test_workers_serve_with_secrets_absent_from_their_environment(
    moodbot_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, database: str
) -> None:
    """A --jwt-secret, an --auth-token from BOTSERVER_AUTH_TOKEN and a SQL password of
    endpoints.yml: none is in a worker's environment, and the workers still check both.
    Before, the parent put them all in the workers' environment (BOTSERVER_RUN_SPEC)."""
    require_service("Redis", REDIS)
    (tmp_path / "endpoints.yml").write_text(
        "tracker_store:\n"
        "  type: sql\n  dialect: postgresql\n"
        f"  url: {POSTGRES[0]}\n  port: {POSTGRES[1]}\n  db: {database}\n"
        f"  username: postgres\n  password: {SQL_PASSWORD}\n"
        "lock_store:\n"
        f"  type: redis\n  url: {REDIS[0]}\n  port: {REDIS[1]}\n"
        f"  key_prefix: {unique_name('handed')}\n"
    )
    monkeypatch.setenv("BOTSERVER_AUTH_TOKEN", TOKEN)
    args = ["--enable-api", "-m", str(moodbot_model), "--workers", "2"]
    server = start_botserver([*args, "--jwt-secret", JWT_SECRET], tmp_path, tmp_path)
    monkeypatch.delenv("BOTSERVER_AUTH_TOKEN")
    try:
        server.wait_until("/health/ready", timeout=120)
        for _ in range(600):  # until both workers serve
            if "is up on" in server.text():
                break
            time.sleep(0.1)
        assert "is up on" in server.text(), server.text()
        workers = _descendants(server.process.pid)
        environments = {pid: Path(f"/proc/{pid}/environ").read_bytes() for pid in workers}
        assert len(environments) >= 2, server.text()
        for pid, environment in environments.items():
            for secret in (JWT_SECRET, SQL_PASSWORD, TOKEN, "BOTSERVER_RUN_SPEC"):
                assert secret.encode() not in environment, (pid, secret)
        admin = jwt.encode({"user": {"username": "boss", "role": "admin"}}, JWT_SECRET)
        statuses = []
        for _ in range(8):  # a connection each: spread over the workers
            with httpx.Client(base_url=server.url) as client:
                statuses.append(
                    (
                        client.get("/status").status_code,
                        client.get("/status", params={"token": TOKEN}).status_code,
                        client.get(
                            "/status", headers={"Authorization": f"Bearer {admin}"}
                        ).status_code,
                    )
                )
        assert set(statuses) == {(401, 200, 200)}, statuses
    finally:
        server.stop()
    assert JWT_SECRET not in server.text() and SQL_PASSWORD not in server.text()
