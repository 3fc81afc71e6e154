"""What a costly start showed, made once per test run and shared by pytest-xdist's workers."""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
from collections.abc import Callable
from typing import Any, TypeVar

import pytest

T = TypeVar("T")


def once_per_run(
    tmp_path_factory: pytest.TempPathFactory, name: str, kind: type[T], make: Callable[[], T]
) -> T:
    """`make()`'s result (a dataclass of JSON values), made by the first worker to ask for
    `name`: under pytest-xdist a module's tests may run on several workers (`--dist
    worksteal` hands a module's tail to an idle one), and the others read what it made
    from a file of the run's instead of starting the same servers again."""
    if os.environ.get("PYTEST_XDIST_WORKER") is None:
        return make()
    # The run's own temp folder, shared by its xdist workers (theirs are in it).
    shared = tmp_path_factory.getbasetemp().parent / f"{name}.json"
    with shared.with_suffix(".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when closed, or when its holder dies
        if shared.exists():
            fields: dict[str, Any] = json.loads(shared.read_text())
            return kind(**fields)
        found = make()
        shared.write_text(json.dumps(dataclasses.asdict(found)))  # type: ignore[call-overload]
        return found
