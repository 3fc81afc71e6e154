"""Fixtures every test package shares: the moodbot model, trained once per test run;
and compiled code kept by the processes the tests start."""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import os
import shutil
import stat
import sys
import tempfile
from collections.abc import Callable, Iterator, MutableMapping
from pathlib import Path

import pytest

from tests.cli.once_per_run import once_per_run
from tests.compiled_code import fill
from tests.logging_state import logging_restored
from tests.shared_data import MOODBOT


def _children_keep_their_bytecode(
    environ: MutableMapping[str, str] = os.environ, temp: str | None = None
) -> None:
    """With PYTHONDONTWRITEBYTECODE set (as on some hosts), every `botserver` or script a test
    starts compiled the project's modules from source: a quarter of a second of CPU a start,
    hundreds of starts a run. The processes the tests start write their compiled code to a
    cache of their own under the temp folder instead (PYTHONPYCACHEPREFIX: never into the
    source tree), and read it at their next start. pytest-xdist's workers are such processes
    too (this file is read before they start): their collection compiles nothing once the
    cache is filled. This process is left as it was started. `environ` and `temp` (the temp
    folder) are for the tests of this function."""
    if not environ.get("PYTHONDONTWRITEBYTECODE"):
        return  # children write and read __pycache__ as usual
    if "PYTHONPYCACHEPREFIX" not in environ:
        cache = Path(temp or tempfile.gettempdir()) / f"botserver-tests-pycache-{os.getuid()}"
        if not _private_folder(cache):
            return  # someone else's, or open to them: children compile from source
        environ["PYTHONPYCACHEPREFIX"] = str(cache)
    del environ["PYTHONDONTWRITEBYTECODE"]


def _private_folder(path: Path) -> bool:
    """Whether `path` is (made, mode 0700, if missing) a folder of this user's that no other
    user can write, not a link: its name under the shared temp folder is known, and
    compiled code another user planted there would run as this one."""
    try:
        path.mkdir(mode=0o700, exist_ok=True)
        found = path.lstat()
    except OSError:
        return False
    return (
        stat.S_ISDIR(found.st_mode)
        and found.st_uid == os.getuid()
        and not found.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    )


_children_keep_their_bytecode()


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_setupnodes(config: pytest.Config, specs: list[object]) -> None:
    """Before pytest-xdist starts its workers, which each collect the whole suite: the
    project's compiled code and rewritten test modules are made once, on as many processes as
    there are cores, rather than by every worker at once (tests/compiled_code.py)."""
    if "PYTHONDONTWRITEBYTECODE" in os.environ or config.getoption("assertmode") != "rewrite":
        return  # the workers write no compiled code, or rewrite no asserts
    if config.getini("enable_assertion_pass_hook"):
        return  # the rewritten code would differ from the fill's
    # A run of few files: its workers compile only what those files import, less than the
    # whole tree; the libraries are linked all the same.
    project = _selects_many_files(config, len(specs))
    shares = min(len(specs), os.cpu_count() or 1)
    fill(config.rootpath, config.getini("python_files"), shares, project=project)


def _selects_many_files(config: pytest.Config, workers: int) -> bool:
    """Whether the run names a folder (the whole suite, a package of tests) or more test
    files than it has workers: compiling the whole tree first pays for itself then. A run
    of one file on two workers and a cold cache used 17.3-17.6 s of user CPU with it,
    12.3-13.5 s with the libraries linked only."""
    named = [arg.split("::", 1)[0] for arg in config.args]
    files = [Path(config.invocation_params.dir, arg) for arg in named]
    return not files or not all(path.is_file() for path in files) or len(files) > workers


# A timing test that fails runs again, up to this many more times, before its failure counts.
TIMING_RERUNS = 2


class CheckFailed(Exception):
    """An assertion of a `timing` test that bounds no time failed (`checked_once`): the test
    fails at once, not run again."""


