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
