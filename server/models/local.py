"""Resolving `-m PATH` to one archive on the local disk."""

from __future__ import annotations

import stat
from pathlib import Path

from server.errors import ModelNotFound
from server.models.metadata import ARCHIVE_SUFFIX


def resolve_local_model(path: Path) -> Path:
    """A `.tar.gz` file as given, or the newest archive (by mtime) in a directory."""
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except (OSError, ValueError) as exc:  # missing, a name too long, a NUL byte...
        raise ModelNotFound(
            f"No model found at '{path}' ({getattr(exc, 'strerror', None) or exc}).",
            "Train one with `botserver train` or pass an existing file or directory with -m.",
        ) from None
    if stat.S_ISREG(mode):
        if not path.name.endswith(ARCHIVE_SUFFIX):
            raise ModelNotFound(
                f"'{path}' is not a model archive: model files end in {ARCHIVE_SUFFIX}"
            )
        return path
    if stat.S_ISDIR(mode):
        archives = [p for p in path.iterdir() if p.name.endswith(ARCHIVE_SUFFIX) and p.is_file()]
        if not archives:
            raise ModelNotFound(
                f"No model archive ({ARCHIVE_SUFFIX}) in '{path}'.",
                "Train one with `botserver train` or pass a file with -m.",
            )
        return max(archives, key=lambda p: (p.stat().st_mtime, p.name))
    raise ModelNotFound(f"'{path}' is neither a model archive nor a directory of them")
