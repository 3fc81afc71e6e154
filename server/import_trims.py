"""Optional modules third-party packages import at their own import that no botserver process
uses: skipped while those packages import, importable again afterwards; and a package's
submodules we do not use, imported at the first use of a name they give it."""

from __future__ import annotations

import builtins
import importlib
import importlib.abc
import importlib.machinery
import sys
from collections.abc import Sequence
from types import ModuleType, SimpleNamespace
from typing import Any

# The module being imported -> the optional modules it tries (ImportError tolerated) and we
# do not use: 0.07 CPU-s of every served bot's start.
SKIPPED: dict[str, tuple[str, ...]] = {
    # httpx's `httpx` command-line client: it imports click, rich and Pygments whenever they
    # are installed (rich is ours, click uvicorn's), for a `main` no process of ours calls
    # (`httpx.main` in a botserver process is httpx's stub that says the CLI is not
    # installed). A release of httpx that imports it lazily makes this a no-op.
    "httpx": ("httpx._main",),
    # Not httpcore's `import trio`: trio is none of our dependencies, so a botserver install
    # saves nothing, and where it is installed httpcore would keep its answer for the whole
    # process: httpx under trio would fail with "Running with trio requires installation of
    # 'httpcore[trio]'".
}

# A package -> the submodules its `__init__` imports names from that no botserver process uses:
# those names are left to the package's `__getattr__`, which imports the submodule at their
# first use (as `from package import name` does).
DEFERRED: dict[str, tuple[str, ...]] = {
    # SQLAlchemy's asyncio extension imports its ORM sessions (all of `sqlalchemy.orm`) for
    # AsyncSession and its scoped variant; our stores and brokers use its engine and
    # connections only: 0.1-0.2 CPU-s of every start whose stores or broker are SQL.
    "sqlalchemy.ext.asyncio": ("session", "scoping"),
}


class _WrappingLoader(importlib.abc.Loader):
    """The loader another finder gave, run with `names` treated in a way of the subclass's;
    the module keeps the original loader as its own."""

    def __init__(self, loader: importlib.abc.Loader, names: Sequence[str]) -> None:
        self.loader = loader
        self.names = names

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self.loader.create_module(spec)

    def run(self, module: ModuleType) -> None:
        if module.__spec__ is not None:
            module.__spec__.loader = self.loader
        module.__loader__ = self.loader
        self.loader.exec_module(module)


class _SkippingLoader(_WrappingLoader):
    """Runs a module with its skipped imports (`names`) failing as if not installed."""

    def exec_module(self, module: ModuleType) -> None:
        blocked = [name for name in self.names if name not in sys.modules]
        for name in blocked:
            sys.modules[name] = None  # type: ignore[assignment]  # `import name` raises ImportError
        try:
            self.run(module)
        finally:
            for name in blocked:
                if sys.modules.get(name, False) is None:
                    del sys.modules[name]


class _DeferringLoader(_WrappingLoader):
    """Runs a package's `__init__` with the names it imports from its deferred submodules
    (`names`) resolved at their first use instead; an `__init__` that uses those names itself
    (or that defines its own `__getattr__`) is run again as it is, with nothing deferred."""

    def exec_module(self, module: ModuleType) -> None:
        deferred = self.names
        namespace = module.__dict__
        placeholder = object()
        lazy: dict[str, str] = {}  # name -> the submodule it comes from
        running = True  # functions the `__init__` defines keep its builtins: import as usual

        def deferring_import(
            name: str,
            globals: dict[str, Any] | None = None,
            locals: dict[str, Any] | None = None,
            fromlist: Sequence[str] = (),
            level: int = 0,
        ) -> Any:
            if (
                running
                and level == 1
                and globals is namespace
                and name in deferred
                and fromlist
                and "*" not in fromlist
            ):
                lazy.update((each, name) for each in fromlist)
                return SimpleNamespace(**{each: placeholder for each in fromlist})
            return builtins.__import__(name, globals, locals, fromlist, level)

        namespace["__builtins__"] = {**builtins.__dict__, "__import__": deferring_import}
        try:
            self.run(module)
        except Exception:
            used = True  # (the run as it is below raises it again, if the package's own)
        else:
            used = "__getattr__" in namespace or "__dir__" in namespace
        finally:
            running = False
            namespace["__builtins__"] = builtins.__dict__
        bound = [name for name, value in namespace.items() if value is placeholder]
        for name in bound:
            del namespace[name]
        if used or not set(bound) <= set(lazy):
            # A later version of the package that reads what it imports (an alias, a
            # subclass, a call): the trim must never change what the package gives.
            self.run(module)
            return
        if "__all__" not in namespace:  # what `import *` took before: the public names
            public = [name for name in namespace if not name.startswith("_")]
            namespace["__all__"] = sorted({*public, *lazy, *deferred})

        def resolve(name: str) -> Any:
            """A deferred name, or a deferred submodule (an attribute once imported)."""
            if name not in lazy and name not in deferred:
                raise AttributeError(f"module {module.__name__!r} has no attribute {name!r}")
            submodule = importlib.import_module(f"{module.__name__}.{lazy.get(name, name)}")
            value = submodule if name in deferred else getattr(submodule, name)
            namespace[name] = value
            return value

        namespace["__getattr__"] = resolve
        namespace["__dir__"] = lambda: sorted({*namespace, *lazy, *deferred})


class _SkippingFinder(importlib.abc.MetaPathFinder):
    """Finds the modules of SKIPPED and DEFERRED as the other finders do, with the loaders
    above."""

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        skipped = SKIPPED.get(fullname)
        deferred = DEFERRED.get(fullname)
        if skipped is None and deferred is None:
            return None
        for finder in sys.meta_path:
            find = getattr(finder, "find_spec", None)
            if finder is self or find is None:
                continue
            spec = find(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and skipped is not None:
                    spec.loader = _SkippingLoader(spec.loader, skipped)
                elif spec.loader is not None and deferred is not None:
                    spec.loader = _DeferringLoader(spec.loader, deferred)
                return spec
        return None


def install() -> None:
    """Skips SKIPPED's imports and defers DEFERRED's from now on (once a process, however
    often called)."""
    if not any(isinstance(finder, _SkippingFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _SkippingFinder())
