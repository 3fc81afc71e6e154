"""Model archives (write, read, validate), model sources, and the live model holder."""

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
