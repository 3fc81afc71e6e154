"""Where a model archive is extracted while it loads, and the sweep of those that a process
killed mid-load (SIGKILL, the OOM killer) left behind, which nothing else would remove."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import stat
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

logger = logging.getLogger(__name__)

PREFIX = "botserver-model-"
# A directory younger than this is never swept: its process may not have locked it yet.
STALE_AFTER_SECONDS = 60.0


@contextlib.contextmanager
def extraction_directory() -> Iterator[Path]:
    """A new directory for one archive, locked (flock) while in use and removed after; the
    ones that killed processes left are removed first."""
    _sweep(Path(tempfile.gettempdir()))
    directory = Path(tempfile.mkdtemp(prefix=PREFIX))
    held = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(held, fcntl.LOCK_EX)
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)
        os.close(held)


def _sweep(temp: Path) -> None:
    """Remove the extraction directories no living process holds the lock of (a process
    holds it until it ends, however it ends), leaving the young ones alone. Only this
    user's: a process run as root would remove other users' too (their botserver's, or
    what they named so), and a link planted in /tmp is never followed."""
    try:
        candidates = list(temp.glob(f"{PREFIX}*"))
    except OSError:
        return
    for directory in candidates:
        try:
            found = directory.lstat()
            if not stat.S_ISDIR(found.st_mode) or found.st_uid != os.geteuid():
                continue
            if time.time() - found.st_mtime < STALE_AFTER_SECONDS:
                continue
            held = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        except OSError:  # gone meanwhile, replaced by a link, unreadable
            continue
        try:
            fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            continue  # in use
        else:
            logger.info("Removing %s, left by a process that stopped while loading", directory)
            shutil.rmtree(directory, ignore_errors=True)
        finally:
            os.close(held)
