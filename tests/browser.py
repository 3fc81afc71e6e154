"""Headless Chromium for browser tests: Debian's chromium driven by playwright, and a server
on a thread for the browser to reach (playwright's sync API owns the test's thread)."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.types import ASGIApp

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def require(what: bool, reason: str) -> None:
    """Skips the test without `what`, except in CI (CI=true), where it fails."""
    if not what:
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)


def require_chromium() -> None:
    require(
        Path(CHROMIUM).exists() or bool(shutil.which("chromium")),
        f"the browser test needs chromium at {CHROMIUM} (apt-get install -y chromium)",
    )
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        require(False, "the browser test needs the playwright package (pip install playwright)")


@contextlib.contextmanager
def served_on_a_thread(app: ASGIApp) -> Iterator[str]:
    """Runs `app` in uvicorn on a thread for the block; yields its base URL."""
    import uvicorn

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not server.started and thread.is_alive():
        time.sleep(0.05)
    assert server.started, "the test server did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
