"""Tests marked `timing` (tests/conftest.py) run again when an assertion fails: a burst of
load on the host passes, a hold there at every run still fails; nothing else runs again."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import TIMING_RERUNS

ROOT = Path(__file__).resolve().parent.parent

TESTS = '''
from pathlib import Path

import pytest

RUNS = Path(__file__).parent / "runs"


def run(name: str) -> int:
    """How many times the test `name` has run, this run included."""
    RUNS.mkdir(exist_ok=True)
    with (RUNS / name).open("a") as runs:
        runs.write("x")
    return len((RUNS / name).read_text())


@pytest.mark.timing
def test_slow_once() -> None:
    assert run("slow_once") > 1


@pytest.mark.timing
def test_slow_always() -> None:
    run("slow_always")
    assert False


@pytest.mark.timing
def test_crashes() -> None:
    run("crashes")
    raise ValueError("not a bound")


def test_not_timing() -> None:
    assert run("not_timing") > 1
'''


def test_only_a_timing_test_s_failed_assertion_runs_again(tmp_path: Path) -> None:
    (tmp_path / "conftest.py").write_text(
        "from tests.conftest import pytest_collection_modifyitems  # noqa: F401\n"
    )
    (tmp_path / "test_timings.py").write_text(TESTS)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-p",
            "no:xdist",
            "--rootdir",
            str(tmp_path),
            str(tmp_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    runs = {path.name: len(path.read_text()) for path in (tmp_path / "runs").iterdir()}
    assert runs == {
        "slow_once": 2,  # passed at its second run
        "slow_always": 1 + TIMING_RERUNS,  # failed at every run: fails
        "crashes": 1,  # not an assertion: fails at once
        "not_timing": 1,  # not marked
    }, done.stdout
    assert done.returncode == 1
    assert "3 failed, 1 passed" in done.stdout and "rerun" in done.stdout, done.stdout
