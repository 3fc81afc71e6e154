"""What a botserver process skips of its libraries' imports stays importable for other code,
and the libraries keep what they support."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

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


def _python(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code, *args],
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


# Shapes a later `__init__` of a deferred package could take, each package `p<n>` with a
# submodule `sub` defining `Thing`: a function importing it at its call, a `__getattr__` of its
# own, an alias, a subclass, and `import *`.
LATER_INITS = {
    "p1": "from .sub import Thing as Thing\ndef helper():\n    from .sub import Thing\n"
    "    return Thing\n",
    "p2": "from .sub import Thing as Thing\ndef __getattr__(name):\n    if name == 'Old':\n"
    "        return 'an old name'\n    raise AttributeError(name)\n",
    "p3": "from .sub import Thing\nAlias = Thing\n",
    "p4": "from .sub import Thing\nclass Sub(Thing):\n    pass\n",
    "p5": "from .sub import *\n",
}
USE_LATER_INITS = """
import sys
sys.path.insert(0, sys.argv[1])
{first}
import p1, p2, p3, p4, p5
print(p1.helper(), p2.Old, p3.Alias, p4.Sub.__mro__[1], p5.Thing)
"""


def test_a_package_that_uses_what_it_would_defer_imports_as_without_the_server(
    tmp_path: Path,
) -> None:
    """The trim returns placeholders for the names a deferred `__init__` imports; should a
    later SQLAlchemy read those names itself (or define its own `__getattr__`), its `__init__`
    runs as it is. Before, each of these got a placeholder, lost a name or failed to import."""
    for package, init in LATER_INITS.items():
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text(init)
        (tmp_path / package / "sub.py").write_text("class Thing:\n    pass\n")
    packages = ", ".join(f"{package!r}: ('sub',)" for package in LATER_INITS)
    deferring = f"import server.import_trims as t\nt.DEFERRED.update({{{packages}}})"
    served = _python(USE_LATER_INITS.format(first=deferring), str(tmp_path))
    alone = _python(USE_LATER_INITS.format(first=""), str(tmp_path))
    assert alone.returncode == 0, alone.stderr
    assert (served.returncode, served.stderr) == (0, "")
    assert served.stdout == alone.stdout
    assert "an old name" in served.stdout
