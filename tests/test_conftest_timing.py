"""Tests marked `timing` (tests/conftest.py) run again when an assertion fails: a burst of
load on the host passes, a hold there at every run still fails; nothing else runs again."""

from __future__ import annotations

import ast
import io
import subprocess
import sys
import tokenize
from collections.abc import Iterator
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


# What bounds a time in a test (tests/loop_lag.py): a loop hold, or a wall-clock bound at the
# host's pace.
_TIME_BOUNDS = {"loop_hold", "paced", "host_slowness", "host_crowding"}


def _calls(node: ast.AST) -> Iterator[str]:
    for call in ast.walk(node):
        if isinstance(call, ast.Call):
            function = call.func
            if isinstance(function, ast.Name):
                yield function.id
            elif isinstance(function, ast.Attribute):
                yield function.attr


def _bounds_a_time(
    node: ast.AST, unpaced: set[int], helpers: dict[str, ast.AST], seen: set[str]
) -> bool:
    """Whether `node` bounds a time: calls a bound of tests/loop_lag.py, or a helper of its
    module that does, or holds a comment saying its bound is not paced (lines `unpaced`)."""
    if any(node.lineno <= line <= (node.end_lineno or 0) for line in unpaced):  # type: ignore[attr-defined]
        return True
    for name in _calls(node):
        if name in _TIME_BOUNDS:
            return True
        if name in helpers and name not in seen:
            seen.add(name)
            if _bounds_a_time(helpers[name], unpaced, helpers, seen):
                return True
    return False


def test_every_test_that_bounds_a_time_is_marked_timing_and_only_those() -> None:
    """A test that bounds a time and is not marked fails on a burst of load the marked ones
    ride out; a marked one that bounds none runs a real failure three times. Before, five
    remote-storage timeouts, a multi-worker model reload and a Redis reconnect were not
    marked, and a scan of the tests' source was."""
    wrong = []
    for path in sorted((ROOT / "tests").rglob("test_*.py")):
        source = path.read_text(encoding="utf-8")
        tree = ast.parse(source)
        unpaced = {
            token.start[0]
            for token in tokenize.generate_tokens(io.StringIO(source).readline)
            if token.type == tokenize.COMMENT and "not paced" in token.string
        }
        helpers: dict[str, ast.AST] = {
            node.name: node
            for node in ast.walk(tree)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        }
        module_marked = any(
            isinstance(node, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == "pytestmark" for t in node.targets)
            and "timing" in ast.unparse(node.value)
            for node in tree.body
        )
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith(
                "test_"
            ):
                marked = module_marked or any(
                    "mark.timing" in ast.unparse(d) for d in node.decorator_list
                )
                if marked != _bounds_a_time(node, unpaced, helpers, {node.name}):
                    where = f"{path.relative_to(ROOT)}:{node.lineno} {node.name}"
                    wrong.append(f"{where}: {'marked' if marked else 'not marked'}")
    assert not wrong, "\n".join(wrong)
