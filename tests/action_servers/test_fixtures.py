"""The action servers the tests start leave nothing behind in the temporary directory."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.action_servers.fixtures import start_action_server


@pytest.fixture
def temp(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A temporary directory of this test's own, with a short path (Unix sockets go in it)."""
    short = Path(tempfile.mkdtemp(prefix="as-", dir="/tmp"))
    monkeypatch.setenv("TMPDIR", str(short))
    monkeypatch.setattr(tempfile, "tempdir", str(short))
    yield short
    shutil.rmtree(short, ignore_errors=True)


def test_a_stopped_action_server_leaves_no_temporary_files(temp: Path) -> None:
    """Before, Sanic's multiprocessing left two `pymp-*` folders (each with a socket) per
    action server in /tmp, killed as it is with its process group."""
    pytest.importorskip("rasa_sdk")
    server = start_action_server("concertbot")
    server.stop()
    assert list(temp.iterdir()) == []
