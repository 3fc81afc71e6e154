"""`botserver shell`'s conversation loop in process: a turn that fails mid-session."""

from __future__ import annotations

import asyncio
import io
import uuid
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from bench.tcp_proxy import TcpProxy
from server.channels.console import run_shell
from server.config import read_endpoints
from tests.trackers.persistence_fixtures import REDIS, require_service


class Typist(io.StringIO):
    """Standard input whose lines run `before(n)` (n: the line's number) when read."""

    def __init__(self, lines: list[str], before: dict[int, Callable[[], None]]) -> None:
        super().__init__()
        self.lines, self.before, self.lines_read = lines, before, 0

    def readline(self, size: int = -1, /) -> str:  # type: ignore[override]
        self.lines_read += 1
        if self.lines_read in self.before:
            self.before[self.lines_read]()
        return self.lines.pop(0) + "\n" if self.lines else ""


async def test_a_store_down_mid_session_is_one_error_line_and_the_session_goes_on(
    moodbot_model: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    require_service("Redis", REDIS)
    proxy = TcpProxy(REDIS)
    await proxy.restore()
    loop = asyncio.get_running_loop()

    def run(step: Coroutine[Any, Any, None]) -> None:  # on the input thread, wait for it
        asyncio.run_coroutine_threadsafe(step, loop).result(10)

    prefix = f"cli2-shell-{uuid.uuid4().hex}"
    endpoints = tmp_path / "endpoints.yml"
    endpoints.write_text(
        "tracker_store:\n  type: redis\n  url: 127.0.0.1\n"
        f"  port: {proxy.port}\n  key_prefix: {prefix}\n"
    )
    typist = Typist(
        ["hello", "hello", "hello", "/stop"],
        {2: lambda: run(proxy.cut()), 3: lambda: run(proxy.restore())},
    )
    monkeypatch.setattr("sys.stdin", typist)
    try:
        code = await run_shell(moodbot_model, read_endpoints(endpoints), sender="ana")
    finally:
        await proxy.cut()
        redis = aioredis.Redis(host=REDIS[0], port=REDIS[1])
        async for key in redis.scan_iter(f"{prefix}*"):  # the conversation it stored
            await redis.delete(key)
        await redis.aclose()
    out, err = capsys.readouterr()
    assert code == 0
    assert "error: this message was not handled" in err
    assert "Traceback" not in err
    assert out.count("Hey! How are you?") == 2  # before the outage and after it
