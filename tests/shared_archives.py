"""Archives extracted once per test process, for the apps whose start loads the same model:
an extraction (25 files made, checked and removed again) was two thirds of a moodbot load's
CPU, most of it the file system's (sys) time."""

from __future__ import annotations

import contextlib
import copy
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from server.models import holder
from server.models.archive import file_sha256, read_archive
from server.models.safety import ArchiveLimits


class SharedExtractions:
    """`holder.extracted_archive` for the blocks of `sharing()`: an archive of the same bytes,
    checked with the same limits and no signature key, is extracted and checked once (really,
    the first time) and its directory handed to every load after; each load builds its own
    model from it and gets its own copy of the metadata. A read that fails is not kept: the
    next one reads again. Outside `sharing()` every load extracts as the server does."""

    def __init__(self, root: Path) -> None:
        self._root = root
        self._read: dict[tuple[str, ArchiveLimits], tuple[Path, dict[str, Any]]] = {}
        self.extracted = 0  # archives really extracted

    @contextlib.contextmanager
    def sharing(self) -> Iterator[None]:
        real = holder.extracted_archive

        @contextlib.contextmanager
        def shared(
            path: Path, verify_key: bytes | Path | None, limits: ArchiveLimits
        ) -> Iterator[tuple[Path, dict[str, Any]]]:
            if verify_key is not None:  # (a key file may change between loads)
                with real(path, verify_key, limits) as extracted:
                    yield extracted
                return
            key = (file_sha256(path), limits)
            if key not in self._read:
                directory = Path(tempfile.mkdtemp(dir=self._root))
                try:
                    metadata = read_archive(path, directory, None, limits)
                except BaseException:
                    shutil.rmtree(directory, ignore_errors=True)
                    raise
                self._read[key] = (directory, metadata)
                self.extracted += 1
            directory, metadata = self._read[key]
            yield directory, copy.deepcopy(metadata)

        holder.extracted_archive = shared
        try:
            yield
        finally:
            holder.extracted_archive = real
