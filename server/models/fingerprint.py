"""The fingerprint of training inputs, and finding an archive already trained from them.

`botserver train` skips training when an archive in the output directory carries the same
fingerprint (unless `--force`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from server.errors import ModelError
from server.models.archive import ARCHIVE_SUFFIX, read_metadata
from server.models.metadata import TRAINING_FINGERPRINT_KEY

logger = logging.getLogger(__name__)


def fingerprint_inputs(files: list[Path], config: dict[str, Any]) -> str:
    """sha256 over the files' relative paths and contents, and the canonical JSON of config.

    Paths are taken relative to the files' common directory, so moving a project keeps its
    fingerprint; the order of `files` does not matter.
    """
    paths = [Path(f) for f in files]
    root = Path(os.path.commonpath([p.resolve().parent for p in paths])) if paths else Path()
    digest = hashlib.sha256()
    for path in sorted(paths, key=lambda p: p.resolve().relative_to(root).as_posix()):
        relative = path.resolve().relative_to(root).as_posix().encode()
        content = path.read_bytes()
        # Length-prefix each field so no two different inputs hash the same byte stream.
        for field in (relative, content):
            digest.update(len(field).to_bytes(8, "big"))
            digest.update(field)
    canonical = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str).encode()
    digest.update(len(canonical).to_bytes(8, "big"))
    digest.update(canonical)
    return digest.hexdigest()


def find_archive_with_fingerprint(
    out_dir: Path, fingerprint: str, required: dict[str, Any] | None = None
) -> Path | None:
    """The newest archive in out_dir whose metadata holds this training fingerprint (and the
    `required` values: what a trainer of the same files writes today)."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        return None
    archives = sorted(
        (p for p in out_dir.iterdir() if p.name.endswith(ARCHIVE_SUFFIX) and p.is_file()),
        key=lambda p: p.stat().st_mtime,
        reverse=True,
    )
    for archive in archives:
        try:
            metadata = read_metadata(archive)
        except ModelError as exc:
            logger.debug("Skipping %s while looking for a fingerprint: %s", archive, exc)
            continue
        if metadata.get(TRAINING_FINGERPRINT_KEY) == fingerprint and all(
            metadata.get(key) == value for key, value in (required or {}).items()
        ):
            return archive
    return None
