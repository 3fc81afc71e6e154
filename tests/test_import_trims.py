"""What a botserver process skips of its libraries' imports stays importable for other code,
and the libraries keep what they support."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

from bench.tcp_proxy import free_port
from tests.cli.botserver_process import REPO

IMPORT_THEN_LIST = """
import sys
import server, httpx, httpcore
skipped = [name for name in ("httpx._main",) if name in sys.modules]
import httpx._main
print(skipped, httpx._main.main.name)
"""

# httpx on a trio event loop, in a process that imported the server's HTTP clients first.
HTTPX_UNDER_TRIO = """
import server.http_clients, httpx, trio
async def main():
    async with httpx.AsyncClient() as client:
        try:
            await client.get("http://127.0.0.1:{port}/")
        except httpx.ConnectError:
            print("refused")
trio.run(main)
"""

# SQLAlchemy's asyncio extension as other code uses it: its ORM sessions through the names
# the package gives, and `import *`; the first line says whether the ORM came with the package.
ASYNC_SESSIONS = """
import sys
{first}
import sqlalchemy.ext.asyncio
print("sqlalchemy.orm" in sys.modules)
from sqlalchemy.ext.asyncio import *
print(sorted(name for name in dir() if name[0] != "_" and name not in ("sys", "server")))
import asyncio
from sqlalchemy import text
async def main():
    engine = create_async_engine("sqlite+aiosqlite://")
    async with async_sessionmaker(engine)() as session:
        print(type(session).__name__, (await session.execute(text("select 7"))).scalar())
    await engine.dispose()
asyncio.run(main())
"""


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(REPO), "PATH": ""},
        timeout=60,
    )


def test_skipped_imports_are_importable_afterwards() -> None:
    result = _python(IMPORT_THEN_LIST)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["[]", "main"]


@pytest.mark.skipif(importlib.util.find_spec("trio") is None, reason="needs trio")
def test_httpx_still_runs_under_trio_in_a_botserver_process() -> None:
    """Where trio is installed, httpcore keeps its trio support: before, a process that had
    imported the server failed httpx's first request under trio with "Running with trio
    requires installation of 'httpcore[trio]'"."""
    result = _python(HTTPX_UNDER_TRIO.format(port=free_port()))
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["refused"]


def test_sqlalchemys_orm_sessions_import_at_their_first_use() -> None:
    """A botserver process does not import SQLAlchemy's ORM with its asyncio extension (our
    stores use its engine only); code that uses the extension's sessions gets them as it
    would without the server, `import *` the same names."""
    served = _python(ASYNC_SESSIONS.format(first="import server"))
    alone = _python(ASYNC_SESSIONS.format(first=""))
    assert served.returncode == 0, served.stderr
    assert alone.returncode == 0, alone.stderr
    orm_imported, *rest = served.stdout.splitlines()
    assert orm_imported == "False"
    assert rest == alone.stdout.splitlines()[1:]
    assert rest[-1] == "AsyncSession 7"
