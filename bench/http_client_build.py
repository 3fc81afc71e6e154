"""CPU time on the event loop's thread to make an outgoing HTTP client, against a base
tree's `server/http_clients.py` (which loaded the CA bundle for each client), measured
alternately in one run.

    PYTHONPATH=<tree> python bench/http_client_build.py --base <file> [--runs 15]

`--base`: the base's http_clients.py, e.g. `git show main:server/http_clients.py > base.py`.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import statistics
import time
from collections.abc import Callable
from types import ModuleType
from typing import Any


def _load(name: str, path: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _cpu(build: Callable[[], Any]) -> float:
    started = time.thread_time()
    build()
    return time.thread_time() - started


async def _first_client_off_loop(branch: Any) -> float:
    """The loop thread's CPU for a process's first client (the bundle not yet loaded)."""
    branch._trusted.cache_clear()
    started = time.thread_time()
    client = await branch.async_client_off_loop(timeout=60.0)
    spent = time.thread_time() - started
    await client.aclose()
    return spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", required=True, help="the base's server/http_clients.py")
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    base = _load("base_http_clients", args.base)
    from server import http_clients as branch

    base.async_client()  # imports (httpx's, certifi) out of the figures
    branch.async_client()
    figures: dict[str, list[float]] = {"base": [], "cached": [], "first, off loop": []}
    for _ in range(args.runs):
        figures["base"].append(_cpu(lambda: base.async_client(timeout=60.0)))
        figures["cached"].append(_cpu(lambda: branch.async_client(timeout=60.0)))
        figures["first, off loop"].append(asyncio.run(_first_client_off_loop(branch)))
    for name, seconds in figures.items():
        print(f"{name}: median {statistics.median(seconds) * 1000:.2f} ms CPU on the loop thread")


if __name__ == "__main__":
    main()
