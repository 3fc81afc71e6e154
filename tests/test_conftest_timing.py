"""Tests marked `timing` (tests/conftest.py) run again when an assertion fails: a burst of
load on the host passes, a hold there at every run still fails; nothing else runs again, nor
an assertion inside `checked_once` (a check of what the code does)."""

from __future__ import annotations

import ast
import io
import os
import re
import subprocess
import sys
import tokenize
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tests.conftest import TIMING_RERUNS

ROOT = Path(__file__).resolve().parent.parent

TESTS = '''
from pathlib import Path

import pytest

from tests.conftest import checked_once

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


@pytest.fixture
def started_slowly_once() -> None:
    assert run("fixture_slow_once") > 1


@pytest.mark.timing
def test_bound_in_a_fixture(started_slowly_once: None) -> None:
    pass


@pytest.mark.timing
def test_slow_always() -> None:
    run("slow_always")
    assert False


@pytest.mark.timing
def test_crashes() -> None:
    run("crashes")
    raise ValueError("not a bound")


@pytest.mark.timing
def test_checked_once() -> None:
    run("checked_once")
    with checked_once():
        assert False, "the turn was not stored"


def test_not_timing() -> None:
    assert run("not_timing") > 1
'''


def test_only_a_timing_test_s_failed_assertion_runs_again(tmp_path: Path) -> None:
    (tmp_path / "conftest.py").write_text(
        "from tests.conftest import pytest_collection_modifyitems  # noqa: F401\n"
    )
    (tmp_path / "test_timings.py").write_text(TESTS)
    # Only the plugin the mark needs: the installed ones (hypothesis, schemathesis...) took
    # 4 s of CPU to import at each start, against 0.7 s without them.
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-p",
            "pytest_rerunfailures",
            "--rootdir",
            str(tmp_path),
            str(tmp_path),
        ],
        cwd=ROOT,
        env={**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    runs = {path.name: len(path.read_text()) for path in (tmp_path / "runs").iterdir()}
    assert runs == {
        "slow_once": 2,  # passed at its second run
        "fixture_slow_once": 2,  # its fixture's bound too
        "slow_always": 1 + TIMING_RERUNS,  # failed at every run: fails
        "crashes": 1,  # not an assertion: fails at once
        "checked_once": 1,  # an assertion that bounds no time: fails at once
        "not_timing": 1,  # not marked
    }, done.stdout
    assert done.returncode == 1
    assert "4 failed, 2 passed" in done.stdout and "rerun" in done.stdout, done.stdout
    assert "CheckFailed: the turn was not stored" in done.stdout, done.stdout


# What bounds a time in a test (tests/loop_lag.py): a loop hold, or a wall-clock bound at the
# host's pace.
_TIME_BOUNDS = {"loop_hold", "paced", "host_slowness", "host_crowding"}
# A bare wall-clock bound: `assert <a time> < 5` (or <=), the time read off a clock (the
# event loop's `.time()` too) or named in seconds or as what a step `took` (a report's
# "first_200_after_restore_s"), the bound a number: written, or a module's named constant
# and arithmetic on it (`STATEMENT_TIMEOUT / 2`, `TIMEOUT + 4`, `float(DEAD_AFTER)`). A
# bound on a lower-case name (`deadline`, a time measured in the same test) is not seen:
# give it a "not paced" comment, or pace it.
_A_TIME = re.compile(r"monotonic|perf_counter|\.time\(\)|seconds|elapsed|_s\b|\btook\b")


def _a_number(node: ast.AST) -> bool:
    """Whether `node` is a number fixed before the test runs: written, or a named constant."""
    if isinstance(node, ast.Constant):
        return type(node.value) in (int, float)
    if isinstance(node, (ast.Name, ast.Attribute)):
        name = node.id if isinstance(node, ast.Name) else node.attr
        return name.isupper()
    if isinstance(node, ast.BinOp):
        return _a_number(node.left) and _a_number(node.right)
    if isinstance(node, ast.Call) and ast.unparse(node.func) in ("float", "int"):
        return len(node.args) == 1 and _a_number(node.args[0])
    return False


def _a_time(node: ast.AST) -> bool:
    return _A_TIME.search(ast.unparse(node)) is not None


def _bare_bound(node: ast.AST) -> bool:
    """Whether `node` asserts a time below a number, wherever the time sits in the comparison:
    `took < 5`, `5 > took`, `0 < took < 5` (a bound from below alone fails on no load)."""
    if not (isinstance(node, ast.Assert) and isinstance(node.test, ast.Compare)):
        return False
    compare = node.test
    operands = [compare.left, *compare.comparators]
    for op, left, right in zip(compare.ops, operands[:-1], operands[1:], strict=True):
        if isinstance(op, (ast.Lt, ast.LtE)) and _a_time(left) and _a_number(right):
            return True
        if isinstance(op, (ast.Gt, ast.GtE)) and _a_number(left) and _a_time(right):
            return True
    return False


@dataclass
class _Source:
    """A test module or conftest.py as the check reads it: its functions by name, its fixtures
    by the name tests ask for them, the lines of its comments saying a bound is not paced, and
    what each function it has looked at shows by itself (read once, however many tests reach
    it: a conftest.py's fixtures are reached from hundreds)."""

    helpers: dict[str, ast.AST]
    fixtures: dict[str, ast.AST]
    autouse: list[str]
    unpaced: set[int]
    functions: list[ast.FunctionDef | ast.AsyncFunctionDef]
    own: dict[ast.AST, tuple[bool, tuple[str, ...]]] = field(default_factory=dict)


def _read(path: Path) -> tuple[ast.Module, _Source]:
    source = path.read_text(encoding="utf-8")
    tree = ast.parse(source)
    helpers: dict[str, ast.AST] = {}
    fixtures: dict[str, ast.AST] = {}
    autouse = []
    functions = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            functions.append(node)
            helpers[node.name] = node
            for decorator in node.decorator_list:
                text = ast.unparse(decorator)
                called = decorator.func if isinstance(decorator, ast.Call) else decorator
                if not ast.unparse(called).endswith("fixture"):  # not usefixtures
                    continue
                name = node.name
                if isinstance(decorator, ast.Call):
                    for keyword in decorator.keywords:
                        if keyword.arg == "name" and isinstance(keyword.value, ast.Constant):
                            name = str(keyword.value.value)
                fixtures[name] = node
                if "autouse=True" in text:
                    autouse.append(name)
    unpaced = set()
    if "not paced" in source:  # tokenizing every file cost more than parsing it
        unpaced = {
            token.start[0]
            for token in tokenize.generate_tokens(io.StringIO(source).readline)
            if token.type == tokenize.COMMENT and "not paced" in token.string
        }
    return tree, _Source(helpers, fixtures, autouse, unpaced, functions)


def _own(node: ast.AST, source: _Source) -> tuple[bool, tuple[str, ...]]:
    """What `node` shows by itself: whether it holds a comment saying its bound is not paced
    or a bare bound, and the names of the functions it calls."""
    found = source.own.get(node)
    if found is None:
        first, last = node.lineno, node.end_lineno or 0  # type: ignore[attr-defined]
        bounds = any(first <= line <= last for line in source.unpaced)
        calls: dict[str, None] = {}
        for inner in ast.walk(node):
            bounds = bounds or _bare_bound(inner)
            if isinstance(inner, ast.Call):
                if isinstance(inner.func, ast.Name):
                    calls[inner.func.id] = None
                elif isinstance(inner.func, ast.Attribute):
                    calls[inner.func.attr] = None
        found = source.own[node] = (bounds, tuple(calls))
    return found


def _bounds_a_time(node: ast.AST, source: _Source, seen: set[str]) -> bool:
    """Whether `node` bounds a time: calls a bound of tests/loop_lag.py, or a helper of its
    module that does, holds a comment saying its bound is not paced, or a bare bound."""
    bounds, calls = _own(node, source)
    if bounds:
        return True
    for name in calls:
        if name in _TIME_BOUNDS:
            return True
        if name in source.helpers and name not in seen:
            seen.add(name)
            if _bounds_a_time(source.helpers[name], source, seen):
                return True
    return False


def _fixtures_asked(node: ast.AST) -> Iterator[str]:
    """The fixtures a test or fixture asks for: its parameters and its usefixtures marks."""
    assert isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
    for parameter in [*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs]:
        yield parameter.arg
    for decorator in node.decorator_list:
        if isinstance(decorator, ast.Call) and "usefixtures" in ast.unparse(decorator.func):
            for argument in decorator.args:
                if isinstance(argument, ast.Constant) and isinstance(argument.value, str):
                    yield argument.value


def _test_bounds_a_time(test: ast.AST, visible: list[_Source]) -> bool:
    """Whether the test, or a fixture it uses (asked for, or autouse, at any depth), bounds a
    time. `visible`: the test's module, then the conftest.py files from its folder up."""
    if _bounds_a_time(test, visible[0], {test.name}):  # type: ignore[attr-defined]
        return True
    wanted = [*_fixtures_asked(test), *(name for source in visible for name in source.autouse)]
    done: set[str] = set()
    while wanted:
        name = wanted.pop()
        if name in done:
            continue
        done.add(name)
        # The closest definition is the one pytest gives (a module's overrides a conftest's).
        found = next((source for source in visible if name in source.fixtures), None)
        if found is None:
            continue  # pytest's own, or a plugin's
        fixture = found.fixtures[name]
        if _bounds_a_time(fixture, found, {name}):
            return True
        wanted.extend(_fixtures_asked(fixture))
    return False


def misplaced_timing_marks(tests: Path) -> list[str]:
    """Each test under `tests` that bounds a time (itself, or in a fixture it uses) and is not
    marked `timing`, or is marked and bounds none: "path:line name: not marked"."""
    conftests: dict[Path, _Source] = {}
    for path in sorted(tests.rglob("conftest.py")):
        conftests[path.parent] = _read(path)[1]
    wrong = []
    for path in sorted(tests.rglob("test_*.py")):
        tree, source = _read(path)
        folders = [path.parent, *path.parent.parents]
        visible = [source, *(conftests[f] for f in folders if f in conftests)]
        module_marked = any(
            isinstance(node, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == "pytestmark" for t in node.targets)
            and "timing" in ast.unparse(node.value)
            for node in tree.body
        )
        fixtures = set(source.fixtures.values())  # a fixture named `test_*` is no test
        for node in source.functions:
            if node.name.startswith("test_") and node not in fixtures:
                marked = module_marked or any(
                    "mark.timing" in ast.unparse(d) for d in node.decorator_list
                )
                if marked != _test_bounds_a_time(node, visible):
                    where = f"{path.relative_to(tests.parent)}:{node.lineno} {node.name}"
                    wrong.append(f"{where}: {'marked' if marked else 'not marked'}")
    return wrong


def test_every_test_that_bounds_a_time_is_marked_timing_and_only_those() -> None:
    """A test that bounds a time and is not marked fails on a burst of load the marked ones
    ride out; a marked one that bounds none runs a real failure three times. Before, five
    remote-storage timeouts, a multi-worker model reload and a Redis reconnect were not
    marked, and a scan of the tests' source was. A bound in a fixture counts for the tests
    that use it."""
    wrong = misplaced_timing_marks(ROOT / "tests")
    assert not wrong, "\n".join(wrong)


FIXTURE_BOUNDS = {
    "conftest.py": """
import pytest

from tests.loop_lag import paced


@pytest.fixture
def started_in_time() -> None:
    assert 0.1 < paced(5)


@pytest.fixture
def served(started_in_time: None) -> None:
    pass


@pytest.fixture
def plain() -> None:
    pass
""",
    "test_fixtures.py": """
import pytest


@pytest.fixture(name="bounded_here")
def _bounded_here() -> None:
    assert 0.1 < host_crowding()


def test_asks_for_a_bounding_fixture(started_in_time: None) -> None:
    pass


def test_asks_for_one_that_asks_for_one(served: None) -> None:
    pass


@pytest.mark.usefixtures("bounded_here")
def test_uses_a_bounding_fixture_of_its_module() -> None:
    pass


def test_asks_for_a_plain_fixture(plain: None) -> None:
    pass


@pytest.mark.timing
def test_marked_for_its_fixture(served: None) -> None:
    pass


@pytest.fixture
def test_clock() -> float:
    assert 0.1 < loop_hold()
    return 0.0


@pytest.mark.timing
def test_marked_for_a_fixture_named_like_a_test(test_clock: float) -> None:
    pass
""",
}


def test_a_time_bounded_in_a_fixture_asks_for_the_mark_too(tmp_path: Path) -> None:
    """A bound in a fixture a test uses (at any depth; a conftest.py's, or its module's) fails
    that test on a burst of load as surely as one in its body: the test is marked. A fixture
    named `test_*` is no test (pytest does not collect it): before, the check reported it."""
    tests = tmp_path / "tests"
    tests.mkdir()
    for name, text in FIXTURE_BOUNDS.items():
        (tests / name).write_text(text)
    wrong = misplaced_timing_marks(tests)
    assert [line.split(" ", 1)[1] for line in wrong] == [
        "test_asks_for_a_bounding_fixture: not marked",
        "test_asks_for_one_that_asks_for_one: not marked",
        "test_uses_a_bounding_fixture_of_its_module: not marked",
    ], wrong


BARE_BOUNDS = """
import asyncio
import time


def test_a_report_s_time(report: dict) -> None:
    assert report["outage"]["first_200_after_restore_s"] < 5


def test_a_clock(started: float) -> None:
    assert time.monotonic() - started <= 2.5


def test_a_named_timeout(started: float) -> None:
    took = time.monotonic() - started
    assert took < STATEMENT_TIMEOUT / 2


def test_a_timeout_and_slack(started: float) -> None:
    assert time.perf_counter() - started < float(TIMEOUT) + 4


def test_a_count_is_no_time(report: dict) -> None:
    assert len(report["errors"]) < 5
    assert report["seconds_waited"] == 0
    assert len(report["lines"]) <= LINES_PER_WINDOW + 1


def test_a_clock_between_two_bounds(started: float) -> None:
    # not paced: a sample the timing-mark check reads, never run
    assert 0 < time.monotonic() - started < 10


def test_a_clock_on_the_right(started: float) -> None:
    assert 10 >= time.monotonic() - started


async def test_the_event_loop_s_clock(began: float) -> None:
    assert asyncio.get_running_loop().time() - began < 6.5


def test_a_lower_bound_is_no_limit(started: float) -> None:
    assert 0.5 < time.monotonic() - started
    assert time.monotonic() - started > 0.5


def test_a_deadline_is_a_wait_not_a_bound(deadline: float) -> None:
    assert time.monotonic() < deadline


def test_a_bound_its_comment_says_is_not_paced(deadline: float) -> None:
    # not paced: the deadline is the bound
    assert time.monotonic() < deadline
"""


def test_a_bare_wall_clock_bound_asks_for_the_mark(tmp_path: Path) -> None:
    """A time bounded by a bare number fails on a burst of load as any other: before, the
    check saw only the bounds of tests/loop_lag.py and "not paced" comments, and four such
    bounds in tests/scale/test_outages_under_load.py were neither paced nor marked. Nor did it
    see a bound named (`took < STATEMENT_TIMEOUT / 2`): seven such tests were not marked. A
    bound on a time measured in the test counts once a comment says it is not paced. Nor did
    it see a chained bound (`0 < took < 10`) or the clock on the right (`10 > took`), nor the
    event loop's clock (`loop.time() - began < 6.5`, a stop's bound in the in-doubt tests)."""
    tests = tmp_path / "tests"
    tests.mkdir()
    (tests / "test_bare.py").write_text(BARE_BOUNDS)
    wrong = misplaced_timing_marks(tests)
    assert [line.split(" ", 1)[1] for line in wrong] == [
        "test_a_report_s_time: not marked",
        "test_a_clock: not marked",
        "test_a_named_timeout: not marked",
        "test_a_timeout_and_slack: not marked",
        "test_a_clock_between_two_bounds: not marked",
        "test_a_clock_on_the_right: not marked",
        "test_the_event_loop_s_clock: not marked",
        "test_a_bound_its_comment_says_is_not_paced: not marked",
    ], wrong
