"""Where an archive is extracted while a model loads: a process killed mid-load leaves its
directory behind, and the next load (in any botserver process) removes it, never one in use."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from server.models.extraction import STALE_AFTER_SECONDS
from server.training.evaluate import load_model_file

REPO = Path(__file__).resolve().parents[2]
# A uid no account of this machine has: another user's files.
ANOTHER_USER = 54321

HOLDS_ONE = (
    "import sys, time\n"
    "from server.models.extraction import extraction_directory\n"
    "with extraction_directory() as directory:\n"
    "    print(directory, flush=True)\n"
    "    time.sleep(120)\n"
)


@pytest.fixture
def temp_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """This test's own temporary directory, for this process and its children."""
    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    return temp


@pytest.fixture
def loading(temp_dir: Path) -> Iterator[Callable[[], tuple[subprocess.Popen[str], Path]]]:
    """Starts processes that are extracting a model (in `temp_dir`); killed after the test."""
    started: list[subprocess.Popen[str]] = []

    def start() -> tuple[subprocess.Popen[str], Path]:
        process = subprocess.Popen(
            [sys.executable, "-c", HOLDS_ONE],
            env={**os.environ, "PYTHONPATH": str(REPO), "TMPDIR": str(temp_dir)},
            stdout=subprocess.PIPE,
            text=True,
        )
        started.append(process)
        assert process.stdout is not None
        directory = Path(process.stdout.readline().strip())
        assert directory.is_dir()
        past = directory.stat().st_mtime - STALE_AFTER_SECONDS - 1
        os.utime(directory, (past, past))  # as if it had begun long ago
        return process, directory

    yield start
    for process in started:
        process.kill()
        process.wait()


def test_a_load_removes_what_a_killed_load_left_and_nothing_in_use(
    moodbot_copy: Callable[[str], Path],
    temp_dir: Path,
    loading: Callable[[], tuple[subprocess.Popen[str], Path]],
) -> None:
    """Before, each process killed while it loaded a model left its extraction directory
    (the whole unpacked model) in /tmp for good."""
    archive = moodbot_copy("extraction")
    killed, left = loading()
    killed.kill()
    killed.wait()
    _, in_use = loading()
    assert left.name.startswith("botserver-model-")

    assert load_model_file(archive).domain.intents
    assert not left.exists()
    assert in_use.is_dir()
    assert sorted(p.name for p in temp_dir.iterdir()) == [in_use.name]


@pytest.mark.skipif(
    os.geteuid() != 0, reason="needs root: only root can make (and remove) another user's folder"
)
def test_a_load_leaves_another_users_folder_alone(
    moodbot_copy: Callable[[str], Path], temp_dir: Path
) -> None:
    """A server run as root (a container, a service) shares /tmp with other users: before,
    its loads removed any user's `botserver-model-*` folder older than a minute that no
    process locked, whatever it held."""
    archive = moodbot_copy("extraction-other-user")
    theirs = temp_dir / "botserver-model-k3j4h5g6"
    theirs.mkdir(mode=0o700)
    (theirs / "notes.txt").write_text("theirs")
    for path in (theirs / "notes.txt", theirs):
        os.chown(path, ANOTHER_USER, ANOTHER_USER)
    past = time.time() - STALE_AFTER_SECONDS - 1
    os.utime(theirs, (past, past))

    assert load_model_file(archive).domain.intents
    assert (theirs / "notes.txt").read_text() == "theirs"
