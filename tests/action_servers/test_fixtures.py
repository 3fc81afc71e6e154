"""The action servers the tests start leave nothing behind in the temporary directory."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
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


def _processes_in_group(group: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text()
        except (OSError, ValueError):
            continue  # not a process, or gone
        if int(stat.rsplit(")", 1)[1].split()[2]) == group:
            pids.append(int(entry.name))
    return pids


def test_an_action_server_kept_for_the_whole_run_is_one_process(temp: Path) -> None:
    """A bot's action server lives as long as the test run. Before, rasa-sdk's `run` started
    Sanic's worker manager: four processes, twice the CPU to start, and a manager polling its
    worker all run long (0.005 s of CPU a second, each bot, each pytest worker)."""
    pytest.importorskip("rasa_sdk")
    server = start_action_server("concertbot")
    try:
        assert _processes_in_group(server.process.pid) == [server.process.pid]
        assert httpx.get(server.url.replace("/webhook", "/actions")).status_code == 200
    finally:
        server.stop()
