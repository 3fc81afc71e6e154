"""The fingerprint of training inputs, and finding an archive already trained from them.

`botserver train` skips training when an archive in the output directory carries the same
fingerprint (unless `--force`), and retrains, saying so, one made from the same inputs in
another training format (see `server.models.metadata.TRAINING_FORMAT`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from server.errors import ModelError
from server.models.archive import ARCHIVE_SUFFIX, read_metadata
from server.models.metadata import (
    FORMAT_FINGERPRINTED_SINCE,
    TRAINING_FINGERPRINT_KEY,
    TRAINING_FORMAT,
    TRAINING_FORMAT_KEY,
    training_format_of,
)

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
    canonical = _canonical_json(config).encode()
    digest.update(len(canonical).to_bytes(8, "big"))
    digest.update(canonical)
    return digest.hexdigest()


def _canonical_json(value: Any) -> str:
    """`value` as JSON with sorted keys; a mapping whose keys YAML read as several types
    (`1:` a number beside `a:` text, in a custom payload), which no sort orders, with its
    keys as JSON writes them (text), as the model's domain and metadata hold them."""
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    except TypeError:
        return json.dumps(_text_keys(value), sort_keys=True, separators=(",", ":"), default=str)


def _text_keys(value: Any) -> Any:
    if isinstance(value, dict):
        return {_text_key(k): _text_keys(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_text_keys(v) for v in value]
    return value


def _text_key(key: Any) -> str:
    return key if isinstance(key, str) else json.dumps(key, default=str)


def with_training_format(config: dict[str, Any], training_format: int) -> dict[str, Any]:
    """`config` as the fingerprint of an archive of this training format covers it: with the
    format, from the format that put it there on."""
    if training_format < FORMAT_FINGERPRINTED_SINCE:
        return config
    return {**config, TRAINING_FORMAT_KEY: training_format}


def find_archive_with_fingerprint(out_dir: Path, fingerprint: str) -> Path | None:
    """The newest archive in out_dir whose metadata holds this training fingerprint."""
    for archive, metadata in _archives_newest_first(out_dir):
        if metadata.get(TRAINING_FINGERPRINT_KEY) == fingerprint:
            return archive
    return None


def find_other_format_archive(
    out_dir: Path, fingerprint_in: Callable[[int], str]
) -> tuple[Path, int] | None:
    """The newest archive in out_dir, and its training format, made from the inputs that
    `fingerprint_in(format)` fingerprints, in a training format other than today's."""
    seen: dict[int, str] = {}
    for archive, metadata in _archives_newest_first(out_dir):
        made_in = training_format_of(metadata)
        if made_in == TRAINING_FORMAT:
            continue
        if made_in not in seen:
            seen[made_in] = fingerprint_in(made_in)
        if metadata.get(TRAINING_FINGERPRINT_KEY) == seen[made_in]:
            return archive, made_in
    return None


def _archives_newest_first(out_dir: Path) -> Iterator[tuple[Path, dict[str, Any]]]:
    """The archives in out_dir with their metadata, newest first; unreadable ones skipped."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        return
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
        yield archive, metadata
