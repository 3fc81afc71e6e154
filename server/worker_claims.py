"""What the workers of `botserver run --workers N` say once for all: a start-up finding each
would log word for word (a model that cannot load, a broker or lock store out of reach) is
logged by the first worker that claims it; and the whole JSON files they share. Below every
layer: models and brokers use it."""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

# Set for the workers: a directory they share for the whole run (their metrics snapshots, the
# model a PUT /model asked for), removed when the server stops.
WORKERS_DIR_ENV = "BOTSERVER_WORKERS_DIR"


def workers_dir() -> Path | None:
    """The shared directory, in a worker of `--workers N`; None in a server of one process."""
    found = os.environ.get(WORKERS_DIR_ENV)
    return Path(found) if found else None


def first_to_claim(name: str) -> bool:
    """Whether this process is the first to claim `name` (say, a start-up check all workers
    would repeat word for word): always in a server of one process; in a worker of
    `--workers N`, only in the one that claims it first for the run (the directory is the
    run's own: a claim never outlives it)."""
    shared = workers_dir()
    if shared is None:
        return True
    try:
        os.close(os.open(shared / f"{name}.claimed", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    except OSError:  # the directory gone or unwritable: better each worker than none
        return True
    return True


def mark_stopped() -> bool:
    """In a worker of `--workers N`, records that it has closed its channels, event broker
    and stores: the parent says so once, when all have (`stopped_workers`). False where the
    process says it itself: a server of one process, or a worker whose parent is gone (a
    SIGKILL, the OOM killer: nobody would say it)."""
    shared = workers_dir()
    if shared is None:
        return False
    parent = multiprocessing.parent_process()
    if parent is not None and not parent.is_alive():
        return False
    try:
        (shared / f"stopped-{os.getpid()}").touch()
    except OSError:  # the directory gone: the parent counts this worker as not closed
        pass
    return True


def stopped_workers(pids: Iterable[int | None]) -> int | None:
    """How many of these workers recorded `mark_stopped`; None outside `--workers N`."""
    shared = workers_dir()
    if shared is None:
        return None
    return sum(pid is not None and (shared / f"stopped-{pid}").exists() for pid in pids)


def first_to_say(line: str) -> bool:
    """Whether this process should log `line`: not when another worker of the run logged
    the very same text. A different finding (another error) is said as well."""
    return first_to_claim("said-" + hashlib.sha256(line.encode()).hexdigest()[:32])


def write_json(path: Path, value: Any) -> None:
    """Replace `path` with `value` as JSON: readers see the old file or the new one, whole."""
    # One partial file per process: two workers writing at once must not rename each other's.
    partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
    partial.write_text(json.dumps(value))
    os.replace(partial, path)


def read_object(path: Path) -> dict[str, Any] | None:
    """The JSON object in `path`; None when there is none (no file yet, or a file that cannot
    be read or holds something else: logged)."""
    try:
        value = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        logger.warning("Skipping %s, which the workers share: %s", path, exc)
        return None
    return value if isinstance(value, dict) else None
