"""Model archives (write, read, validate), model sources, and the live model holder.

The names below are imported when first used: `botserver run`'s check of `-m` (`local`)
needs none of the archive reader, the sources or the holder (0.25 s of CPU before its error).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from server.models.archive import (
        ARCHIVE_SUFFIX,
        FORMAT_VERSION,
        read_archive,
        read_metadata,
        write_archive,
    )
    from server.models.fingerprint import find_archive_with_fingerprint, fingerprint_inputs
    from server.models.holder import LoadedModel, ModelHolder, ModelInfo
    from server.models.local import resolve_local_model
    from server.models.safety import DEFAULT_LIMITS, ArchiveLimits
    from server.models.source import ModelSource

_MODULES = {
    "ARCHIVE_SUFFIX": "archive",
    "FORMAT_VERSION": "archive",
    "read_archive": "archive",
    "read_metadata": "archive",
    "write_archive": "archive",
    "find_archive_with_fingerprint": "fingerprint",
    "fingerprint_inputs": "fingerprint",
    "LoadedModel": "holder",
    "ModelHolder": "holder",
    "ModelInfo": "holder",
    "resolve_local_model": "local",
    "DEFAULT_LIMITS": "safety",
    "ArchiveLimits": "safety",
    "ModelSource": "source",
}

__all__ = [
    "ARCHIVE_SUFFIX",
    "DEFAULT_LIMITS",
    "FORMAT_VERSION",
    "ArchiveLimits",
    "LoadedModel",
    "ModelHolder",
    "ModelInfo",
    "ModelSource",
    "find_archive_with_fingerprint",
    "fingerprint_inputs",
    "read_archive",
    "read_metadata",
    "resolve_local_model",
    "write_archive",
]


def __getattr__(name: str) -> Any:
    """A name of `__all__`, from its module, imported now."""
    module = _MODULES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value
