"""A disk that fills up for real: a tiny tmpfs for temporary files or a database (mounting
needs root; without it the test is skipped)."""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


@contextmanager
def small_disk(tmp_path: Path, size: str = "64k") -> Iterator[Path]:
    """A folder on a tmpfs of `size` of its own, unmounted at the end."""
    mount = tmp_path / "small-disk"
    mount.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs to fill (needs root): {mounted.stderr!r}")
    try:
        yield mount
    finally:
        # Lazily if a file on it is still open (a connection of another thread, which
        # closes with the process): the mount goes with the last descriptor.
        if subprocess.run(["umount", str(mount)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "--lazy", str(mount)], check=False)


def fill(disk: Path) -> Path:
    """A file that takes every free byte of `disk`; removing it makes room again."""
    filler = disk / "filler"
    with filler.open("wb", buffering=0) as out:
        try:
            while out.write(b"\0" * 4096):
                pass
        except OSError:  # no space left on the device
            pass
    return filler


@contextmanager
def temp_files_on_a_small_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, size: str = "64k"
) -> Iterator[Path]:
    with small_disk(tmp_path, size) as mount:
        monkeypatch.setattr(tempfile, "tempdir", str(mount))
        try:
            yield mount
        finally:
            monkeypatch.undo()
