"""The compiled code made once before pytest-xdist's workers start (tests/compiled_code.py):
a worker started after it finds the project's modules, its rewritten test modules and the
libraries' code already there, and compiles none of them itself."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace

import _pytest.assertion.rewrite
import pytest
from _pytest.assertion.rewrite import PYC_TAIL

import tests.conftest
from tests.compiled_code import TAG, cache_file, fill, fill_share

ROOT = Path(__file__).resolve().parents[1]


def _project(root: Path) -> Path:
    (root / "pkg").mkdir(parents=True)
    (root / "pkg" / "__init__.py").write_text("")
    (root / "pkg" / "shapes.py").write_text("def area(w, h):\n    return w * h\n")
    (root / "pkg" / "unused.py").write_text("NOTHING_IMPORTS_THIS = True\n")
    (root / "test_shapes.py").write_text(
        "from pkg.shapes import area\n\n\ndef test_area():\n    assert area(2, 3) == 6\n"
    )
    return root


def _cached(cache: Path) -> dict[Path, int]:
    return {p: p.lstat().st_mtime_ns for p in cache.rglob("*") if not p.is_dir()}


def test_workers_started_after_the_fill_compile_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hook in tests/conftest.py, run by pytest-xdist in a project of a few files: the
    project, its rewritten test module and the libraries were made before the worker started
    (a module added since, which nothing imports, was compiled all the same), and the worker
    wrote none of them again."""
    root = _project(tmp_path / "project")
    cache = tmp_path / f"botserver-tests-pycache-{os.getuid()}"
    monkeypatch.setenv("PYTHONPYCACHEPREFIX", str(cache))
    monkeypatch.delenv("PYTHONDONTWRITEBYTECODE", raising=False)
    fill(root, ["test_*.py"], shares=2)
    json_code = Path(cache_file(str(Path(os.__file__).parent / "json" / "__init__.py"), str(cache)))
    assert json_code.is_symlink()  # the library's own compiled code, not compiled again

    (root / "conftest.py").write_text("from tests.conftest import pytest_xdist_setupnodes\n")
    (root / "pkg" / "later.py").write_text("ADDED_AFTER_THE_FIRST_FILL = True\n")
    made = _cached(cache)
    environ = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "TMPDIR": str(tmp_path)}
    environ.pop("PYTHONPYCACHEPREFIX")
    # xdist alone of the installed plugins: each other one cost the run and its worker
    # their imports (5.5 s of CPU with all of them, 1.1 s without), and no assert below
    # reads their code.
    plugins = {"PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1", "PYTHONPATH": str(ROOT)}
    test = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "xdist.plugin"]
        + ["-n", "1"],
        cwd=root,
        env={**environ, **plugins},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert test.returncode == 0, test.stdout + test.stderr
    assert Path(cache_file(str(root / "pkg" / "later.py"), str(cache))).is_file()
    written = {p for p, mtime in _cached(cache).items() if made.get(p) != mtime}
    project = cache / str(root).lstrip(os.sep)
    assert sorted(p.name for p in written if p.is_relative_to(project)) == [
        f"conftest{PYC_TAIL}",  # new since the first fill: the hook made them
        f"later.{TAG}.pyc",
    ]
    assert not {p for p in written if "json" in p.parts}


def test_a_test_module_whose_rewrite_warns_is_left_to_the_worker(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """pytest warns of an assert that is always true while it rewrites the module: the worker
    shows that warning in the run's report; made by the fill, it was stray output before the
    workers started, and the worker, finding the module rewritten, warned of nothing."""
    root = _project(tmp_path / "project")
    (root / "test_always.py").write_text('def test_it():\n    assert (1 == 2, "why")\n')
    with warnings.catch_warnings(record=True) as warned:
        warnings.simplefilter("always")
        fill_share(None, root, ["test_*.py"], [], shares=1, share=0)
    assert not warned
    assert capfd.readouterr() == ("", "")
    assert not Path(cache_file(str(root / "test_always.py"), None, PYC_TAIL)).exists()
    assert Path(cache_file(str(root / "test_shapes.py"), None, PYC_TAIL)).is_file()


@pytest.mark.parametrize("gone", ["_rewrite_test", "_write_pyc", "PYC_TAIL"])
def test_pytest_private_functions_gone_leave_the_rewrite_to_the_workers(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, gone: str
) -> None:
    """The fill uses pytest's private functions: a pytest without them leaves the test
    modules to the workers, which rewrite them as before, with no error and no output."""
    root = _project(tmp_path / "project")
    monkeypatch.delattr(_pytest.assertion.rewrite, gone)
    fill_share(None, root, ["test_*.py"], [], shares=1, share=0)
    assert capfd.readouterr() == ("", "")
    assert not list(root.rglob(f"*{PYC_TAIL}"))


@pytest.mark.parametrize(
    ("args", "filled"),
    [
        (["tests/test_compiled_code.py::test_it"], False),
        (["tests/test_compiled_code.py", "tests/conftest.py"], False),
        (["tests/test_compiled_code.py", "tests/conftest.py", "tests/loop_lag.py"], True),
        (["tests"], True),
        (["tests/test_compiled_code.py", "tests/trackers"], True),
    ],
    ids=["one test", "two files", "three files", "the suite", "a file and a folder"],
)
def test_the_project_is_compiled_when_the_workers_would_compile_more(
    args: list[str], filled: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On two workers, a run of a file or two leaves the project's compiling to its workers
    (they compile only what those files import; the fill compiles the whole tree): before,
    such a run on a cold cache spent more CPU on the fill than it saved."""
    fills: list[bool] = []

    def fill(*_: object, project: bool = True) -> None:
        fills.append(project)

    monkeypatch.setattr(tests.conftest, "fill", fill)
    monkeypatch.delenv("PYTHONDONTWRITEBYTECODE", raising=False)
    options = {"assertmode": "rewrite"}
    ini = {"enable_assertion_pass_hook": False, "python_files": ["test_*.py"]}
    config = SimpleNamespace(
        args=args,
        invocation_params=SimpleNamespace(dir=ROOT),
        rootpath=ROOT,
        getoption=options.__getitem__,
        getini=ini.__getitem__,
    )
    tests.conftest.pytest_xdist_setupnodes(config, [object(), object()])  # type: ignore[arg-type]
    assert fills == [filled]  # the libraries are linked either way