@contextlib.contextmanager
def checked_once() -> Iterator[None]:
    """The assertions inside fail a `timing` test at once: for its checks of what the code
    does (a turn stored, an exit code), which a burst of load on the host does not explain,
    beside its bound. Run again, a check failing one run in three would pass 26 runs in 27."""
    try:
        yield
    except AssertionError as failed:
        # From None: pytest-rerunfailures would find the AssertionError in the chain.
        raise CheckFailed(str(failed)).with_traceback(failed.__traceback__) from None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test marked `timing` bounds how long our code holds the event loop or takes, read off
    a host whose other jobs (the suite's other workers, the rest of the machine) slow it by
    more than a bound's allowance for a few milliseconds at a time: 5-8 % over a bound, once a
    run, in a different test each time (CI, 2026-12-06). A hold our code causes is there at
    every run, a burst on the host is not: such a test runs again (pytest-rerunfailures) when
    an assertion fails, and fails only if every run does. The reruns are counted in pytest's
    summary line ("1 rerun"). Any other error (a crash, a timeout, an assertion inside
    `checked_once`) fails it at once."""
    for item in items:
        if item.get_closest_marker("timing") is not None:
            item.add_marker(pytest.mark.flaky(reruns=TIMING_RERUNS, only_rerun=[AssertionError]))


def pytest_collection_finish(session: pytest.Session) -> None:
    """What collection made (the modules the suite imports, every test item: millions of
    objects) lives to the end of the run: frozen out of the garbage collector's reach, the full
    collections a test's allocations trigger no longer walk it each time (a worker of
    tests/dialogue spent 3.2 of its 20.9 s of CPU in them before, docs/benchmarks.md)."""
    gc.freeze()


# FastAPI (0.165) keeps, in `lru_cache`s of 4,096 entries, each route's and dependency's
# callable it has classified (async, generator...): a route's closure holds its app's model and
# tracker store, so every app a test built stayed alive for the rest of the worker's run (1.8
# million objects after the three biggest files of tests/api, 100,000-event conversations among
# them), walked by every full garbage collection and by pytest's five at the run's end.
FASTAPI_CLASSIFICATION_CACHES = (
    "_is_gen_callable_cached",
    "_is_async_gen_callable_cached",
    "_is_coroutine_callable_cached",
)


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    """After a test's fixtures are torn down, FastAPI forgets the callables of its apps, so
    the apps are freed (a cleared cache only classifies a callable again at its next call)."""
    models = sys.modules.get("fastapi.dependencies.models")
    for name in FASTAPI_CLASSIFICATION_CACHES:
        cache_clear = getattr(getattr(models, name, None), "cache_clear", None)
        if cache_clear is not None:
            cache_clear()


@pytest.fixture(autouse=True)
def _logging_as_it_was() -> Iterator[None]:
    """Every test leaves the process's logging as it found it: code run in process (the CLI's
    `main`, `configure_logging`, a logging config file) rewires loggers, and a later test in
    the same xdist worker then found caplog empty (seen once in CI: a dry-run's log line)."""
    with logging_restored():
        yield


@dataclasses.dataclass
class TrainedArchive:
    path: str


@pytest.fixture(scope="session")
def moodbot_copy(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """`moodbot_copy("models")`: the moodbot archive `train()` makes, copied alone into a new
    folder. Trained once per test run (1.3 CPU-s on 2 cores, twice that on a slow host) by
    the first xdist worker to ask, instead of once per worker or per fixture; each fixture
    has its own file and folder, so nothing one test writes beside its model reaches
    another's."""

    def make() -> TrainedArchive:
        from server.training.train import train

        out = tmp_path_factory.mktemp("moodbot-training")
        result = train(MOODBOT / "config.yml", MOODBOT / "domain.yml", [MOODBOT / "data"], out)
        return TrainedArchive(str(result.path))

    trained = Path(once_per_run(tmp_path_factory, "moodbot-trained", TrainedArchive, make).path)

    def copy(name: str) -> Path:
        folder = tmp_path_factory.mktemp(name)
        return Path(shutil.copy2(trained, folder / trained.name))

    return copy
