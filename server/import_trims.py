"""Optional modules third-party packages import at their own import that no botserver process
uses: skipped while those packages import, importable again afterwards."""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
from collections.abc import Sequence
from types import ModuleType

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


class _SkippingLoader(importlib.abc.Loader):
    """Runs a module with its skipped imports failing as if not installed."""

    def __init__(self, loader: importlib.abc.Loader, skipped: Sequence[str]) -> None:
        self.loader = loader
        self.skipped = skipped

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self.loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        blocked = [name for name in self.skipped if name not in sys.modules]
        for name in blocked:
            sys.modules[name] = None  # type: ignore[assignment]  # `import name` raises ImportError
        try:
            if module.__spec__ is not None:
                module.__spec__.loader = self.loader
            module.__loader__ = self.loader
            self.loader.exec_module(module)
        finally:
            for name in blocked:
                if sys.modules.get(name, False) is None:
                    del sys.modules[name]


class _SkippingFinder(importlib.abc.MetaPathFinder):
    """Finds the modules of SKIPPED as the other finders do, with the loader above."""

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        skipped = SKIPPED.get(fullname)
        if skipped is None:
            return None
        for finder in sys.meta_path:
            find = getattr(finder, "find_spec", None)
            if finder is self or find is None:
                continue
            spec = find(fullname, path, target)
            if spec is not None:
                if spec.loader is not None:
                    spec.loader = _SkippingLoader(spec.loader, skipped)
                return spec
        return None


def install() -> None:
    """Skips SKIPPED's imports from now on (once a process, however often called)."""
    if not any(isinstance(finder, _SkippingFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _SkippingFinder())
