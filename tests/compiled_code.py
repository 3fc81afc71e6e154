"""The compiled code pytest-xdist's workers read, made once before they start: each worker
collects the whole suite, and on a cold cache every one of them compiled the project and
rewrote the test modules' asserts at the same time (tests/conftest.py chooses the cache)."""

from __future__ import annotations

import json
import os
import py_compile
import subprocess
import sys
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

TAG = sys.implementation.cache_tag
# A share that takes longer (a host stalled) is left to the workers, which compile what they
# find missing as before.
FILL_TIMEOUT = 120.0


def cache_file(source: str, prefix: str | None, tail: str = f".{TAG}.pyc") -> str:
    """Where a process started with PYTHONPYCACHEPREFIX=`prefix` (None: without one) looks for
    the compiled code of `source`, an absolute path: as `importlib.util.cache_from_source`
    gives it in such a process. `tail` is pytest's for a module whose asserts it rewrites."""
    folder, name = os.path.split(source)
    stem = name[: -len(".py")]
    if prefix is None:
        return os.path.join(folder, "__pycache__", stem + tail)
    return os.path.join(prefix, folder.lstrip(os.sep), stem + tail)


def fill(root: Path, test_patterns: Sequence[str], shares: int, project: bool = True) -> None:
    """Compiles the project's modules under `root` and rewrites its test modules (those
    `test_patterns`, pytest's `python_files`, match, and conftest files) into the cache the
    processes this one starts will read, in `shares` processes at once; so are the pytest
    plugins this process rewrote (a worker loads them too). With a cache folder of their own
    (PYTHONPYCACHEPREFIX), the libraries' compiled code is linked into it: such a process
    reads only that folder, and compiled every library module again without the links. The
    fill's processes start as this one was: they read the libraries' own compiled code.
    `project` False links the libraries only (the workers compile what they import)."""
    environ = {k: v for k, v in os.environ.items() if k != "PYTHONPYCACHEPREFIX"}
    environ["PYTHONDONTWRITEBYTECODE"] = "1"
    # This module runs in them as `tests.compiled_code` whatever `root` is (a test's project).
    here = str(Path(__file__).resolve().parents[1])
    environ["PYTHONPATH"] = os.pathsep.join(filter(None, [here, environ.get("PYTHONPATH")]))
    plan = {
        "prefix": os.environ.get("PYTHONPYCACHEPREFIX"),
        "root": str(root),
        "test_patterns": list(test_patterns),
        "plugins": _rewritten_plugins(root),
        "shares": shares,
        "project": project,
    }
    fills = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.compiled_code", json.dumps({**plan, "share": share})],
            cwd=root,
            env=environ,
        )
        for share in range(shares)
    ]
    for process in fills:
        try:
            process.wait(FILL_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _rewritten_plugins(root: Path) -> list[str]:
    """The files of the modules outside `root` whose asserts pytest rewrote in this process:
    pytest plugins from other packages, all of whose modules it rewrites."""
    try:
        from _pytest.assertion.rewrite import AssertionRewritingHook
    except ImportError:
        return []
    found = []
    for module in list(sys.modules.values()):
        spec = getattr(module, "__spec__", None)
        origin = getattr(spec, "origin", None)
        if isinstance(getattr(spec, "loader", None), AssertionRewritingHook) and origin:
            if not Path(origin).is_relative_to(root):
                found.append(origin)
    return found


def fill_share(
    prefix: str | None,
    root: Path,
    test_patterns: Sequence[str],
    plugins: Sequence[str],
    shares: int,
    share: int,
    project: bool = True,
) -> None:
    """One process's share of `fill`: every `shares`-th file (and library folder), from the
    `share`-th. What is already compiled and up to date is left as it is."""
    try:
        from _pytest.assertion.rewrite import PYC_TAIL
        from _pytest.pathlib import fnmatch_ex
    except ImportError:  # pytest's private names changed: the workers compile the tree, as
        PYC_TAIL = ""  # before (the libraries are linked all the same)

        def fnmatch_ex(pattern: str, path: str | os.PathLike[str]) -> bool:
            return True

    for source in sorted({*_sources(root), *plugins})[share::shares] if project else ():
        path = Path(source)
        rewritten = (
            source in plugins
            or path.name == "conftest.py"
            or any(fnmatch_ex(p, path) for p in test_patterns)
        )
        target = cache_file(source, prefix, PYC_TAIL if rewritten else f".{TAG}.pyc")
        if rewritten:
            if PYC_TAIL and not _up_to_date(source, target):
                _rewrite(path, target)
            continue
        if _up_to_date(source, target):
            continue
        try:
            py_compile.compile(
                source,
                cfile=target,
                doraise=True,
                invalidation_mode=py_compile.PycInvalidationMode.TIMESTAMP,
            )
        except (SyntaxError, py_compile.PyCompileError, OSError, ValueError):
            continue  # the worker that imports it reports it, as without the fill
    if prefix:
        _link_libraries(prefix, root, shares, share)


def _rewrite(path: Path, target: str) -> None:
    """Writes the test module at `path` with its asserts rewritten, as pytest does, to
    `target`; or leaves it to the worker that imports it, quietly: when pytest's private
    functions are not as expected, or the rewrite warns (the worker shows that warning in its
    report, as without the fill, and this process's would be stray output)."""

    class _Quiet:
        def trace(self, message: str) -> None:
            """pytest traces why a file could not be written: the worker will write it."""

    try:
        from _pytest.assertion.rewrite import _rewrite_test, _write_pyc

        with warnings.catch_warnings(record=True) as warned:
            warnings.simplefilter("always")
            stat, code = _rewrite_test(path, None)  # type: ignore[arg-type]
        if not warned:
            os.makedirs(os.path.dirname(target), exist_ok=True)
            _write_pyc(_Quiet(), code, stat, Path(target))  # type: ignore[arg-type]
    except Exception:  # noqa: BLE001 - the worker that imports it reports it, as without the fill
        return


def _sources(root: Path) -> Iterator[str]:
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = [
            d for d in subfolders if not d.startswith(".") and d not in ("__pycache__", "build")
        ]
        yield from (os.path.join(folder, f) for f in files if f.endswith(".py"))


def _up_to_date(source: str, target: str) -> bool:
    """Whether `target` holds code compiled from `source` as it is now (both CPython's and
    pytest's files record the source's mtime and size in bytes 8-16)."""
    try:
        with open(target, "rb") as compiled:
            header = compiled.read(16)
        found = os.stat(source)
    except OSError:
        return False
    return header[8:12] == (int(found.st_mtime) & 0xFFFFFFFF).to_bytes(4, "little") and header[
        12:16
    ] == (found.st_size & 0xFFFFFFFF).to_bytes(4, "little")


def _link_libraries(prefix: str, root: Path, shares: int, share: int) -> None:
    """Links the compiled code of the libraries on sys.path (which pip and Python's installer
    wrote beside them) where a process with the `prefix` looks for it. A link to a file since
    gone, or to out-of-date code, makes that process compile the module and write its own
    file in the link's place, as without a link."""
    seen: set[str] = set()
    folders = [
        p
        for p in sys.path
        if os.path.isabs(p) and os.path.isdir(p) and not Path(p).is_relative_to(root)
    ]
    index = 0
    for top in folders:
        for folder, subfolders, files in os.walk(top):
            if folder in seen:
                subfolders[:] = []
                continue
            seen.add(folder)
            if os.path.basename(folder) != "__pycache__":
                continue
            index += 1
            if index % shares != share:
                continue
            sources = os.path.dirname(folder)
            compiled = [f for f in files if f.endswith(f".{TAG}.pyc")]
            if compiled:
                _link_folder(folder, os.path.join(prefix, sources.lstrip(os.sep)), compiled)


def _link_folder(folder: str, into: str, names: list[str]) -> None:
    try:
        os.makedirs(into, exist_ok=True)
    except OSError:
        return
    for name in names:
        try:
            os.symlink(os.path.join(folder, name), os.path.join(into, name))
        except OSError:
            pass  # there already (a link, or code a process compiled itself)


if __name__ == "__main__":
    _plan = json.loads(sys.argv[1])
    _plan["root"] = Path(_plan["root"])
    fill_share(**_plan)
