"""A disk that fills up for real: temporary files go to a tiny tmpfs (mounting needs root;
without it the test is skipped)."""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


@contextmanager
def temp_files_on_a_small_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, size: str = "64k"
) -> Iterator[Path]:
    mount = tmp_path / "small-disk"
    mount.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs to fill (needs root): {mounted.stderr!r}")
    monkeypatch.setattr(tempfile, "tempdir", str(mount))
    try:
        yield mount
    finally:
        monkeypatch.undo()
        subprocess.run(["umount", str(mount)], check=False)
